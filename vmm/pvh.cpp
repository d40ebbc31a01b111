#include "pvh.h"

#include <cstring>

#include <fmt/format.h>

#include "error.h"
#include "layout.h"

namespace vmm {

namespace {

constexpr uint64_t kGdt[] = {
    0,                     // null
    0x00cf9b000000ffffULL,  // 0x08: code, 32-bit, flat, accessed
    0x00cf93000000ffffULL,  // 0x10: data, flat, accessed
    0x00008b0000000067ULL,  // 0x18: TSS, busy (VMX requires a usable TR)
};

template <typename T>
void put(std::span<uint8_t> ram, uint64_t gpa, const T& value) {
  std::memcpy(ram.data() + gpa, &value, sizeof value);
}

kvm_segment flat_segment(uint16_t selector, uint8_t type) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.db = 1;
  s.s = 1;
  s.g = 1;
  return s;
}

}  // namespace

void write_pvh_boot_info(std::span<uint8_t> ram, const std::string& cmdline, uint64_t rsdp_gpa) {
  if (cmdline.size() + 1 > layout::kCmdlineMax)
    throw Error(fmt::format("--cmdline is {} bytes; PVH boot here allows at most {}", cmdline.size(),
                            layout::kCmdlineMax - 1));
  if (cmdline.find('\0') != std::string::npos) throw Error("--cmdline must not contain NUL bytes");
  std::memcpy(ram.data() + layout::kBootGdt, kGdt, sizeof kGdt);
  std::memcpy(ram.data() + layout::kCmdline, cmdline.c_str(), cmdline.size() + 1);

  const HvmMemmapEntry memmap[] = {
      {0, layout::kEbdaStart, kMemmapRam, 0},
      {layout::kEbdaStart, layout::kHighMemStart - layout::kEbdaStart, kMemmapReserved, 0},
      {layout::kHighMemStart, ram.size() - layout::kHighMemStart, kMemmapRam, 0},
  };
  static_assert(std::size(memmap) <= layout::kMaxMemmapEntries);
  std::memcpy(ram.data() + layout::kMemmap, memmap, sizeof memmap);

  HvmStartInfo si{};
  si.magic = kHvmStartMagic;
  si.version = 1;  // 1: the memmap fields are valid
  si.cmdline_paddr = layout::kCmdline;
  si.memmap_paddr = layout::kMemmap;
  si.memmap_entries = static_cast<uint32_t>(std::size(memmap));
  si.rsdp_paddr = rsdp_gpa;
  put(ram, layout::kStartInfo, si);
}

kvm_regs pvh_initial_regs(uint32_t entry) {
  kvm_regs r{};
  r.rip = entry;
  r.rbx = layout::kStartInfo;
  r.rflags = 0x2;  // bit 1 is reserved-as-one
  return r;
}

void pvh_initial_sregs(kvm_sregs& s) {
  s.cs = flat_segment(layout::kCodeSelector, 0xb);
  s.ds = s.es = s.fs = s.gs = s.ss = flat_segment(layout::kDataSelector, 0x3);
  s.tr = {};
  s.tr.selector = layout::kTssSelector;
  s.tr.limit = 0x67;
  s.tr.type = 0xb;
  s.tr.present = 1;
  s.ldt = {};
  s.ldt.unusable = 1;
  s.gdt.base = layout::kBootGdt;
  s.gdt.limit = sizeof kGdt - 1;
  s.idt.base = 0;
  s.idt.limit = 0;
  s.cr0 = 0x11;  // PE | ET: protected mode, paging off
  s.cr3 = 0;
  s.cr4 = 0;
  s.efer = 0;
}

}  // namespace vmm
