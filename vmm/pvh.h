// The PVH boot protocol (xen/include/public/arch-x86/hvm/start_info.h and
// docs "x86/pvh"): hvm_start_info with a memory map and the command line, and
// a vCPU in 32-bit protected mode, paging off, %ebx = &hvm_start_info.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <string>

namespace vmm {

inline constexpr uint32_t kHvmStartMagic = 0x336ec578;

struct HvmStartInfo {
  uint32_t magic;
  uint32_t version;
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);

struct HvmMemmapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t reserved;
};
static_assert(sizeof(HvmMemmapEntry) == 24);

inline constexpr uint32_t kMemmapRam = 1;
inline constexpr uint32_t kMemmapReserved = 2;

// Writes GDT, start info, memory map and command line into guest RAM.
// Throws vmm::Error if the command line does not fit.
void write_pvh_boot_info(std::span<uint8_t> ram, const std::string& cmdline);

// Register state of the boot vCPU at the PVH entry point.
kvm_regs pvh_initial_regs(uint32_t entry);
void pvh_initial_sregs(kvm_sregs& sregs);

}  // namespace vmm
