#include "vcpu_state.h"

#include <sys/ioctl.h>

#include <cstring>

#include <fmt/format.h>

#include "error.h"
#include "kvm.h"

namespace migration {

namespace {

constexpr uint32_t kMaxMsrs = 1024;

// kvm_msrs with room for n entries (flexible array member).
struct MsrBuffer {
  explicit MsrBuffer(size_t n) : bytes(8 + n * sizeof(kvm_msr_entry)) { set_count(n); }
  void set_count(size_t n) {
    uint32_t c = static_cast<uint32_t>(n);
    std::memcpy(bytes.data(), &c, 4);
  }
  kvm_msr_entry* entries() { return reinterpret_cast<kvm_msr_entry*>(bytes.data() + 8); }
  std::vector<uint8_t> bytes;
};

uint64_t read_msr(const vmm::Vcpu& vcpu, uint32_t index) {
  MsrBuffer one(1);
  one.entries()[0] = {index, 0, 0};
  if (::ioctl(vcpu.fd(), vmm::uapi::kGetMsrs, one.bytes.data()) != 1)
    throw vmm::Error(fmt::format("KVM_GET_MSRS({:#x}) failed", index));
  return one.entries()[0].data;
}

// KVM_SET_MSRS stops at the first MSR it refuses. Some MSRs KVM lists cannot
// be written on a VM without an in-kernel LAPIC (e.g. MSR_KVM_ASYNC_PF_INT);
// such a refusal is harmless when the destination already holds that value.
void restore_msrs(const vmm::Vcpu& vcpu, const std::vector<kvm_msr_entry>& msrs) {
  size_t done = 0;
  while (done < msrs.size()) {
    size_t n = msrs.size() - done;
    MsrBuffer buf(n);
    std::memcpy(buf.entries(), msrs.data() + done, n * sizeof(kvm_msr_entry));
    auto set = static_cast<size_t>(vcpu.ioctl(vmm::uapi::kSetMsrs, buf.bytes.data(), "KVM_SET_MSRS"));
    done += set;
    if (done == msrs.size()) return;
    const kvm_msr_entry& refused = msrs[done];
    uint64_t have = read_msr(vcpu, refused.index);
    if (have != refused.data)
      throw vmm::Error(fmt::format("KVM_SET_MSRS refused MSR {:#x} = {:#x} (the destination holds {:#x})",
                                   refused.index, refused.data, have));
    done++;
  }
}

}  // namespace

std::vector<uint32_t> migratable_msrs(const vmm::KvmSystem& kvm, const vmm::Vcpu& vcpu) {
  std::vector<uint8_t> list(4 + kMaxMsrs * 4);
  uint32_t n = kMaxMsrs;
  std::memcpy(list.data(), &n, 4);
  if (::ioctl(kvm.fd(), vmm::uapi::kGetMsrIndexList, list.data()) < 0) vmm::throw_errno("KVM_GET_MSR_INDEX_LIST");
  std::memcpy(&n, list.data(), 4);
  std::vector<uint32_t> all(n), readable;
  std::memcpy(all.data(), list.data() + 4, 4 * size_t{n});
  // KVM_GET_MSRS reads entries in order and stops at the first it cannot
  // read: one call per unreadable MSR, not one per MSR (this runs with the
  // guest stopped, inside the downtime).
  MsrBuffer buf(n);
  for (uint32_t i = 0; i < n;) {
    buf.set_count(n - i);
    for (uint32_t k = i; k < n; k++) buf.entries()[k - i] = {all[k], 0, 0};
    int got = ::ioctl(vcpu.fd(), vmm::uapi::kGetMsrs, buf.bytes.data());
    if (got < 0) vmm::throw_errno("KVM_GET_MSRS");
    readable.insert(readable.end(), all.begin() + i, all.begin() + i + got);
    i += static_cast<uint32_t>(got) + 1;  // skip the one it stopped at
  }
  return readable;
}

VcpuState capture_vcpu(const vmm::Vcpu& vcpu, const std::vector<uint32_t>& msr_indices) {
  VcpuState s;
  s.regs = vcpu.get_regs();
  s.sregs = vcpu.get_sregs();
  vcpu.ioctl(vmm::uapi::kGetXsave, &s.xsave, "KVM_GET_XSAVE");
  vcpu.ioctl(KVM_GET_XCRS, &s.xcrs, "KVM_GET_XCRS");
  MsrBuffer buf(msr_indices.size());
  for (size_t i = 0; i < msr_indices.size(); i++) buf.entries()[i] = {msr_indices[i], 0, 0};
  long got = vcpu.ioctl(vmm::uapi::kGetMsrs, buf.bytes.data(), "KVM_GET_MSRS");
  if (static_cast<size_t>(got) != msr_indices.size())
    throw vmm::Error(fmt::format("KVM_GET_MSRS read {} of {} MSRs (stopped at {:#x})", got, msr_indices.size(),
                                 msr_indices[static_cast<size_t>(got)]));
  s.msrs.assign(buf.entries(), buf.entries() + msr_indices.size());
  vcpu.ioctl(KVM_GET_VCPU_EVENTS, &s.events, "KVM_GET_VCPU_EVENTS");
  vcpu.ioctl(KVM_GET_DEBUGREGS, &s.debugregs, "KVM_GET_DEBUGREGS");
  vcpu.ioctl(KVM_GET_MP_STATE, &s.mp_state, "KVM_GET_MP_STATE");
  vcpu.ioctl(KVM_GET_LAPIC, &s.lapic, "KVM_GET_LAPIC");
  return s;
}

// Order follows what KVM needs: special registers (EFER, CR4, the APIC base
// and its x2APIC mode) before the LAPIC's registers, the LAPIC before the
// MSRs (the TSC deadline lands in its timer, as QEMU orders it) and XSAVE;
// events and MP state last.
void restore_vcpu(const vmm::Vcpu& vcpu, const VcpuState& s) {
  vcpu.set_sregs(s.sregs);
  vcpu.ioctl(KVM_SET_LAPIC, &s.lapic, "KVM_SET_LAPIC");
  restore_msrs(vcpu, s.msrs);
  vcpu.ioctl(vmm::uapi::kSetXsave, &s.xsave, "KVM_SET_XSAVE");
  vcpu.ioctl(KVM_SET_XCRS, &s.xcrs, "KVM_SET_XCRS");
  vcpu.set_regs(s.regs);
  vcpu.ioctl(KVM_SET_VCPU_EVENTS, &s.events, "KVM_SET_VCPU_EVENTS");
  vcpu.ioctl(KVM_SET_DEBUGREGS, &s.debugregs, "KVM_SET_DEBUGREGS");
  vcpu.ioctl(KVM_SET_MP_STATE, &s.mp_state, "KVM_SET_MP_STATE");
}

void encode_vcpu(ByteWriter& w, const VcpuState& s) {
  put_struct(w, s.regs);
  put_struct(w, s.sregs);
  put_struct(w, s.xsave);
  put_struct(w, s.xcrs);
  w.u32(static_cast<uint32_t>(s.msrs.size()));
  for (const auto& m : s.msrs) {
    w.u32(m.index);
    w.u64(m.data);
  }
  put_struct(w, s.events);
  put_struct(w, s.debugregs);
  put_struct(w, s.mp_state);
  put_struct(w, s.lapic);
}

VcpuState decode_vcpu(ByteReader& r) {
  VcpuState s;
  get_struct(r, s.regs, "kvm_regs");
  get_struct(r, s.sregs, "kvm_sregs");
  get_struct(r, s.xsave, "kvm_xsave");
  get_struct(r, s.xcrs, "kvm_xcrs");
  uint32_t n = r.u32();
  if (n > kMaxMsrs) throw ProtocolError(fmt::format("vCPU state lists {} MSRs (at most {})", n, kMaxMsrs));
  s.msrs.resize(n);
  for (auto& m : s.msrs) {
    m.index = r.u32();
    m.data = r.u64();
  }
  get_struct(r, s.events, "kvm_vcpu_events");
  get_struct(r, s.debugregs, "kvm_debugregs");
  get_struct(r, s.mp_state, "kvm_mp_state");
  get_struct(r, s.lapic, "kvm_lapic_state");
  return s;
}

}  // namespace migration
