// Errors of setup, configuration and protocol: the failing call, errno and a
// hint that tells the user what to do about it.
#pragma once

#include <stdexcept>
#include <string>

namespace vmm {

class Error : public std::runtime_error {
 public:
  // A failed system call or ioctl: "KVM_RUN failed: Invalid argument (EINVAL). <hint>"
  Error(std::string call, int err, std::string hint = {});
  // A failure without errno (bad input, bad configuration).
  explicit Error(const std::string& message);

  const std::string& call() const { return call_; }
  int err() const { return err_; }
  const std::string& hint() const { return hint_; }

 private:
  std::string call_;
  int err_ = 0;
  std::string hint_;
};

// Throws Error(call, errno, hint) for the current errno.
[[noreturn]] void throw_errno(std::string call, std::string hint = {});

// "EINVAL", "ENOMEM", ...: the symbolic errno name, which kernel engineers grep for.
std::string errno_name(int err);

// "Invalid argument (EINVAL)"
std::string describe_errno(int err);

}  // namespace vmm
