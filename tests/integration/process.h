// Runs a command for the integration tests and captures what it printed; the
// small helpers every integration test needs.
#pragma once

#include <cstdint>
#include <string>

namespace test {

struct ProcessResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string output;  // stdout and stderr, interleaved
};

// Runs `command` through /bin/sh with a time limit (coreutils timeout).
ProcessResult run_command(const std::string& command, int timeout_seconds = 120);

bool have_program(const std::string& name);

// /dev/kvm can be opened read-write.
bool have_kvm();

// A loopback TCP port the kernel just handed out (0 if it would not).
uint16_t free_port();

// A shell function for test scripts: `wait_for FILE PATTERN` returns 0 once
// FILE holds PATTERN, 1 after 10 s (how a script waits for `vmm receive`'s
// listening line: a probe connection would count as a migration).
inline constexpr const char* kShellWaitFor =
    "wait_for() { for i in $(seq 400); do grep -q \"$2\" $1 2>/dev/null && return 0; sleep 0.025; done; return 1; }\n";

// A file's whole text ("" if it cannot be read).
std::string slurp(const std::string& path);

}  // namespace test
