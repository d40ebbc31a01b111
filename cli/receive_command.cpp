// vmm receive: be the destination of one migration, then run the guest here
// until it exits; exit with the guest's code.
#include <memory>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "destination.h"
#include "error.h"
#include "guest_memory.h"
#include "serial_sink.h"

namespace vmm::cli {

namespace {

struct ReceiveOptions {
  std::string listen;
  std::string memory;  // empty: gmem where this KVM offers it (chosen_backend)
  std::string gmem_bind = "fd";
  std::string uffd_mode = "minor";
  std::string report;
  std::string serial_log;
  double handshake_timeout = 5;
  double accept_timeout = 0;  // 0: wait for a source for ever
  LinkTimeouts link;
  std::string psk_file;
  std::string max_mem_size;
};

void run(const ReceiveOptions& o) {
  migration::DestinationOptions d;
  d.listen = o.listen;
  d.backend = chosen_backend(o.memory);
  d.gmem_bind = o.gmem_bind == "hva" ? GmemBind::Hva : GmemBind::Fd;
  d.uffd_mode = o.uffd_mode == "missing" ? UffdMode::Missing : UffdMode::Minor;
  d.report_path = o.report;
  d.handshake_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.handshake_timeout * 1000));
  d.accept_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.accept_timeout * 1000));
  d.serial_sink = make_serial_sink(o.serial_log).sink;
  d.link.link_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.link.link_s * 1000));
  d.link.recovery_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.link.recovery_s * 1000));
  if (!o.psk_file.empty()) {
    d.tls = migration::TlsConfig::from_file(o.psk_file);
  } else if (auto host = migration::split_host_port(o.listen).first;
             host != "127.0.0.1" && host != "::1" && host != "localhost") {
    spdlog::warn("receive: listening on {} without --psk-file: anyone who can reach it can start a VM on this host "
                 "and choose what runs in it", o.listen);
  }
  if (!o.max_mem_size.empty()) {
    auto size = parse_size(o.max_mem_size);
    if (!size || *size == 0)
      throw Error(fmt::format("--max-mem-size {}: expected a size such as 8G, 512M", o.max_mem_size));
    d.max_mem_size = *size;
  }
  migration::Destination dest(std::move(d));
  throw ExitCode{dest.run()};
}

}  // namespace

void add_receive_command(CLI::App& app) {
  auto opts = std::make_shared<ReceiveOptions>();
  CLI::App* cmd = app.add_subcommand("receive", "Receive one migrating guest and run it here until it exits");
  cmd->footer(
      "The memory backend is this host's choice, independent of the source's. A postcopy or hybrid migration\n"
      "needs userfaultfd registration on it in the --uffd-mode chosen (see `vmm caps`); a destination that cannot\n"
      "host the request refuses it during the handshake and the source keeps running its guest.\n"
      "--uffd-mode minor pre-populates guest RAM, writes each page through a second mapping and maps it with\n"
      "UFFDIO_CONTINUE; --uffd-mode missing leaves the page cache empty and places each page with UFFDIO_COPY.\n"
      "After the guest started here, a lost link (reset, close, or silence for --link-timeout) pauses the\n"
      "migration: the guest keeps running on the pages it has, this side keeps listening and takes the source's\n"
      "reconnection of the same migration, then the source resends what was lost. Past --recovery-timeout both\n"
      "sides give up and say how many pages never came.\n"
      "Connections that fail their handshake (no key or another key with --psk-file, a malformed or refused\n"
      "Hello, no Hello within --handshake-timeout of connecting) are logged and dropped, and listening goes on.\n"
      "At most 16 are in their handshake at once (one more ends the oldest of the address holding the most),\n"
      "and at most 2 from one address (more are closed as they come).\n"
      "Example: vmm receive --listen 127.0.0.1:4444 --memory hugetlb-1g --report report.json");
  cmd->add_option("--listen", opts->listen, "HOST:PORT to accept the source's two connections on")->required();
  add_memory_option(cmd, opts->memory, "Guest RAM backend on this host");
  cmd->add_option("--gmem-bind", opts->gmem_bind,
                  "guest_memfd memslot binding for precopy (postcopy always binds by hva so faults reach userfaultfd)")
      ->check(CLI::IsMember({"fd", "hva"}))
      ->capture_default_str();
  cmd->add_option("--uffd-mode", opts->uffd_mode,
                  "How postcopy faults are resolved: minor (UFFDIO_CONTINUE) or missing (UFFDIO_COPY)")
      ->check(CLI::IsMember({"minor", "missing"}))
      ->capture_default_str();
  cmd->add_option("--report", opts->report, "Write the per-fault metrics report (JSON) here");
  cmd->add_option("--serial-log", opts->serial_log, "Write the guest's serial output here instead of stdout");
  cmd->add_option("--handshake-timeout", opts->handshake_timeout,
                  "Seconds from a connection's arrival to its Hello (TLS included); a connection that has not "
                  "sent it by then is dropped")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  cmd->add_option("--accept-timeout", opts->accept_timeout,
                  "Seconds to wait for a source to connect and complete its handshake; past it `vmm receive` exits "
                  "125 saying so (0: wait for ever, for a destination that serves)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  add_link_options(cmd, opts->link);
  add_psk_option(cmd, opts->psk_file);
  cmd->add_option("--max-mem-size", opts->max_mem_size,
                  "Largest guest RAM a source may ask for, e.g. 8G (default: what the --memory backend can host when "
                  "the source connects: its free hugepages, or MemAvailable); a larger one is refused in the "
                  "handshake, before anything is allocated");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace vmm::cli
