// RAII userfaultfd: open (syscall, else /dev/userfaultfd), UFFDIO_API
// handshake, range registration. Registration has a raw form for probes.
#pragma once

#include <linux/userfaultfd.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "unique_fd.h"

namespace vmm {

// How a postcopy destination resolves a fault. Minor: every page sits in the
// page cache beforehand; the data is written through a second mapping and
// UFFDIO_CONTINUE maps it. Missing: the page cache starts empty; the first
// touch raises a MISSING fault and UFFDIO_COPY places and maps the data.
enum class UffdMode { Minor, Missing };
const char* uffd_mode_name(UffdMode mode);
// The UFFDIO_REGISTER_MODE_* bit and the ioctl the mode resolves with.
uint64_t uffd_register_mode(UffdMode mode);
uint64_t uffd_resolve_ioctl_bit(UffdMode mode);

class Userfaultfd {
 public:
  // Opens a userfaultfd and asks for `features`; throws vmm::Error naming the
  // features the kernel does not grant.
  explicit Userfaultfd(uint64_t features);

  int fd() const { return fd_.get(); }
  uint64_t features() const { return features_; }
  const std::string& opened_via() const { return opened_via_; }

  // UFFDIO_REGISTER: 0 or -errno; on success *ioctls gets the allowed ioctl mask.
  int try_register(void* addr, uint64_t len, uint64_t mode, uint64_t* ioctls = nullptr) const;
  void unregister(void* addr, uint64_t len) const;

  // Every feature the kernel's UFFDIO_API offers (a handshake asking for none).
  static uint64_t supported_features();

 private:
  UniqueFd fd_;
  uint64_t features_ = 0;
  std::string opened_via_;
};

// {bit, "MINOR_SHMEM"} for every UFFD_FEATURE_* known to this build.
const std::vector<std::pair<uint64_t, const char*>>& uffd_feature_names();

}  // namespace vmm
