// vmm run: boot a guest and run it until it exits; exit with the guest's code.
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "error.h"
#include "hugepages.h"
#include "machine.h"

namespace vmm::cli {

namespace {

struct RunOptions {
  std::string kernel;
  std::string cmdline = "workload=hello";
  std::string memory = "gmem";
  std::string gmem_bind = "fd";
  std::string mem_size;  // empty: 256 MiB rounded up to the backend's page size
  std::string serial_log;
};

constexpr uint64_t kDefaultMemSize = 256ULL << 20;

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

MachineConfig make_config(const RunOptions& o) {
  MachineConfig c;
  c.kernel_path = o.kernel;
  c.cmdline = o.cmdline;
  c.backend = *parse_backend(o.memory);
  c.gmem_bind = o.gmem_bind == "hva" ? GmemBind::Hva : GmemBind::Fd;
  uint64_t page = backend_page_size(c.backend);
  if (o.mem_size.empty()) {
    c.mem_size = (kDefaultMemSize + page - 1) / page * page;
    if (c.mem_size != kDefaultMemSize)
      spdlog::info("memory: --mem-size not given; using {} (the default {} rounded up to one {} page)",
                   format_size(c.mem_size), format_size(kDefaultMemSize), format_size(page));
    return c;
  }
  auto size = parse_size(o.mem_size);
  if (!size) throw Error(fmt::format("--mem-size {}: expected a number with an optional K, M or G suffix", o.mem_size));
  c.mem_size = *size;
  return c;
}

// Serial lines go to stdout or --serial-log, unbuffered per line so that a
// reader (a test, a person) sees progress as it happens.
Serial::LineSink make_sink(const RunOptions& o, std::shared_ptr<std::optional<std::chrono::steady_clock::time_point>>
                                                    first_line) {
  std::FILE* out = stdout;
  if (!o.serial_log.empty()) {
    out = std::fopen(o.serial_log.c_str(), "w");
    if (!out) throw_errno(fmt::format("fopen({})", o.serial_log), "check --serial-log");
  }
  std::shared_ptr<std::FILE> file(out, [](std::FILE* f) {
    if (f != stdout) std::fclose(f);
  });
  return [file, first_line](std::string_view line) {
    if (!*first_line) *first_line = std::chrono::steady_clock::now();
    std::fwrite(line.data(), 1, line.size(), file.get());
    std::fputc('\n', file.get());
    std::fflush(file.get());
  };
}

double ms_since(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

void run(const RunOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  auto first_line = std::make_shared<std::optional<std::chrono::steady_clock::time_point>>();
  MachineConfig config = make_config(o);
  KvmSystem kvm;
  Machine machine(kvm, config, make_sink(o, first_line));
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  VcpuOutcome out = machine.run(&g_stop);
  auto t1 = std::chrono::steady_clock::now();
  if (*first_line) spdlog::info("boot: first serial line {:.2f} ms after start", ms_since(t0, **first_line));
  if (out.reason == StopReason::GuestExit) {
    spdlog::info("guest exited with code {} after {:.0f} ms", out.exit_code, ms_since(t0, t1));
    throw ExitCode{out.exit_code};
  }
  if (out.reason == StopReason::Stopped) {
    spdlog::warn("guest stopped by signal after {:.0f} ms", ms_since(t0, t1));
    throw ExitCode{130};
  }
  throw Error(fmt::format("guest stopped: {}: {}", stop_reason_name(out.reason), out.detail));
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto opts = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Boot a PVH guest ELF and run it until it exits");
  cmd->footer(
      "Serial output (COM1) goes to stdout, logs to stderr. The exit status is the code the guest wrote to the\n"
      "isa-debug-exit port (0x501); 125 means the VMM itself failed (the error line says why).\n"
      "Example: vmm run --kernel build/guest/guest.elf --cmdline \"workload=touch size=64 seconds=2\" --memory shmem");
  cmd->add_option("--kernel", opts->kernel, "Guest ELF64 with a PVH entry note")->required()->check(CLI::ExistingFile);
  cmd->add_option("--cmdline", opts->cmdline, "Guest command line (PVH start info)")->capture_default_str();
  cmd->add_option("--memory", opts->memory, "Guest RAM backend")
      ->check(CLI::IsMember({"gmem", "shmem", "hugetlb-2m", "hugetlb-1g"}))
      ->capture_default_str();
  cmd->add_option("--gmem-bind", opts->gmem_bind,
                  "How guest_memfd is given to KVM: fd = KVM_MEM_GUEST_MEMFD memslot, hva = memslot over its mmap")
      ->check(CLI::IsMember({"fd", "hva"}))
      ->capture_default_str();
  cmd->add_option("--mem-size", opts->mem_size,
                  "Guest RAM size, e.g. 256M or 1G; a multiple of the backend's page size "
                  "(default 256M, rounded up to one page for hugetlb-1g)");
  cmd->add_option("--serial-log", opts->serial_log, "Write the guest's serial output to this file instead of stdout");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace vmm::cli
