// vmm conformance: does this kernel's guest_memfd behave under userfaultfd
// the way a postcopy destination needs? Exit 0 only if every check is ok.
#include <fstream>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "commands.h"
#include "conformance.h"
#include "error.h"

namespace vmm::cli {

namespace {

struct ConformanceCliOptions {
  bool json = false;
  std::string memory = "gmem";
  std::string out;
  double step_timeout = 10;
};

void run(const ConformanceCliOptions& o) {
  ConformanceOptions c;
  c.shmem_control = o.memory == "shmem";
  c.step_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.step_timeout * 1000));
  nlohmann::ordered_json report = run_conformance(c);
  if (o.json) std::cout << report.dump(2) << "\n";
  else std::cout << render_conformance(report);
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    if (!f) throw_errno(fmt::format("open({})", o.out), "check --out");
    f << report.dump(2) << "\n";
  }
  throw ExitCode{report["passed"].get<bool>() ? 0 : 1};
}

}  // namespace

void add_conformance_command(CLI::App& app) {
  auto opts = std::make_shared<ConformanceCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "conformance", "Check the guest_memfd + userfaultfd behaviours a postcopy destination on guest_memfd needs");
  cmd->footer(
      "Each check runs a real vCPU against an hva memslot over a guest_memfd mapping:\n"
      "  register_guest_memfd                   MINOR and MISSING registration, CONTINUE and COPY offered\n"
      "  minor_fault_on_written_page            page written through a 2nd mapping -> MINOR -> CONTINUE\n"
      "  fallocate_only_page_keeps_guest_writes fallocated page -> MINOR -> CONTINUE; the guest's write survives\n"
      "  minor_only_unpopulated_page_zero_fills MINOR-only: a page not in the page cache raises no event\n"
      "  missing_fault_and_copy                 MISSING|MINOR: unpopulated page -> MISSING -> COPY\n"
      "Results: ok, wrong (the kernel behaves otherwise), unsupported (the kernel lacks the piece named).\n"
      "Exit status 0 when every check is ok, 1 otherwise. tools/kernel-lab runs this inside a lab kernel.");
  cmd->add_flag("--json", opts->json, "Print the report as JSON");
  cmd->add_option("--memory", opts->memory,
                  "gmem checks guest_memfd; shmem runs the same checks on a memfd as a control")
      ->check(CLI::IsMember({"gmem", "shmem"}))
      ->capture_default_str();
  cmd->add_option("--out", opts->out, "Also write the JSON report to this file");
  cmd->add_option("--step-timeout", opts->step_timeout,
                  "Seconds to wait for each fault event or vCPU step (raise it under emulation)")
      ->check(CLI::Range(0.1, 600.0))
      ->capture_default_str();
  cmd->callback([opts] { run(*opts); });
}

}  // namespace vmm::cli
