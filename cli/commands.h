// The vmm subcommands. Each file adds one subcommand to the CLI11 app and
// binds its options to a plain options struct.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "guest_memory.h"

namespace vmm::cli {

// Process exit status for a failure of the VMM itself (not the guest's code).
inline constexpr int kExitVmmError = 125;

// Thrown by a subcommand callback to end the process with this status
// (e.g. the guest's own exit code) after everything has been cleaned up.
struct ExitCode {
  int code;
};

// --postcopy-push-rate, the same on `run --migrate-to` and on `migrate`.
inline void add_push_rate_option(CLI::App* cmd, double& mib_per_s) {
  cmd->add_option("--postcopy-push-rate", mib_per_s,
                  "Cap, in MiB/s, on postcopy's background push (0: none; requested pages are never capped)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

// --link-timeout and --recovery-timeout, the same on `run`, `migrate` and `receive`.
struct LinkTimeouts {
  double link_s = 5;
  double recovery_s = 300;
  double connect_s = 10;  // the source's alone: --connect-timeout
};
inline void add_link_options(CLI::App* cmd, LinkTimeouts& t) {
  cmd->add_option("--link-timeout", t.link_s,
                  "Seconds of silence (no frame, or sent data unacknowledged) after which a postcopy link counts as "
                  "lost; heartbeats keep an idle link talking")
      ->check(CLI::Range(0.2, 3600.0))
      ->capture_default_str();
  cmd->add_option("--recovery-timeout", t.recovery_s,
                  "Seconds a lost postcopy link may take to come back (the source redials, the destination keeps "
                  "listening) before each side gives up")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
}

// --connect-timeout, the same on `run` and `migrate`.
inline void add_connect_option(CLI::App* cmd, LinkTimeouts& t) {
  cmd->add_option("--connect-timeout", t.connect_s,
                  "Seconds the source keeps trying to connect and complete its handshake (a refused, closed or "
                  "silent connection is tried again, with backoff from 0.1 s to 2 s); a refusal or another key "
                  "ends it at once")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
}

// --psk-file, the same on `run`, `migrate` and `receive`.
inline void add_psk_option(CLI::App* cmd, std::string& path) {
  cmd->add_option("--psk-file", path,
                  "File holding the migration key as hex text (both hosts the same file, e.g. from `openssl rand -hex "
                  "32`): both connections, and every reconnection, run TLS 1.3 with it, and a peer without it is "
                  "refused")
      ->check(CLI::ExistingFile);
}

// --memory, the same on `run` and `receive`: empty (not given) means gmem
// where this KVM offers guest_memfd, shmem where it does not.
void add_memory_option(CLI::App* cmd, std::string& memory, const char* what);
// The backend --memory names; when it was not given, the default, with one
// line saying which and, for shmem, what guest_memfd lacks here.
Backend chosen_backend(const std::string& memory);

void add_run_command(CLI::App& app);
void add_caps_command(CLI::App& app);
void add_conformance_command(CLI::App& app);
void add_receive_command(CLI::App& app);
void add_migrate_command(CLI::App& app);
void add_status_command(CLI::App& app);

}  // namespace vmm::cli
