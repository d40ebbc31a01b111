// A guest machine: VM, RAM, devices and the boot vCPU. Construction does the
// setup (kvmtool's init); boot() loads a PVH kernel, or a migration restores
// state instead; run() is the work.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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
};

class Machine {
 public:
  Machine(const KvmSystem& kvm, const MachineConfig& config, Serial::LineSink serial_sink);

  VcpuOutcome run(const std::atomic<bool>* stop = nullptr);

  // Dirty logging (precopy). KVM refuses it on a KVM_MEM_GUEST_MEMFD slot.
  bool can_log_dirty() const;
  void set_dirty_logging(bool on);
  void get_dirty_log(std::vector<uint64_t>& bitmap) const;

  const MachineConfig& config() const { return config_; }
  const KvmSystem& kvm() const { return kvm_; }
  const Vm& vm() const { return vm_; }
  Vcpu& vcpu() { return *vcpu_; }
  const GuestMemory& memory() const { return memory_; }
  Serial& serial() { return serial_; }
  const IoBus& bus() const { return bus_; }

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
  std::unique_ptr<Vcpu> vcpu_;
};

}  // namespace vmm
