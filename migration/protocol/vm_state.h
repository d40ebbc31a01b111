// The VmState frame: VM config, kvmclock, every vCPU (its LAPIC with it),
// the in-kernel IOAPIC, PICs and PIT, and the devices.
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

// KVM_GET_IRQCHIP's three chips, in chip_id order, and the PIT.
struct IrqchipState {
  static constexpr uint32_t kPicMaster = 0, kPicSlave = 1, kIoapic = 2;
  kvm_irqchip chips[3]{};
  kvm_pit_state2 pit{};
};

struct VmState {
  uint64_t mem_size = 0;
  std::string cmdline;
  kvm_clock_data clock{};
  std::vector<VcpuState> vcpus;
  IrqchipState irqchip;
  vmm::Serial::State serial;
};

VmState capture_vm(vmm::Machine& m, const std::vector<uint32_t>& msrs);
void restore_vm(vmm::Machine& m, const VmState& s);

// The guest pages KVM maps for itself once these MSRs are restored (a
// paravirtual clock, the wall clock, steal time, PV EOI, the async PF area),
// as guest-physical addresses of 4 KiB pages. KVM writes them through its own
// mapping of the page, which no userfaultfd sees.
std::vector<uint64_t> kvm_mapped_pages(const std::vector<VcpuState>& vcpus);

std::vector<uint8_t> encode(const VmState& s);
VmState decode_vm_state(std::span<const uint8_t> payload);

}  // namespace migration
