#include "error.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace vmm {

namespace {

std::string format_call(const std::string& call, int err, const std::string& hint) {
  std::string s = fmt::format("{} failed: {}", call, describe_errno(err));
  if (!hint.empty()) s += ". " + hint;
  return s;
}

}  // namespace

Error::Error(std::string call, int err, std::string hint)
    : std::runtime_error(format_call(call, err, hint)), call_(std::move(call)), err_(err), hint_(std::move(hint)) {}

Error::Error(const std::string& message) : std::runtime_error(message) {}

void throw_errno(std::string call, std::string hint) { throw Error(std::move(call), errno, std::move(hint)); }

std::string errno_name(int err) {
  const char* name = strerrorname_np(err);
  return name ? name : fmt::format("errno {}", err);
}

std::string describe_errno(int err) { return fmt::format("{} ({})", std::strerror(err), errno_name(err)); }

}  // namespace vmm
