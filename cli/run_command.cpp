// vmm run: boot a guest and run it until it exits; exit with the guest's code.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "acpi.h"
#include "api_server.h"
#include "clock.h"
#include "commands.h"
#include "error.h"
#include "hugepages.h"
#include "machine.h"
#include "serial_sink.h"
#include "source.h"
#include "vcpu_thread.h"

namespace vmm::cli {

namespace {

struct RunOptions {
  std::string kernel;
  std::string cmdline = "workload=hello";
  std::string memory;  // empty: gmem where this KVM offers it (chosen_backend)
  std::string gmem_bind = "fd";
  std::string mem_size;  // empty: 256 MiB rounded up to the backend's page size
  std::string serial_log;
  std::string migrate_to;
  double migrate_after = 1.0;
  std::string migrate_after_line;  // the delay counts from the guest's first line containing this
  std::string mode = "hybrid";
  uint32_t precopy_rounds = 0;
  uint64_t converge_kib = 1024;
  double push_rate_mib = 0;
  std::string api_socket;
  LinkTimeouts link;
  std::string psk_file;
  uint32_t vcpus = 1;
};

migration::LinkOptions link_options(double link_s, double recovery_s, double connect_s) {
  auto ms = [](double s) { return std::chrono::milliseconds(static_cast<int64_t>(s * 1000)); };
  return {ms(link_s), ms(recovery_s), ms(connect_s)};
}

constexpr uint64_t kDefaultMemSize = 256ULL << 20;

std::atomic<bool> g_stop{false};
// What this VMM's migration is doing, for {"command": "status"} on the API socket.
migration::MigrationStatus g_status;
// The key of `run --psk-file`, for every migration that names no other.
std::shared_ptr<migration::TlsConfig> g_tls;
// The first SIGINT/SIGTERM stops the guest cleanly; a second one ends the
// process at once, so a VMM stuck in cleanup can always be stopped.
void on_signal(int) {
  if (g_stop.exchange(true)) ::_exit(130);
}

MachineConfig make_config(const RunOptions& o) {
  MachineConfig c;
  c.kernel_path = o.kernel;
  c.cmdline = o.cmdline;
  c.backend = chosen_backend(o.memory);
  c.gmem_bind = o.gmem_bind == "hva" ? GmemBind::Hva : GmemBind::Fd;
  c.vcpus = o.vcpus;
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

uint64_t mib_per_s(double mib) { return static_cast<uint64_t>(mib * (1 << 20)); }

migration::Mode parse_mode(const std::string& m) {
  if (m == "precopy") return migration::Mode::Precopy;
  if (m == "postcopy") return migration::Mode::Postcopy;
  return migration::Mode::Hybrid;
}

const char* result_name(migration::SourceResult r) {
  switch (r) {
    case migration::SourceResult::Completed: return "completed";
    case migration::SourceResult::FailedBeforeSwitchover: return "failed_before_switchover";
    case migration::SourceResult::FailedAfterSwitchover: return "failed_after_switchover";
    case migration::SourceResult::GuestFinished: return "guest_finished";
  }
  return "?";
}

// Migrates; the guest keeps running here unless the report says Completed.
migration::SourceReport migrate(Machine& machine, VcpuThreads& vcpu, const migration::SourceOptions& so) {
  migration::SourceReport r = migration::Source(machine, vcpu, so).run();
  switch (r.result) {
    case migration::SourceResult::Completed:
      spdlog::info("migrate: done in {:.0f} ms: {} precopy rounds ({}), downtime on the source {:.2f} ms; "
                   "postcopy served {} requested and pushed {} pages",
                   r.total_ms, r.precopy_rounds, format_size(r.precopy_chunks * 4096), r.downtime_source_ms,
                   r.postcopy.pages_urgent, r.postcopy.pages_pushed);
      break;
    case migration::SourceResult::GuestFinished:
      spdlog::warn("migrate: the guest exited before switchover; nothing migrated");
      break;
    case migration::SourceResult::FailedBeforeSwitchover:
      if (r.resumed_here) {
        spdlog::error("migrate: failed before the destination took the guest over: {}", r.error);
        spdlog::warn("migrate: the guest runs here again");
      } else {
        spdlog::error("migrate: failed before switchover: {}", r.error);
        spdlog::warn("migrate: the guest keeps running here");
      }
      vcpu.resume();
      break;
    case migration::SourceResult::FailedAfterSwitchover:
      spdlog::error("migration failed after the destination took the guest over (it is stopped here): {}", r.error);
      break;
  }
  return r;
}

// One API request: {"command": "migrate", ...}. Returns the reply.
nlohmann::json handle_api(Machine& machine, VcpuThreads& vcpu, const nlohmann::json& body,
                          std::optional<migration::SourceResult>& result) {
  if (body.value("command", "") != "migrate") return {{"ok", false}, {"error", "unknown command (known: migrate)"}};
  std::string mode = body.value("mode", "hybrid");
  if (mode != "precopy" && mode != "postcopy" && mode != "hybrid")
    return {{"ok", false}, {"error", "mode must be precopy, postcopy or hybrid"}};
  double rate = body.value("postcopy_push_rate_mib", 0.0);
  if (!(rate >= 0)) return {{"ok", false}, {"error", "postcopy_push_rate_mib must be 0 or more"}};
  double link_s = body.value("link_timeout_s", 5.0), recovery_s = body.value("recovery_timeout_s", 300.0);
  double connect_s = body.value("connect_timeout_s", 10.0);
  if (!(link_s >= 0.2) || !(recovery_s >= 0) || !(connect_s >= 0))
    return {{"ok", false},
            {"error", "link_timeout_s must be at least 0.2, recovery_timeout_s and connect_timeout_s 0 or more"}};
  migration::SourceOptions so;
  so.to = body.value("to", "");
  so.mode = parse_mode(mode);
  so.precopy_rounds = body.value("precopy_rounds", 0u);
  so.push_rate = mib_per_s(rate);
  so.link = link_options(link_s, recovery_s, connect_s);
  so.status = &g_status;
  so.tls = g_tls;
  try {
    if (auto psk = body.value("psk_file", std::string()); !psk.empty()) so.tls = migration::TlsConfig::from_file(psk);
    migration::check_source_mode(machine, so.mode);
  } catch (const Error& e) {
    return {{"ok", false}, {"error", e.what()}};
  }
  migration::SourceReport r = migrate(machine, vcpu, so);
  result = r.result;
  return {{"ok", r.result == migration::SourceResult::Completed},
          {"result", result_name(r.result)},
          {"error", r.error},
          {"total_ms", r.total_ms},
          {"downtime_source_ms", r.downtime_source_ms},
          {"precopy_rounds", r.precopy_rounds},
          {"pages_urgent", r.postcopy.pages_urgent},
          {"pages_pushed", r.postcopy.pages_pushed},
          {"link_pauses_ms", r.pauses_ms},
          {"pages_resent", r.pages_resent},
          {"resumed_here", r.resumed_here}};
}

// Waits until the guest finishes, `deadline` passes or a signal arrives,
// answering API requests meanwhile. Returns a migration's result if one ran.
std::optional<migration::SourceResult> wait_until(Machine& machine, VcpuThreads& vcpu, ApiServer* api,
                                                  vmm::Clock::time_point deadline) {
  std::optional<migration::SourceResult> result;
  while (!g_stop && !vcpu.finished() && vmm::Clock::now() < deadline) {
    if (auto req = api ? api->poll() : nullptr) {
      nlohmann::json reply;
      try {
        reply = handle_api(machine, vcpu, req->body, result);
      } catch (const nlohmann::json::exception& e) {  // a field of the wrong type: the guest runs on
        reply = {{"ok", false}, {"error", fmt::format("malformed request: {}", e.what())}};
      }
      req->reply.set_value(reply);
      if (result == migration::SourceResult::Completed || result == migration::SourceResult::FailedAfterSwitchover)
        return result;
    }
    // At most 50 ms, and never past the deadline: a migration starts on time.
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - vmm::Clock::now());
    vcpu.wait_finished(std::min(left, std::chrono::milliseconds(50)));
  }
  return result;
}

[[noreturn]] void end_after_migration(migration::SourceResult r) {
  if (r == migration::SourceResult::Completed) throw ExitCode{0};
  throw ExitCode{kExitVmmError};
}

migration::SourceOptions source_options(const RunOptions& o) {
  migration::SourceOptions so;
  so.to = o.migrate_to;
  so.mode = parse_mode(o.mode);
  so.precopy_rounds = o.precopy_rounds;
  so.converge_chunks = o.converge_kib / 4;
  so.push_rate = mib_per_s(o.push_rate_mib);
  so.link = link_options(o.link.link_s, o.link.recovery_s, o.link.connect_s);
  so.status = &g_status;
  so.tls = g_tls;
  return so;
}

bool is_final(std::optional<migration::SourceResult> r) {
  return r == migration::SourceResult::Completed || r == migration::SourceResult::FailedAfterSwitchover;
}

// --migrate-to: waits for the moment to migrate (the delay, from the start or
// from the watched serial line), then migrates, unless the guest ended first.
void migrate_when_due(const RunOptions& o, Machine& machine, VcpuThreads& vcpu, ApiServer* api, const SerialSink& sink,
                      vmm::Clock::time_point t0) {
  auto from = t0;
  if (!o.migrate_after_line.empty()) {
    // Polled every 5 ms; the delay counts from when the line arrived.
    while (!g_stop && !vcpu.finished() && !sink.watched_line()) {
      auto r = wait_until(machine, vcpu, api, vmm::Clock::now() + std::chrono::milliseconds(5));
      if (is_final(r)) end_after_migration(*r);
    }
    if (auto t = sink.watched_line()) from = *t;
    else if (vcpu.finished())
      spdlog::warn("migrate: the guest ended before it printed \"{}\"; no migration", o.migrate_after_line);
  }
  auto r = wait_until(machine, vcpu, api, from + std::chrono::milliseconds(static_cast<int64_t>(o.migrate_after * 1000)));
  if (is_final(r)) end_after_migration(*r);
  if (g_stop || vcpu.finished()) return;
  auto result = migrate(machine, vcpu, source_options(o)).result;
  if (is_final(result)) end_after_migration(result);
}

void run(const RunOptions& o) {
  auto t0 = vmm::Clock::now();
  auto sink = make_serial_sink(o.serial_log, o.migrate_after_line);
  if (!o.psk_file.empty()) g_tls = migration::TlsConfig::from_file(o.psk_file);  // a bad key file fails now
  MachineConfig config = make_config(o);
  KvmSystem kvm;
  Machine machine(kvm, config, sink.sink);
  if (!o.migrate_to.empty()) migration::check_source_mode(machine, parse_mode(o.mode));
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::unique_ptr<ApiServer> api;
  if (!o.api_socket.empty())
    api = std::make_unique<ApiServer>(o.api_socket, [] {
      nlohmann::json j = g_status.to_json();
      j["ok"] = true;
      return j;
    });
  VcpuThreads vcpu(machine);
  if (!o.migrate_to.empty()) migrate_when_due(o, machine, vcpu, api.get(), sink, t0);
  auto r = wait_until(machine, vcpu, api.get(), vmm::Clock::time_point::max());
  if (is_final(r)) end_after_migration(*r);
  if (g_stop && vcpu.pause()) {
    spdlog::warn("guest stopped by signal after {:.0f} ms", vmm::ms_between(t0, vmm::Clock::now()));
    throw ExitCode{130};
  }
  VcpuOutcome out = vcpu.wait();
  auto t1 = vmm::Clock::now();
  if (auto first = sink.first_line()) spdlog::info("boot: first serial line {:.2f} ms after start", vmm::ms_between(t0, *first));
  if (out.reason == StopReason::GuestExit) {
    spdlog::info("guest exited with code {} after {:.0f} ms", out.exit_code, vmm::ms_between(t0, t1));
    throw ExitCode{out.exit_code};
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
  add_memory_option(cmd, opts->memory, "Guest RAM backend");
  cmd->add_option("--gmem-bind", opts->gmem_bind,
                  "How guest_memfd is given to KVM: fd = KVM_MEM_GUEST_MEMFD memslot, hva = memslot over its mmap")
      ->check(CLI::IsMember({"fd", "hva"}))
      ->capture_default_str();
  cmd->add_option("--mem-size", opts->mem_size,
                  "Guest RAM size, e.g. 256M or 1G; a multiple of the backend's page size "
                  "(default 256M, rounded up to one page for hugetlb-1g)");
  cmd->add_option("--vcpus", opts->vcpus,
                  "vCPUs (1 to 8); vCPU 0 boots and starts the others with INIT-SIPI-SIPI, finding them in the ACPI MADT")
      ->check(CLI::Range(1u, kMaxVcpus))
      ->capture_default_str();
  cmd->add_option("--serial-log", opts->serial_log, "Write the guest's serial output to this file instead of stdout");
  cmd->add_option("--migrate-to", opts->migrate_to, "Migrate the guest to `vmm receive` at HOST:PORT");
  cmd->add_option("--migrate-after", opts->migrate_after,
                  "Seconds after boot (or after --migrate-after-line) to start the migration")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  cmd->add_option("--migrate-after-line", opts->migrate_after_line,
                  "Count --migrate-after from the guest's first serial line containing this text, e.g. "
                  "\"touch: filled\": the same point of the guest's work under any VMM, however long it boots");
  cmd->add_option("--mode", opts->mode,
                  "precopy (dirty-log rounds, then stop-and-copy), postcopy (stop, then pages on demand + "
                  "background push) or hybrid (one precopy pass, then postcopy)")
      ->check(CLI::IsMember({"precopy", "postcopy", "hybrid"}))
      ->capture_default_str();
  cmd->add_option("--precopy-rounds", opts->precopy_rounds,
                  "Dirty-log rounds after the first full pass (default: 1 for hybrid, up to 30 for precopy)");
  cmd->add_option("--api-socket", opts->api_socket,
                  "Unix socket on which `vmm migrate` can ask this VMM to migrate its guest");
  cmd->add_option("--precopy-converge", opts->converge_kib,
                  "Precopy stops early once a round leaves less than this many KiB dirty (0: never early)")
      ->capture_default_str();
  add_push_rate_option(cmd, opts->push_rate_mib);
  add_link_options(cmd, opts->link);
  add_connect_option(cmd, opts->link);
  add_psk_option(cmd, opts->psk_file);
  cmd->callback([opts] { run(*opts); });
}

}  // namespace vmm::cli
