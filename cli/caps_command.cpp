// vmm caps: print the host's capability matrix (text or --json).
#include <iostream>
#include <memory>

#include "caps.h"
#include "commands.h"

namespace vmm::cli {

namespace {

struct CapsOptions {
  bool json = false;
};

void run(const CapsOptions& o) {
  nlohmann::ordered_json caps = probe_capabilities();
  if (o.json) std::cout << caps.dump(2) << "\n";
  else std::cout << render_capabilities(caps);
}

}  // namespace

void add_caps_command(CLI::App& app) {
  auto opts = std::make_shared<CapsOptions>();
  CLI::App* cmd = app.add_subcommand("caps", "Probe what this host can do: KVM, guest_memfd, userfaultfd, hugepages");
  cmd->footer("Every entry is probed live (ioctls on a scratch VM and scratch memory); nothing is changed on the host.");
  cmd->add_flag("--json", opts->json, "Print the matrix as JSON");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace vmm::cli
