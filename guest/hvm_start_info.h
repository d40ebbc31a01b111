/* The PVH boot ABI shared by the guest (C) and the VMM (C++): struct
 * hvm_start_info and its memory map, as in Xen's
 * xen/include/public/arch-x86/hvm/start_info.h. */
#ifndef GUEST_HVM_START_INFO_H
#define GUEST_HVM_START_INFO_H

#include <stdint.h>

#define HVM_START_MAGIC 0x336ec578u
#define HVM_MEMMAP_TYPE_RAM 1
#define HVM_MEMMAP_TYPE_RESERVED 2

struct hvm_start_info {
  uint32_t magic;
  uint32_t version; /* 1: the memmap fields are valid */
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};

struct hvm_memmap_table_entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t reserved;
};

#endif
