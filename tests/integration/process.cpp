#include "process.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "gmem_support.h"

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

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) < 0) {
    if (fd >= 0) ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

const std::string& gmem_missing() {
  static const std::string why = vmm::guest_memfd_missing().value_or("");
  return why;
}

std::string on_this_host(std::string args) {
  if (gmem_missing().empty()) return args;
  static bool said = false;
  if (!said) {
    std::printf("[   NOTE   ] guest_memfd is missing here, so sources run on shmem: %s\n", gmem_missing().c_str());
    said = true;
  }
  auto erase_all = [&](const std::string& from, const std::string& to) {
    for (size_t at = args.find(from); at != std::string::npos; at = args.find(from, at + to.size()))
      args.replace(at, from.size(), to);
  };
  erase_all("--memory gmem", "--memory shmem");
  erase_all("--gmem-bind hva", "");
  erase_all("--gmem-bind fd", "");
  return args;
}

std::string source_memory() { return on_this_host("--memory gmem") == "--memory gmem" ? "gmem" : "shmem"; }

}  // namespace test
