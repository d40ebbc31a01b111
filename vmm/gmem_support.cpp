#include "gmem_support.h"

#include <cerrno>
#include <cstdlib>
#include <mutex>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "error.h"
#include "kvm.h"
#include "kvm_uapi.h"

namespace vmm {

namespace {

constexpr const char* kHideVar = "VMM_HIDE_GUEST_MEMFD";

GmemHiding read_hiding() {
  const char* v = std::getenv(kHideVar);
  std::string s = v ? v : "";
  if (s.empty() || s == "0") return GmemHiding::None;
  if (s == "1" || s == "all") return GmemHiding::All;
  if (s == "mmap") return GmemHiding::Mmap;
  throw Error(fmt::format("{}={}: expected 1 (or all: no guest_memfd at all), mmap (guest_memfd without "
                          "GUEST_MEMFD_FLAG_MMAP) or 0",
                          kHideVar, s));
}

}  // namespace

GmemHiding gmem_hiding() {
  const GmemHiding hiding = read_hiding();
  static std::once_flag said;
  if (hiding != GmemHiding::None) {
    std::call_once(said, [hiding] {
      spdlog::warn("{}: this VMM answers as a KVM {} would", gmem_hiding_setting(),
                   hiding == GmemHiding::All ? "built without guest_memfd"
                                             : "whose guest_memfd cannot be mapped (before Linux 6.18)");
    });
  }
  return hiding;
}

std::string gmem_hiding_setting() {
  if (read_hiding() == GmemHiding::None) return "";
  return fmt::format("{}={}", kHideVar, std::getenv(kHideVar));
}

int gmem_visible_cap(long cap, int kernel) {
  if (cap != KVM_CAP_GUEST_MEMFD && cap != KVM_CAP_GUEST_MEMFD_FLAGS) return kernel;
  switch (gmem_hiding()) {
    case GmemHiding::None: return kernel;
    case GmemHiding::All: return 0;
    case GmemHiding::Mmap: return cap == KVM_CAP_GUEST_MEMFD ? kernel : 0;
  }
  return kernel;
}

int gmem_hidden_create_error(uint64_t flags) {
  switch (gmem_hiding()) {
    case GmemHiding::None: return 0;
    case GmemHiding::All: return -ENOTTY;  // no such ioctl
    case GmemHiding::Mmap: return (flags & (GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED)) ? -EINVAL : 0;
  }
  return 0;
}

std::optional<std::string> guest_memfd_missing(const Vm& vm) {
  std::string hidden = gmem_hiding_setting();
  std::string by = hidden.empty() ? "" : fmt::format(" [as {} makes it answer]", hidden);
  int cap = vm.check_extension(KVM_CAP_GUEST_MEMFD);
  if (cap <= 0)
    return fmt::format("this KVM has no guest_memfd (KVM_CAP_GUEST_MEMFD = 0: the kernel was built without "
                       "CONFIG_KVM_GUEST_MEMFD){}",
                       by);
  int flags = vm.check_extension(KVM_CAP_GUEST_MEMFD_FLAGS);
  auto lacks = [&](uint64_t flag, const char* name) -> std::optional<std::string> {
    if (static_cast<uint64_t>(flags) & flag) return std::nullopt;
    return fmt::format("this KVM's guest_memfd lacks {} (KVM_CAP_GUEST_MEMFD_FLAGS = {:#x}, needs {:#x}): guest "
                       "RAM in guest_memfd must be mappable and shared, which needs Linux >= 6.18{}",
                       name, flags, flag, by);
  };
  if (auto why = lacks(GUEST_MEMFD_FLAG_MMAP, "GUEST_MEMFD_FLAG_MMAP")) return why;
  if (auto why = lacks(GUEST_MEMFD_FLAG_INIT_SHARED, "GUEST_MEMFD_FLAG_INIT_SHARED")) return why;
  UniqueFd fd;
  if (int rc = vm.try_create_guest_memfd(2 << 20, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, fd); rc < 0)
    return fmt::format("KVM_CREATE_GUEST_MEMFD(MMAP|INIT_SHARED) fails here with {}{}", errno_name(-rc), by);
  return std::nullopt;
}

std::optional<std::string> guest_memfd_missing() {
  std::optional<KvmSystem> kvm;
  std::optional<Vm> vm;
  try {
    kvm.emplace();
    vm.emplace(*kvm);
  } catch (const Error& e) {
    return fmt::format("no usable KVM: {}", e.what());
  }
  return guest_memfd_missing(*vm);
}

}  // namespace vmm
