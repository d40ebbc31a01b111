/* The ACPI tables (ACPI 6.5, chapter 5) that tell the guest its CPUs: the
 * RSDP, an XSDT (or, from older firmware, an RSDT) and the MADT. Our VMM
 * writes them; under QEMU they are QEMU's, installed by SeaBIOS. PVH hands
 * the RSDP's address over in hvm_start_info.rsdp_paddr. Shared by the VMM and
 * the guest, so both sides agree by construction. */
#ifndef GUEST_ACPI_ABI_H
#define GUEST_ACPI_ABI_H

#include <stdint.h>

#define ACPI_RSDP_SIGNATURE "RSD PTR "
#define ACPI_MADT_SIGNATURE "APIC"
#define ACPI_XSDT_SIGNATURE "XSDT"
#define ACPI_LAPIC_BASE 0xfee00000u
#define ACPI_IOAPIC_BASE 0xfec00000u
#define ACPI_MADT_PCAT_COMPAT 1u /* the PC's dual 8259s are present too */

enum {
  ACPI_MADT_LAPIC = 0,
  ACPI_MADT_IOAPIC = 1,
  ACPI_MADT_INT_OVERRIDE = 2,
  ACPI_MADT_X2APIC = 9,
};

#define ACPI_LAPIC_ENABLED 1u

struct acpi_rsdp {
  char signature[8];
  uint8_t checksum; /* over the first 20 bytes */
  char oem_id[6];
  uint8_t revision; /* 0: ACPI 1.0, RSDT only; 2: the fields below are valid */
  uint32_t rsdt_paddr;
  uint32_t length;
  uint64_t xsdt_paddr;
  uint8_t ext_checksum; /* over all `length` bytes */
  uint8_t reserved[3];
} __attribute__((packed));

struct acpi_header {
  char signature[4];
  uint32_t length;
  uint8_t revision;
  uint8_t checksum; /* over `length` bytes */
  char oem_id[6];
  char oem_table_id[8];
  uint32_t oem_revision;
  uint32_t creator_id;
  uint32_t creator_revision;
} __attribute__((packed));

struct acpi_madt {
  struct acpi_header header;
  uint32_t lapic_paddr;
  uint32_t flags;
} __attribute__((packed));

struct acpi_madt_entry {
  uint8_t type;
  uint8_t length;
} __attribute__((packed));

struct acpi_madt_lapic {
  uint8_t type, length; /* 0, 8 */
  uint8_t processor_uid;
  uint8_t apic_id;
  uint32_t flags;
} __attribute__((packed));

struct acpi_madt_x2apic {
  uint8_t type, length; /* 9, 16 */
  uint16_t reserved;
  uint32_t x2apic_id;
  uint32_t flags;
  uint32_t processor_uid;
} __attribute__((packed));

struct acpi_madt_ioapic {
  uint8_t type, length; /* 1, 12 */
  uint8_t ioapic_id;
  uint8_t reserved;
  uint32_t paddr;
  uint32_t gsi_base;
} __attribute__((packed));

struct acpi_madt_override {
  uint8_t type, length; /* 2, 10 */
  uint8_t bus;
  uint8_t source_irq;
  uint32_t gsi;
  uint16_t flags;
} __attribute__((packed));

#endif
