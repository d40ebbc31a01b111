// The vmm subcommands. Each file adds one subcommand to the CLI11 app and
// binds its options to a plain options struct.
#pragma once

#include <CLI/CLI.hpp>

namespace vmm::cli {

// Process exit status for a failure of the VMM itself (not the guest's code).
inline constexpr int kExitVmmError = 125;

// Thrown by a subcommand callback to end the process with this status
// (e.g. the guest's own exit code) after everything has been cleaned up.
struct ExitCode {
  int code;
};

void add_run_command(CLI::App& app);
void add_caps_command(CLI::App& app);
void add_conformance_command(CLI::App& app);
void add_receive_command(CLI::App& app);
void add_migrate_command(CLI::App& app);

}  // namespace vmm::cli
