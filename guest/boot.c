/*
 * Ring-0 setup, kept to the minimum: on hosts whose KVM emulates ring-0 guest
 * code (PVM), every instruction here is ~100x slower than in ring 3. So ring 0
 * only maps RAM, installs TSS + IDT (so a fault in ring 3 is reported, not a
 * triple fault), arms kvmclock, starts the other CPUs (smp.c) and leaves for
 * ring 3 with IOPL 3. Each AP installs its own TSS and the shared IDT in
 * ap_main() and leaves for ring 3 too.
 */
#include "guest.h"

#define PDE_2M_USER 0x87ULL  /* P | RW | US | PS */
#define PTE_TABLE_USER 0x7ULL /* P | RW | US */
#define MAX_MAPPED_GIB 64
#define IOMAP_BYTES (0x600 / 8) /* ports 0..0x5ff */

extern uint64_t pml4[512];
extern uint64_t pdpt[512];
extern uint64_t page_dirs[MAX_MAPPED_GIB][512];
extern uint64_t gdt64[];
extern const uint64_t exc_stub_table[22];
extern void enter_user(uint64_t rip, uint64_t rsp, uint64_t arg);
void user_main(void);

uint64_t ram_top;
uint64_t mapped_top = GIB; /* entry.S mapped the first GiB */

struct tss64 {
  uint32_t reserved0;
  uint64_t rsp[3];
  uint64_t reserved1;
  uint64_t ist[7];
  uint64_t reserved2;
  uint16_t reserved3;
  uint16_t iomap_base;
  uint8_t iomap[IOMAP_BYTES + 1]; /* +1: the CPU reads a trailing 0xff byte */
} __attribute__((packed));

struct idt_gate {
  uint16_t offset_lo;
  uint16_t selector;
  uint8_t ist;
  uint8_t type_attr;
  uint16_t offset_mid;
  uint32_t offset_hi;
  uint32_t reserved;
} __attribute__((packed));

static struct tss64 tss[MAX_CPUS] __attribute__((aligned(16)));
static struct idt_gate idt[32] __attribute__((aligned(16)));
static uint8_t exception_stack[MAX_CPUS][8192] __attribute__((aligned(16)));
static uint8_t user_stack[MAX_CPUS][65536] __attribute__((aligned(16)));

static void find_ram_top(const struct hvm_start_info *si) {
  ram_top = 0;
  if (si->version < 1 || !si->memmap_paddr) return;
  const struct hvm_memmap_table_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
  for (uint32_t i = 0; i < si->memmap_entries; i++)
    if (e[i].type == HVM_MEMMAP_TYPE_RAM && e[i].addr + e[i].size > ram_top) ram_top = e[i].addr + e[i].size;
}

static void map_all_ram(void) {
  uint64_t gib = (ram_top + GIB - 1) / GIB;
  if (gib > MAX_MAPPED_GIB) gib = MAX_MAPPED_GIB;
  for (uint64_t g = 1; g < gib; g++) {
    for (uint64_t i = 0; i < 512; i++) page_dirs[g][i] = (g * GIB + i * 2 * MIB) | PDE_2M_USER;
    pdpt[g] = (uint64_t)(uintptr_t)page_dirs[g] | PTE_TABLE_USER;
  }
  if (gib > 1) mapped_top = gib * GIB;
}

static void install_tss(unsigned cpu) {
  struct tss64 *t = &tss[cpu];
  t->rsp[0] = (uint64_t)(uintptr_t)(exception_stack[cpu] + sizeof exception_stack[cpu]);
  /* IOPL 3 alone should let ring 3 use the ports, but some KVMs (PVM) do not
   * honour a guest's IOPL; the I/O permission bitmap grants COM1 and the exit
   * port explicitly, which every x86 implementation must check. */
  t->iomap_base = (uint16_t)__builtin_offsetof(struct tss64, iomap);
  for (unsigned i = 0; i <= IOMAP_BYTES; i++) t->iomap[i] = 0xff;
  t->iomap[0x3f8 / 8] = 0x00;             /* COM1 0x3f8..0x3ff */
  t->iomap[0x501 / 8] &= (uint8_t)~0x06;  /* debug exit 0x501..0x502 */
  t->iomap[0x80 / 8] &= (uint8_t)~0x01;   /* POST port 0x80: touch.c times exits with it */
  uint64_t base = (uint64_t)(uintptr_t)t, limit = sizeof *t - 1;
  unsigned slot = 5 + 2 * cpu; /* selector 0x28 + 16 * cpu */
  gdt64[slot] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) | (((limit >> 16) & 0xf) << 48) |
                (((base >> 24) & 0xff) << 56);
  gdt64[slot + 1] = base >> 32;
  __asm__ volatile("ltr %w0" ::"r"((uint16_t)(0x28 + 16 * cpu)));
}

static void fill_idt(void) {
  for (int v = 0; v < 22; v++) {
    uint64_t h = exc_stub_table[v];
    idt[v] = (struct idt_gate){(uint16_t)h, 0x08, 0, 0x8e, (uint16_t)(h >> 16), (uint32_t)(h >> 32), 0};
  }
}

static void load_idt(void) {
  struct {
    uint16_t limit;
    uint64_t base;
  } __attribute__((packed)) idtr = {sizeof idt - 1, (uint64_t)(uintptr_t)idt};
  __asm__ volatile("lidt %0" ::"m"(idtr));
}

void boot_main(void) {
  const struct hvm_start_info *si = (const void *)(uintptr_t)pvh_start_info_paddr;
  if (si->magic != HVM_START_MAGIC) {
    con_write("guest: bad hvm_start_info magic, not booted through PVH\n");
    guest_exit(EXIT_BAD_CONFIG);
  }
  find_ram_top(si);
  map_all_ram();
  install_tss(0);
  fill_idt();
  load_idt();
  clock_init_ring0();
  smp_start_aps();
  enter_user((uint64_t)(uintptr_t)user_main, (uint64_t)(uintptr_t)(user_stack[0] + sizeof user_stack[0]), 0);
}

/* An AP, from ap_long_entry (entry.S) on its own 8 KiB stack. */
void ap_main(unsigned cpu) {
  if (cpu >= MAX_CPUS) for (;;) __asm__ volatile("hlt");
  install_tss(cpu);
  load_idt();
  smp_ap_ring0(cpu);
  enter_user((uint64_t)(uintptr_t)ap_user_main, (uint64_t)(uintptr_t)(user_stack[cpu] + sizeof user_stack[cpu]), cpu);
}

struct exc_frame {
  uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

void exception_handler(const struct exc_frame *f) {
  uint64_t cr2;
  __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
  con_printf("guest: EXCEPTION vector=%lu error=%lx rip=%lx cs=%lx rflags=%lx rsp=%lx cr2=%lx\n", f->vector, f->error, f->rip,
             f->cs, f->rflags, f->rsp, cr2);
  guest_exit(EXIT_EXCEPTION);
}
