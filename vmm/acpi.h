// The ACPI tables that tell the guest which CPUs it has and where their
// LAPICs and the IOAPIC are: an RSDP, an XSDT and a MADT, as Cloud
// Hypervisor and Firecracker write them (without the FADT and DSDT a full OS
// also wants). QEMU gives the same guest its own MADT, so guest.elf finds its
// CPUs the same way under both VMMs.
#pragma once

#include <cstdint>
#include <span>

namespace vmm {

// The most vCPUs this VMM runs (and its guest starts).
inline constexpr uint32_t kMaxVcpus = 8;

// Writes the tables at layout::kAcpiTables (inside the reserved [EBDA, 1 MiB)
// hole, where guests search for the RSDP) for `vcpus` CPUs with APIC IDs
// 0..vcpus-1; returns the RSDP's guest-physical address for the PVH start
// info. Throws vmm::Error outside 1..kMaxVcpus.
uint64_t write_acpi_tables(std::span<uint8_t> ram, uint32_t vcpus);

}  // namespace vmm
