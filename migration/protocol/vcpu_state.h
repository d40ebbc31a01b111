// Everything needed to resume a vCPU exactly where it stopped: registers,
// special registers, XSAVE (FPU/SSE/AVX), XCRs, the MSRs KVM lists (TSC and
// kvmclock among them), pending events, debug registers, MP state and the
// in-kernel LAPIC.
// On the wire each KVM struct travels as its x86 KVM ABI bytes, length-checked.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "kvm_uapi.h"
#include "wire.h"

namespace vmm {
class KvmSystem;
class Vcpu;
}  // namespace vmm

namespace migration {

struct VcpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};
  vmm::uapi::XsaveRegion xsave{};
  kvm_xcrs xcrs{};
  std::vector<kvm_msr_entry> msrs;
  kvm_vcpu_events events{};
  kvm_debugregs debugregs{};
  kvm_mp_state mp_state{};
  kvm_lapic_state lapic{};  // the in-kernel LAPIC's registers
};

// The MSRs KVM lists that this vCPU can actually read (KVM_GET_MSRS stops at
// the first failing index, so each is probed once).
std::vector<uint32_t> migratable_msrs(const vmm::KvmSystem& kvm, const vmm::Vcpu& vcpu);

VcpuState capture_vcpu(const vmm::Vcpu& vcpu, const std::vector<uint32_t>& msr_indices);
void restore_vcpu(const vmm::Vcpu& vcpu, const VcpuState& state);

void encode_vcpu(ByteWriter& w, const VcpuState& s);
VcpuState decode_vcpu(ByteReader& r);

}  // namespace migration
