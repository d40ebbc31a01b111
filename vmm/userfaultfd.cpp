#include "userfaultfd.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "error.h"

namespace vmm {

namespace {

// Without UFFD_USER_MODE_ONLY, so that faults taken by KVM on behalf of a
// vCPU (kernel-mode accesses) reach us too. Needs root or
// vm.unprivileged_userfaultfd=1; /dev/userfaultfd is the other way in.
UniqueFd open_uffd(std::string& via) {
  int flags = O_CLOEXEC | O_NONBLOCK;
  UniqueFd fd(static_cast<int>(::syscall(SYS_userfaultfd, flags)));
  if (fd) {
    via = "userfaultfd(2)";
    return fd;
  }
  int syscall_errno = errno;
  UniqueFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
  if (dev) {
    fd.reset(::ioctl(dev.get(), USERFAULTFD_IOC_NEW, flags));
    if (fd) {
      via = "/dev/userfaultfd";
      return fd;
    }
  }
  errno = syscall_errno;
  throw_errno("userfaultfd(O_CLOEXEC|O_NONBLOCK)",
              "run as root, or set vm.unprivileged_userfaultfd=1, or grant access to /dev/userfaultfd");
}

}  // namespace

const char* uffd_mode_name(UffdMode mode) { return mode == UffdMode::Minor ? "minor" : "missing"; }

uint64_t uffd_register_mode(UffdMode mode) {
  return mode == UffdMode::Minor ? UFFDIO_REGISTER_MODE_MINOR : UFFDIO_REGISTER_MODE_MISSING;
}

uint64_t uffd_resolve_ioctl_bit(UffdMode mode) {
  return mode == UffdMode::Minor ? 1ULL << _UFFDIO_CONTINUE : 1ULL << _UFFDIO_COPY;
}

Userfaultfd::Userfaultfd(uint64_t features) {
  fd_ = open_uffd(opened_via_);
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(fd(), UFFDIO_API, &api) < 0) {
    uint64_t offered = supported_features();
    std::string missing;
    for (auto [bit, name] : uffd_feature_names())
      if ((features & bit) && !(offered & bit)) missing += fmt::format(" {}", name);
    throw_errno(fmt::format("UFFDIO_API(features={:#x})", features),
                missing.empty() ? std::string("the kernel refused the handshake")
                                : "this kernel lacks UFFD_FEATURE_" + missing.substr(1));
  }
  features_ = api.features;
}

int Userfaultfd::try_register(void* addr, uint64_t len, uint64_t mode, uint64_t* ioctls) const {
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(addr);
  reg.range.len = len;
  reg.mode = mode;
  if (::ioctl(fd(), UFFDIO_REGISTER, &reg) < 0) return -errno;
  if (ioctls) *ioctls = reg.ioctls;
  return 0;
}

// UFFDIO_UNREGISTER wakes the threads waiting in a MISSING fault on the range,
// but on this host (6.18) not those waiting in a MINOR fault: such a thread
// slept on, its event pending, until a UFFDIO_WAKE (test
// Userfaultfd.UnregisterReleasesAThreadWaitingOnAnUnansweredFault). A
// destination stops its fault resolver before it unregisters, and a vCPU
// that faulted in between hung the guest in 3 of 18 hybrid migrations. So
// every unregister wakes the range after it; a woken thread retries its
// fault, which the kernel now resolves itself.
void Userfaultfd::unregister(void* addr, uint64_t len) const {
  uffdio_range range{reinterpret_cast<uint64_t>(addr), len};
  if (::ioctl(fd(), UFFDIO_UNREGISTER, &range) < 0) throw_errno("UFFDIO_UNREGISTER");
  if (::ioctl(fd(), UFFDIO_WAKE, &range) < 0) throw_errno("UFFDIO_WAKE after UFFDIO_UNREGISTER");
}

uint64_t Userfaultfd::supported_features() {
  std::string via;
  UniqueFd fd = open_uffd(via);
  uffdio_api api{};
  api.api = UFFD_API;
  if (::ioctl(fd.get(), UFFDIO_API, &api) < 0) throw_errno("UFFDIO_API(features=0)");
  return api.features;
}

const std::vector<std::pair<uint64_t, const char*>>& uffd_feature_names() {
  // Bit numbers are the kernel ABI (include/uapi/linux/userfaultfd.h); the
  // newer ones are spelled out because Debian's 6.1 header lacks them.
  static const std::vector<std::pair<uint64_t, const char*>> names = {
      {1ULL << 0, "PAGEFAULT_FLAG_WP"}, {1ULL << 1, "EVENT_FORK"},         {1ULL << 2, "EVENT_REMAP"},
      {1ULL << 3, "EVENT_REMOVE"},      {1ULL << 4, "MISSING_HUGETLBFS"},  {1ULL << 5, "MISSING_SHMEM"},
      {1ULL << 6, "EVENT_UNMAP"},       {1ULL << 7, "SIGBUS"},             {1ULL << 8, "THREAD_ID"},
      {1ULL << 9, "MINOR_HUGETLBFS"},   {1ULL << 10, "MINOR_SHMEM"},       {1ULL << 11, "EXACT_ADDRESS"},
      {1ULL << 12, "WP_HUGETLBFS_SHMEM"}, {1ULL << 13, "WP_UNPOPULATED"},  {1ULL << 14, "POISON"},
      {1ULL << 15, "WP_ASYNC"},         {1ULL << 16, "MOVE"},
  };
  return names;
}

}  // namespace vmm
