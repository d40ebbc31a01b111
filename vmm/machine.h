// A booted guest: VM, RAM, devices and the boot vCPU, assembled from a
// MachineConfig. Construction does all setup (kvmtool's init), run() the work.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "debug_exit.h"
#include "guest_memory.h"
#include "io_bus.h"
#include "kvm.h"
#include "serial.h"
#include "vcpu_loop.h"

namespace vmm {

struct MachineConfig {
  std::string kernel_path;
  std::string cmdline;
  Backend backend = Backend::Gmem;
  GmemBind gmem_bind = GmemBind::Fd;
  uint64_t mem_size = 256ULL << 20;
};

class Machine {
 public:
  Machine(const KvmSystem& kvm, const MachineConfig& config, Serial::LineSink serial_sink);

  VcpuOutcome run(const std::atomic<bool>* stop = nullptr);
  void flush_serial() { serial_.flush(); }

  const MachineConfig& config() const { return config_; }
  const GuestMemory& memory() const { return memory_; }
  const IoBus& bus() const { return bus_; }

 private:
  void bind_memory();
  void setup_vcpu(uint32_t entry);

  MachineConfig config_;
  const KvmSystem& kvm_;
  Vm vm_;
  GuestMemory memory_;
  IoBus bus_;
  Serial serial_;
  DebugExit debug_exit_;
  std::unique_ptr<Vcpu> vcpu_;
};

}  // namespace vmm
