// The VmState frame: VM config, kvmclock, the vCPU and the devices.
#pragma once

#include <linux/kvm.h>

#include <string>
#include <vector>

#include "serial.h"
#include "vcpu_state.h"

namespace vmm {
class Machine;
}

namespace migration {

struct VmState {
  uint64_t mem_size = 0;
  std::string cmdline;
  kvm_clock_data clock{};
  VcpuState vcpu;
  vmm::Serial::State serial;
};

VmState capture_vm(vmm::Machine& m, const std::vector<uint32_t>& msrs);
void restore_vm(vmm::Machine& m, const VmState& s);

// The guest pages KVM maps for itself once these MSRs are restored (a
// paravirtual clock, the wall clock, steal time, PV EOI, the async PF area),
// as guest-physical addresses of 4 KiB pages. KVM writes them through its own
// mapping of the page, which no userfaultfd sees.
std::vector<uint64_t> kvm_mapped_pages(const VcpuState& s);

std::vector<uint8_t> encode(const VmState& s);
VmState decode_vm_state(std::span<const uint8_t> payload);

}  // namespace migration
