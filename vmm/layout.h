// Guest-physical layout used by the PVH boot. One place for every address.
#pragma once

#include <cstdint>

namespace vmm::layout {

inline constexpr uint64_t kBootGdt = 0x500;          // 4 descriptors
inline constexpr uint64_t kStartInfo = 0x6000;        // struct hvm_start_info
inline constexpr uint64_t kMemmap = 0x6040;           // hvm_memmap_table_entry[]
inline constexpr uint32_t kMaxMemmapEntries = 8;
inline constexpr uint64_t kCmdline = 0x7000;          // NUL-terminated
inline constexpr uint64_t kCmdlineMax = 0x1000;       // bytes, including NUL
inline constexpr uint64_t kEbdaStart = 0x9fc00;       // legacy hole [EBDA, 1 MiB) is reported reserved
inline constexpr uint64_t kAcpiTables = kEbdaStart;   // RSDP, XSDT, MADT
inline constexpr uint64_t kAcpiTablesMax = 0x400;     // bytes: the EBDA's first KiB, where guests search
inline constexpr uint64_t kHighMemStart = 0x100000;   // ELF segments load at or above 1 MiB
inline constexpr uint64_t kMinRamSize = 4ULL << 20;

// Boot GDT selectors (as Firecracker and Cloud Hypervisor use for PVH).
inline constexpr uint16_t kCodeSelector = 0x08;
inline constexpr uint16_t kDataSelector = 0x10;
inline constexpr uint16_t kTssSelector = 0x18;

}  // namespace vmm::layout
