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

// Why guest RAM cannot live in guest_memfd on this host, as the VMM's own
// probe answers (VMM_HIDE_GUEST_MEMFD included); "" where it can.
const std::string& gmem_missing();

// `vmm run` arguments as this host can take them: where guest_memfd is
// missing, "--memory gmem" becomes "--memory shmem" and "--gmem-bind X" goes,
// and the first such test says so once. A test whose point is guest_memfd
// skips with gmem_missing() instead.
std::string on_this_host(std::string args);

// "gmem" where this host offers guest_memfd, else "shmem" (saying so once).
std::string source_memory();

// A shell line for test scripts that started `vmm receive` as $D and the
// source as $S: waits for the source and prints SRC=code; a source that
// failed leaves the destination nothing to wait for, so it is ended. Then
// waits for the destination and prints DST=code.
inline constexpr const char* kShellReap =
    "wait $S; SRC=$?; echo SRC=$SRC; [ $SRC -eq 0 ] || kill $D 2>/dev/null; wait $D; echo DST=$?\n";

// The bound every test's `vmm receive` puts on the wait for its source.
inline constexpr const char* kAcceptTimeout = "--accept-timeout 60";

// A file's whole text ("" if it cannot be read).
std::string slurp(const std::string& path);

}  // namespace test
