#include "vm_state.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "kvm.h"
#include "machine.h"
#include "messages.h"

namespace migration {

namespace {

IrqchipState capture_irqchip(const vmm::Vm& vm) {
  IrqchipState s;
  for (uint32_t id = 0; id < 3; id++) {
    s.chips[id].chip_id = id;
    vm.ioctl(KVM_GET_IRQCHIP, &s.chips[id], "KVM_GET_IRQCHIP");
  }
  vm.ioctl(KVM_GET_PIT2, &s.pit, "KVM_GET_PIT2");
  return s;
}

void restore_irqchip(const vmm::Vm& vm, const IrqchipState& s) {
  for (const auto& chip : s.chips) vm.ioctl(KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP");
  vm.ioctl(KVM_SET_PIT2, &s.pit, "KVM_SET_PIT2");
}

}  // namespace

VmState capture_vm(vmm::Machine& m, const std::vector<uint32_t>& msrs) {
  VmState s;
  s.mem_size = m.memory().size();
  s.cmdline = m.config().cmdline;
  m.vm().ioctl(KVM_GET_CLOCK, &s.clock, "KVM_GET_CLOCK");
  for (size_t i = 0; i < m.vcpu_count(); i++) s.vcpus.push_back(capture_vcpu(m.vcpu(i), msrs));
  s.irqchip = capture_irqchip(m.vm());
  s.serial = m.serial().save();
  return s;
}

void restore_vm(vmm::Machine& m, const VmState& s) {
  if (s.mem_size != m.memory().size())
    throw ProtocolError(fmt::format("VmState is for {} bytes of RAM, the destination has {}", s.mem_size,
                                    m.memory().size()));
  kvm_clock_data clock = s.clock;
  clock.flags = 0;  // KVM_SET_CLOCK takes only the value (and KVM_CLOCK_REALTIME when asked)
  m.vm().ioctl(KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK");
  if (s.vcpus.size() != m.vcpu_count())
    throw ProtocolError(fmt::format("VmState holds {} vCPUs, the destination made {}", s.vcpus.size(), m.vcpu_count()));
  // The IOAPIC and PICs first: a LAPIC restored after them sees their state.
  restore_irqchip(m.vm(), s.irqchip);
  for (size_t i = 0; i < s.vcpus.size(); i++) restore_vcpu(m.vcpu(i), s.vcpus[i]);
  m.serial().restore(s.serial);
}

std::vector<uint64_t> kvm_mapped_pages(const std::vector<VcpuState>& vcpus) {
  // arch/x86/include/uapi/asm/kvm_para.h: bit 0 enables the area, except for
  // the wall clock, which KVM writes whenever the MSR is written.
  constexpr uint32_t kWallClock = 0x11, kSystemTime = 0x12, kWallClockNew = 0x4b564d00, kSystemTimeNew = 0x4b564d01,
                     kAsyncPf = 0x4b564d02, kStealTime = 0x4b564d03, kPvEoi = 0x4b564d04;
  constexpr uint64_t kAreaBytes = 64;  // the largest of these areas (steal time, async PF)
  std::vector<uint64_t> pages;
  for (const auto& s : vcpus)
    for (const auto& m : s.msrs) {
      bool wall = m.index == kWallClock || m.index == kWallClockNew;
      bool area = m.index == kSystemTime || m.index == kSystemTimeNew || m.index == kAsyncPf || m.index == kStealTime ||
                  m.index == kPvEoi;
      if (!(wall ? m.data != 0 : area && (m.data & 1))) continue;
      uint64_t gpa = wall ? m.data : m.data & ~1ULL;
      for (uint64_t p = gpa & ~0xfffULL; p < gpa + kAreaBytes; p += 4096)
        if (std::find(pages.begin(), pages.end(), p) == pages.end()) pages.push_back(p);
    }
  return pages;
}

std::vector<uint8_t> encode(const VmState& s) {
  ByteWriter w;
  w.u64(s.mem_size);
  w.str(s.cmdline);
  w.u32(sizeof s.clock);
  w.bytes({reinterpret_cast<const uint8_t*>(&s.clock), sizeof s.clock});
  w.u32(static_cast<uint32_t>(s.vcpus.size()));
  for (const auto& v : s.vcpus) encode_vcpu(w, v);
  for (const auto& chip : s.irqchip.chips) put_struct(w, chip);
  put_struct(w, s.irqchip.pit);
  w.bytes(s.serial.regs);
  w.u8(s.serial.divisor_lo);
  w.u8(s.serial.divisor_hi);
  w.str(s.serial.partial_line);
  return std::move(w.buffer());
}

VmState decode_vm_state(std::span<const uint8_t> payload) {
  ByteReader r(payload, "VmState");
  VmState s;
  s.mem_size = r.u64();
  s.cmdline = r.str(4096);
  if (r.u32() != sizeof s.clock) throw ProtocolError("VmState: kvm_clock_data has the wrong size");
  std::memcpy(&s.clock, r.bytes(sizeof s.clock).data(), sizeof s.clock);
  uint32_t n = r.u32();
  if (n == 0 || n > kMaxHelloVcpus) throw ProtocolError(fmt::format("VmState: {} vCPUs (1 to {})", n, kMaxHelloVcpus));
  for (uint32_t i = 0; i < n; i++) s.vcpus.push_back(decode_vcpu(r));
  for (uint32_t id = 0; id < 3; id++) {
    get_struct(r, s.irqchip.chips[id], "kvm_irqchip");
    if (s.irqchip.chips[id].chip_id != id)
      throw ProtocolError(fmt::format("VmState: irqchip {} names chip {}", id, s.irqchip.chips[id].chip_id));
  }
  get_struct(r, s.irqchip.pit, "kvm_pit_state2");
  std::memcpy(s.serial.regs.data(), r.bytes(s.serial.regs.size()).data(), s.serial.regs.size());
  s.serial.divisor_lo = r.u8();
  s.serial.divisor_hi = r.u8();
  s.serial.partial_line = r.str(4096);
  r.expect_end();
  return s;
}

}  // namespace migration
