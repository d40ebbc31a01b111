// RAII classes for the KVM objects: the system (/dev/kvm), a VM and a vCPU.
// Each ioctl has a throwing form (fails with the ioctl's name, errno text and a
// hint) and, where probing needs it, a raw form that returns -errno.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "mapping.h"
#include "unique_fd.h"

namespace vmm {

// The CPUID table handed to KVM_SET_CPUID2 (flexible array member).
struct CpuidTable {
  std::vector<kvm_cpuid_entry2> entries;
};

class KvmSystem {
 public:
  // Opens /dev/kvm and checks the API version.
  KvmSystem();
  int fd() const { return fd_.get(); }
  int api_version() const { return api_version_; }
  int check_extension(long cap) const;  // system-wide KVM_CHECK_EXTENSION
  size_t vcpu_mmap_size() const;
  CpuidTable supported_cpuid() const;

 private:
  UniqueFd fd_;
  int api_version_ = 0;
};

class Vcpu;

class Vm {
 public:
  explicit Vm(const KvmSystem& kvm);
  int fd() const { return fd_.get(); }
  const KvmSystem& system() const { return *kvm_; }

  int check_extension(long cap) const;  // VM-level: answers for this VM type
  UniqueFd create_guest_memfd(uint64_t size, uint64_t flags) const;
  // Raw forms for probes: 0 or -errno.
  int try_create_guest_memfd(uint64_t size, uint64_t flags, UniqueFd& out) const;
  int try_set_memory_region2(uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva, int gmem_fd,
                             uint64_t gmem_offset) const;

  void set_memory_region(uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva) const;
  // KVM_GET_DIRTY_LOG into `bitmap` (one bit per 4 KiB page of the slot).
  void get_dirty_log(uint32_t slot, std::vector<uint64_t>& bitmap) const;
  long ioctl(unsigned long request, const void* arg, const char* name) const;
  // The in-kernel irqchip (a LAPIC per vCPU, the IOAPIC and two PICs) and
  // PIT; both before the first vCPU, as KVM requires.
  void create_irqchip() const;
  void create_pit() const;
  void set_memory_region2(uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva, int gmem_fd,
                          uint64_t gmem_offset) const;

 private:
  const KvmSystem* kvm_;
  UniqueFd fd_;
};

class Vcpu {
 public:
  Vcpu(const Vm& vm, int id);
  int id() const { return id_; }
  int fd() const { return fd_.get(); }
  kvm_run* run_state() const { return reinterpret_cast<kvm_run*>(run_.data()); }

  // KVM_RUN; returns false when interrupted by a signal (EINTR), true otherwise.
  bool run();

  kvm_regs get_regs() const;
  void set_regs(const kvm_regs& regs) const;
  kvm_sregs get_sregs() const;
  void set_sregs(const kvm_sregs& sregs) const;
  void set_cpuid(const CpuidTable& table) const;

  // Any other vCPU ioctl: throws "NAME failed: ..." / returns 0 or -errno.
  long ioctl(unsigned long request, const void* arg, const char* name) const;
  int try_ioctl(unsigned long request, const void* arg) const;
  // Makes a KVM_RUN in progress (or the next one) return to the VMM at once.
  void request_immediate_exit() const { run_state()->immediate_exit = 1; }
  void clear_immediate_exit() const { run_state()->immediate_exit = 0; }

 private:
  int id_;
  UniqueFd fd_;
  Mapping run_;
};

}  // namespace vmm
