#include "kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "error.h"
#include "gmem_support.h"
#include "kvm_uapi.h"

namespace vmm {

namespace {

// The throwing ioctl form: "NAME failed: strerror (ENAME). hint".
long checked_ioctl(int fd, unsigned long request, const void* arg, const char* name, const char* hint = "") {
  long rc;
  do {
    rc = ::ioctl(fd, request, arg);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) throw_errno(name, hint);
  return rc;
}

int raw_ioctl(int fd, unsigned long request, const void* arg) {
  long rc = ::ioctl(fd, request, arg);
  return rc < 0 ? -errno : static_cast<int>(rc);
}

kvm_userspace_memory_region2 region2(uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva,
                                     int gmem_fd, uint64_t gmem_offset) {
  kvm_userspace_memory_region2 r{};
  r.slot = slot;
  r.flags = flags;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = hva;
  r.guest_memfd_offset = gmem_offset;
  r.guest_memfd = static_cast<uint32_t>(gmem_fd);
  return r;
}

constexpr const char* kMemslotHint =
    "check that the size is page aligned and the slot does not overlap another; run `vmm caps` to see what "
    "this kernel supports";

}  // namespace

KvmSystem::KvmSystem() {
  fd_.reset(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!fd_) {
    throw_errno("open(/dev/kvm)",
                "KVM is required: load kvm_intel or kvm_amd, and run as root or as a member of the kvm group");
  }
  api_version_ = static_cast<int>(checked_ioctl(fd(), KVM_GET_API_VERSION, nullptr, "KVM_GET_API_VERSION"));
  if (api_version_ != KVM_API_VERSION) {
    throw Error(fmt::format("KVM API version {} is not the stable API {} this VMM speaks", api_version_,
                            KVM_API_VERSION));
  }
}

int KvmSystem::check_extension(long cap) const {
  long rc = ::ioctl(fd(), KVM_CHECK_EXTENSION, cap);
  return gmem_visible_cap(cap, rc < 0 ? 0 : static_cast<int>(rc));
}

size_t KvmSystem::vcpu_mmap_size() const {
  return static_cast<size_t>(checked_ioctl(fd(), KVM_GET_VCPU_MMAP_SIZE, nullptr, "KVM_GET_VCPU_MMAP_SIZE"));
}

CpuidTable KvmSystem::supported_cpuid() const {
  // KVM answers E2BIG until the buffer is large enough.
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2));
    auto* c = reinterpret_cast<kvm_cpuid2*>(buf.data());
    c->nent = n;
    if (::ioctl(fd(), uapi::kGetSupportedCpuid, c) == 0) {
      CpuidTable t;
      t.entries.assign(c->entries, c->entries + c->nent);
      return t;
    }
    if (errno != E2BIG) throw_errno("KVM_GET_SUPPORTED_CPUID");
  }
  throw Error("KVM_GET_SUPPORTED_CPUID", E2BIG, "more than 4096 CPUID entries");
}

Vm::Vm(const KvmSystem& kvm) : kvm_(&kvm) {
  fd_.reset(static_cast<int>(checked_ioctl(kvm.fd(), KVM_CREATE_VM, nullptr, "KVM_CREATE_VM",
                                           "the host may be out of memory or KVM may be in use by another hypervisor")));
  // Intel VMX needs a TSS area below 4 GiB for real-mode emulation; AMD ignores it.
  // APs start in real mode (INIT-SIPI); where KVM runs real mode natively
  // (unrestricted guest, AMD, PVM) a refusal does not matter.
  (void)raw_ioctl(fd(), KVM_SET_TSS_ADDR, reinterpret_cast<const void*>(0xfffbd000UL));
}

int Vm::check_extension(long cap) const {
  long rc = ::ioctl(fd(), KVM_CHECK_EXTENSION, cap);
  return gmem_visible_cap(cap, rc < 0 ? 0 : static_cast<int>(rc));
}

int Vm::try_create_guest_memfd(uint64_t size, uint64_t flags, UniqueFd& out) const {
  kvm_create_guest_memfd req{};
  req.size = size;
  req.flags = flags;
  if (int hidden = gmem_hidden_create_error(flags); hidden < 0) return hidden;
  int rc = raw_ioctl(fd(), KVM_CREATE_GUEST_MEMFD, &req);
  if (rc >= 0) out.reset(rc);
  return rc < 0 ? rc : 0;
}

UniqueFd Vm::create_guest_memfd(uint64_t size, uint64_t flags) const {
  UniqueFd out;
  if (int rc = try_create_guest_memfd(size, flags, out); rc < 0) {
    // Name the missing piece (the capability, or the flag) rather than the errno alone.
    std::string why = guest_memfd_missing(*this).value_or("the size may exceed what the host can give");
    throw Error(fmt::format("KVM_CREATE_GUEST_MEMFD(size={:#x}, flags={:#x})", size, flags), -rc,
                why + "; `vmm caps` shows what this host offers, or choose --memory shmem");
  }
  return out;
}

int Vm::try_set_memory_region2(uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva, int gmem_fd,
                               uint64_t gmem_offset) const {
  auto r = region2(slot, flags, gpa, size, hva, gmem_fd, gmem_offset);
  return std::min(raw_ioctl(fd(), KVM_SET_USER_MEMORY_REGION2, &r), 0);
}

void Vm::get_dirty_log(uint32_t slot, std::vector<uint64_t>& bitmap) const {
  kvm_dirty_log log{};
  log.slot = slot;
  log.dirty_bitmap = bitmap.data();
  checked_ioctl(fd(), KVM_GET_DIRTY_LOG, &log, "KVM_GET_DIRTY_LOG",
                "the memslot needs KVM_MEM_LOG_DIRTY_PAGES, which KVM refuses on a KVM_MEM_GUEST_MEMFD slot");
}

long Vm::ioctl(unsigned long request, const void* arg, const char* name) const {
  return checked_ioctl(fd(), request, arg, name);
}

void Vm::set_memory_region(uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva) const {
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.flags = flags;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = hva;
  checked_ioctl(fd(), KVM_SET_USER_MEMORY_REGION, &r, "KVM_SET_USER_MEMORY_REGION", kMemslotHint);
}

void Vm::set_memory_region2(uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva, int gmem_fd,
                            uint64_t gmem_offset) const {
  auto r = region2(slot, flags, gpa, size, hva, gmem_fd, gmem_offset);
  checked_ioctl(fd(), KVM_SET_USER_MEMORY_REGION2, &r, "KVM_SET_USER_MEMORY_REGION2", kMemslotHint);
}

void Vm::create_irqchip() const {
  checked_ioctl(fd(), KVM_CREATE_IRQCHIP, nullptr, "KVM_CREATE_IRQCHIP",
                "the VMM runs every guest with the in-kernel LAPIC, IOAPIC and PIC (KVM_CAP_IRQCHIP)");
}

void Vm::create_pit() const {
  kvm_pit_config c{};
  c.flags = KVM_PIT_SPEAKER_DUMMY;
  checked_ioctl(fd(), KVM_CREATE_PIT2, &c, "KVM_CREATE_PIT2", "the PIT needs KVM_CAP_PIT2 and an in-kernel irqchip");
}

Vcpu::Vcpu(const Vm& vm, int id) : id_(id) {
  fd_.reset(static_cast<int>(checked_ioctl(vm.fd(), KVM_CREATE_VCPU, reinterpret_cast<const void*>(long{id}),
                                           "KVM_CREATE_VCPU")));
  size_t size = vm.system().vcpu_mmap_size();
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd(), 0);
  if (p == MAP_FAILED) throw_errno("mmap(kvm_run)");
  run_ = Mapping(p, size);
}

bool Vcpu::run() {
  if (::ioctl(fd(), KVM_RUN, 0) == 0) return true;
  if (errno == EINTR || errno == EAGAIN) return false;
  throw_errno(fmt::format("KVM_RUN(vcpu {})", id_));
}

long Vcpu::ioctl(unsigned long request, const void* arg, const char* name) const {
  return checked_ioctl(fd(), request, arg, name);
}

int Vcpu::try_ioctl(unsigned long request, const void* arg) const { return std::min(raw_ioctl(fd(), request, arg), 0); }

kvm_regs Vcpu::get_regs() const {
  kvm_regs r{};
  checked_ioctl(fd(), KVM_GET_REGS, &r, "KVM_GET_REGS");
  return r;
}

void Vcpu::set_regs(const kvm_regs& regs) const { checked_ioctl(fd(), KVM_SET_REGS, &regs, "KVM_SET_REGS"); }

kvm_sregs Vcpu::get_sregs() const {
  kvm_sregs s{};
  checked_ioctl(fd(), KVM_GET_SREGS, &s, "KVM_GET_SREGS");
  return s;
}

void Vcpu::set_sregs(const kvm_sregs& sregs) const { checked_ioctl(fd(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS"); }

void Vcpu::set_cpuid(const CpuidTable& table) const {
  std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + table.entries.size() * sizeof(kvm_cpuid_entry2));
  auto* c = reinterpret_cast<kvm_cpuid2*>(buf.data());
  c->nent = static_cast<uint32_t>(table.entries.size());
  std::memcpy(c->entries, table.entries.data(), table.entries.size() * sizeof(kvm_cpuid_entry2));
  checked_ioctl(fd(), uapi::kSetCpuid2, c, "KVM_SET_CPUID2");
}

}  // namespace vmm
