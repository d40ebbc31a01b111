// vmm caps: print the host's capability matrix (text or --json).
#include <iostream>
#include <memory>

#include "caps.h"
#include "commands.h"

namespace vmm::cli {

namespace {

struct CapsOptions {
  bool json = false;
  std::string check;
};

void run(const CapsOptions& o) {
  if (!o.check.empty()) {
    auto why = backend_unusable(o.check);
    std::cout << o.check << ": " << (why ? "not usable here: " + *why : std::string("usable")) << "\n";
    if (why) throw ExitCode{1};
    return;
  }
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
  cmd->add_option("--check", opts->check,
                  "Only say whether a guest can run here with its RAM on this backend: one line, exit 0 if it can, "
                  "1 with the missing piece if not (scripts choose their backend with it)")
      ->check(CLI::IsMember({"gmem", "shmem", "hugetlb-2m", "hugetlb-1g"}));
  cmd->callback([opts] { run(*opts); });
}

}  // namespace vmm::cli
