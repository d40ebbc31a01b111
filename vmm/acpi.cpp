#include "acpi.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "acpi_abi.h"
#include "error.h"
#include "layout.h"

namespace vmm {

namespace {

constexpr uint8_t kIoapicId = 0xf0;  // an APIC ID no CPU holds

// resize + memcpy: GCC 12 at -O3 takes vector::insert of a struct's bytes for
// an overflow (-Wstringop-overflow, a false positive).
template <typename T>
void append(std::vector<uint8_t>& out, const T& v) {
  size_t at = out.size();
  out.resize(at + sizeof v);
  std::memcpy(out.data() + at, &v, sizeof v);
}

uint8_t checksum(const uint8_t* p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; i++) sum = static_cast<uint8_t>(sum + p[i]);
  return static_cast<uint8_t>(-sum);
}

acpi_header header(const char* signature, uint8_t revision) {
  acpi_header h{};
  std::memcpy(h.signature, signature, 4);
  h.revision = revision;
  std::memcpy(h.oem_id, "PCMVMM", 6);
  std::memcpy(h.oem_table_id, "POSTCOPY", 8);
  h.oem_revision = 1;
  std::memcpy(&h.creator_id, "PCMV", 4);
  h.creator_revision = 1;
  return h;
}

// A table: its header's length and checksum filled in over `body`.
std::vector<uint8_t> table(acpi_header h, const std::vector<uint8_t>& body) {
  h.length = static_cast<uint32_t>(sizeof h + body.size());
  std::vector<uint8_t> out(sizeof h + body.size());
  std::memcpy(out.data(), &h, sizeof h);
  std::copy(body.begin(), body.end(), out.begin() + sizeof h);
  out[offsetof(acpi_header, checksum)] = checksum(out.data(), out.size());
  return out;
}

std::vector<uint8_t> madt(uint32_t vcpus) {
  std::vector<uint8_t> body;
  append(body, uint32_t{ACPI_LAPIC_BASE});
  append(body, uint32_t{ACPI_MADT_PCAT_COMPAT});
  for (uint32_t i = 0; i < vcpus; i++)
    append(body, acpi_madt_lapic{ACPI_MADT_LAPIC, sizeof(acpi_madt_lapic), static_cast<uint8_t>(i),
                                 static_cast<uint8_t>(i), ACPI_LAPIC_ENABLED});
  append(body, acpi_madt_ioapic{ACPI_MADT_IOAPIC, sizeof(acpi_madt_ioapic), kIoapicId, 0, ACPI_IOAPIC_BASE, 0});
  // The PIT's IRQ 0 arrives on IOAPIC pin 2, as on every PC (and in QEMU's MADT).
  append(body, acpi_madt_override{ACPI_MADT_INT_OVERRIDE, sizeof(acpi_madt_override), 0, 0, 2, 0});
  return table(header(ACPI_MADT_SIGNATURE, 5), body);
}

}  // namespace

uint64_t write_acpi_tables(std::span<uint8_t> ram, uint32_t vcpus) {
  if (vcpus == 0 || vcpus > kMaxVcpus)
    throw Error(fmt::format("{} vCPUs: this VMM runs 1 to {}", vcpus, kMaxVcpus));
  const uint64_t rsdp_gpa = layout::kAcpiTables;
  const uint64_t xsdt_gpa = rsdp_gpa + sizeof(acpi_rsdp);
  const uint64_t madt_gpa = xsdt_gpa + sizeof(acpi_header) + 8;
  std::vector<uint8_t> xsdt_body;
  append(xsdt_body, madt_gpa);
  std::vector<uint8_t> xsdt = table(header(ACPI_XSDT_SIGNATURE, 1), xsdt_body);
  std::vector<uint8_t> apic = madt(vcpus);
  if (madt_gpa + apic.size() > layout::kAcpiTables + layout::kAcpiTablesMax)
    throw Error(fmt::format("the ACPI tables for {} vCPUs do not fit in their {} bytes", vcpus,
                            layout::kAcpiTablesMax));

  acpi_rsdp rsdp{};
  std::memcpy(rsdp.signature, ACPI_RSDP_SIGNATURE, 8);
  std::memcpy(rsdp.oem_id, "PCMVMM", 6);
  rsdp.revision = 2;
  rsdp.length = sizeof rsdp;
  rsdp.xsdt_paddr = xsdt_gpa;
  rsdp.checksum = checksum(reinterpret_cast<const uint8_t*>(&rsdp), 20);
  rsdp.ext_checksum = checksum(reinterpret_cast<const uint8_t*>(&rsdp), sizeof rsdp);
  std::memcpy(ram.data() + rsdp_gpa, &rsdp, sizeof rsdp);
  std::memcpy(ram.data() + xsdt_gpa, xsdt.data(), xsdt.size());
  std::memcpy(ram.data() + madt_gpa, apic.data(), apic.size());
  return rsdp_gpa;
}

}  // namespace vmm
