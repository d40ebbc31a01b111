// The PVH boot protocol (xen/include/public/arch-x86/hvm/start_info.h and
// docs "x86/pvh"): hvm_start_info with a memory map and the command line, and
// a vCPU in 32-bit protected mode, paging off, %ebx = &hvm_start_info.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <string>

#include "hvm_start_info.h"

namespace vmm {

// The ABI structs come from the guest's own header, so both sides agree by construction.
using HvmStartInfo = hvm_start_info;
using HvmMemmapEntry = hvm_memmap_table_entry;
inline constexpr uint32_t kHvmStartMagic = HVM_START_MAGIC;
inline constexpr uint32_t kMemmapRam = HVM_MEMMAP_TYPE_RAM;
inline constexpr uint32_t kMemmapReserved = HVM_MEMMAP_TYPE_RESERVED;
static_assert(sizeof(HvmStartInfo) == 56);
static_assert(sizeof(HvmMemmapEntry) == 24);

// Writes GDT, start info (naming the ACPI RSDP at `rsdp_gpa`), memory map
// and command line into guest RAM. Throws vmm::Error if the command line
// does not fit.
void write_pvh_boot_info(std::span<uint8_t> ram, const std::string& cmdline, uint64_t rsdp_gpa);

// Register state of the boot vCPU at the PVH entry point.
kvm_regs pvh_initial_regs(uint32_t entry);
void pvh_initial_sregs(kvm_sregs& sregs);

}  // namespace vmm
