#include "process.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

namespace test {

ProcessResult run_command(const std::string& command, int timeout_seconds) {
  std::string full = fmt::format("timeout --kill-after=5 {} {} 2>&1", timeout_seconds, command);
  ProcessResult r;
  std::FILE* p = ::popen(full.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

bool have_program(const std::string& name) {
  return run_command(fmt::format("sh -c 'command -v {} >/dev/null'", name), 10).exit_code == 0;
}

bool have_kvm() { return ::access("/dev/kvm", R_OK | W_OK) == 0; }

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace test
