// A guest machine: VM, in-kernel irqchip and PIT, RAM, devices and its vCPUs
// (vCPU 0 boots; the others wait for the boot CPU's INIT and SIPI, as on a
// PC). Construction does the setup (kvmtool's init); boot() loads a PVH
// kernel, or a migration restores state instead; run(i) is vCPU i's work.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bitmap.h"
#include "debug_exit.h"
#include "guest_memory.h"
#include "io_bus.h"
#include "kvm.h"
#include "serial.h"
#include "vcpu_loop.h"

namespace vmm {

struct MachineConfig {
  std::string kernel_path;  // empty: no boot (an incoming migration fills RAM and state)
  std::string cmdline;
  Backend backend = Backend::Gmem;
  GmemBind gmem_bind = GmemBind::Fd;
  uint64_t mem_size = 256ULL << 20;
  uint32_t vcpus = 1;
};

class Machine {
 public:
  Machine(const KvmSystem& kvm, const MachineConfig& config, Serial::LineSink serial_sink);

  // Runs vCPU `index` on the calling thread until the guest stops or *stop.
  // Device exits from several vCPUs are serialised by the bus.
  VcpuOutcome run(size_t index, const std::atomic<bool>* stop = nullptr);

  // Dirty logging (precopy). KVM refuses it on a KVM_MEM_GUEST_MEMFD slot.
  bool can_log_dirty() const;
  void set_dirty_logging(bool on);
  Bitmap get_dirty_log() const;

  const MachineConfig& config() const { return config_; }
  const KvmSystem& kvm() const { return kvm_; }
  const Vm& vm() const { return vm_; }
  Vcpu& vcpu(size_t index = 0) { return *vcpus_.at(index); }
  const Vcpu& vcpu(size_t index = 0) const { return *vcpus_.at(index); }
  size_t vcpu_count() const { return vcpus_.size(); }
  const GuestMemory& memory() const { return memory_; }
  Serial& serial() { return serial_; }
  const IoBus& bus() const { return bus_; }
  // vCPU `apic_id`'s CPUID: KVM's supported table with its APIC ID and the CPU count.
  static CpuidTable cpuid_for(const CpuidTable& supported, uint32_t apic_id, uint32_t vcpus);

 private:
  void boot();
  void bind_memory(uint32_t extra_flags);

  MachineConfig config_;
  const KvmSystem& kvm_;
  Vm vm_;
  GuestMemory memory_;
  IoBus bus_;
  Serial serial_;
  DebugExit debug_exit_;
  PostPort post_port_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
};

}  // namespace vmm
