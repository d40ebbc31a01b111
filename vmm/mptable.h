// The MP table (Intel MultiProcessor Specification 1.4) that tells the guest
// which CPUs it has, where their LAPICs and the IOAPIC are and how the ISA
// IRQs reach the IOAPIC: what Firecracker writes for its guests and what
// QEMU's SeaBIOS writes for the same guest, so guest.elf finds its CPUs the
// same way under both.
#pragma once

#include <cstdint>
#include <span>

namespace vmm {

// The most CPUs the table (and the guest) describe.
inline constexpr uint32_t kMaxVcpus = 8;

// Writes the floating pointer and the configuration table at layout::kMpTable
// (inside the reserved [EBDA, 1 MiB) hole) for `vcpus` CPUs with APIC IDs
// 0..vcpus-1, CPU 0 the boot CPU. Throws vmm::Error above kMaxVcpus.
void write_mp_table(std::span<uint8_t> ram, uint32_t vcpus);

}  // namespace vmm
