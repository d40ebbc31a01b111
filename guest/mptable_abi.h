/* The Intel MultiProcessor Specification 1.4 tables the VMM writes and the
 * guest reads to find its CPUs (QEMU's SeaBIOS writes the same tables). Shared
 * by the VMM and the guest, so both sides agree by construction. */
#ifndef GUEST_MPTABLE_ABI_H
#define GUEST_MPTABLE_ABI_H

#include <stdint.h>

#define MP_FLOATING_SIGNATURE 0x5f504d5fu /* "_MP_" */
#define MP_CONFIG_SIGNATURE 0x504d4350u   /* "PCMP" */
#define MP_SPEC_REV 4                     /* 1.4 */
#define MP_LAPIC_BASE 0xfee00000u
#define MP_IOAPIC_BASE 0xfec00000u

enum {
  MP_ENTRY_PROCESSOR = 0,
  MP_ENTRY_BUS = 1,
  MP_ENTRY_IOAPIC = 2,
  MP_ENTRY_INTSRC = 3,
  MP_ENTRY_LINTSRC = 4,
};

#define MP_CPU_ENABLED 0x01
#define MP_CPU_BOOT 0x02

struct mp_floating {
  uint32_t signature;
  uint32_t config_paddr;
  uint8_t length; /* in 16-byte units: 1 */
  uint8_t spec_rev;
  uint8_t checksum;
  uint8_t feature[5];
} __attribute__((packed));

struct mp_config {
  uint32_t signature;
  uint16_t length; /* header and entries */
  uint8_t spec_rev;
  uint8_t checksum;
  char oem[8];
  char product[12];
  uint32_t oem_table;
  uint16_t oem_table_size;
  uint16_t entries;
  uint32_t lapic_paddr;
  uint16_t ext_length;
  uint8_t ext_checksum;
  uint8_t reserved;
} __attribute__((packed));

struct mp_processor {
  uint8_t type;
  uint8_t apic_id;
  uint8_t apic_version;
  uint8_t flags;
  uint32_t signature;
  uint32_t features;
  uint32_t reserved[2];
} __attribute__((packed));

struct mp_bus {
  uint8_t type;
  uint8_t bus_id;
  char bus_type[6];
} __attribute__((packed));

struct mp_ioapic {
  uint8_t type;
  uint8_t apic_id;
  uint8_t apic_version;
  uint8_t flags;
  uint32_t paddr;
} __attribute__((packed));

struct mp_intsrc { /* also the local interrupt entry (type 4) */
  uint8_t type;
  uint8_t irq_type; /* 0 INT, 1 NMI, 2 SMI, 3 ExtINT */
  uint16_t irq_flags;
  uint8_t src_bus;
  uint8_t src_irq;
  uint8_t dst_apic;
  uint8_t dst_pin;
} __attribute__((packed));

#endif
