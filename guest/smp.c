/*
 * The other CPUs, started as a PC starts them (Intel SDM vol. 3, 9.4, "MP
 * initialization"). The boot CPU finds the CPUs in the ACPI MADT (our VMM's,
 * or QEMU's; SeaBIOS's MP table lists one CPU per package, so it is not
 * used), switches its LAPIC to x2APIC mode (the LAPIC's
 * MSR interface: no MMIO page to map, wherever RAM ends), copies the real-mode
 * trampoline (entry.S) below 1 MiB and sends each AP INIT, SIPI, SIPI.
 * Each AP comes up in ring 3 (ap_main, boot.c) and runs what smp_run() posts.
 * Only the boot CPU prints.
 */
#include "guest.h"
#include "acpi_abi.h"

#define AP_TRAMPOLINE 0x8000UL /* page-aligned, below 1 MiB, RAM in every PVH memory map we boot with */
#define MSR_APIC_BASE 0x1b
#define APIC_BASE_ENABLE (1ULL << 11)
#define APIC_BASE_X2APIC (1ULL << 10)
#define MSR_X2APIC_ID 0x802
#define MSR_X2APIC_SVR 0x80f
#define MSR_X2APIC_ICR 0x830
#define ICR_INIT 0x4500ULL /* delivery mode INIT, level assert */
#define ICR_SIPI 0x4600ULL /* delivery mode start-up, level assert; | vector */
#define CPUID1_ECX_X2APIC (1u << 21)

extern const char ap_trampoline[], ap_trampoline_end[];

unsigned smp_cpus = 1;
static unsigned table_cpus = 1;          /* enabled processors in the MADT */
static uint8_t ap_apic_ids[MAX_CPUS];    /* the APs we sent INIT-SIPI-SIPI to */
static unsigned aps_sent;
static uint64_t table_paddr;
static const char *problem;              /* why only the boot CPU runs, when it does */
static volatile unsigned ap_online;      /* APs in ring 3 */
static volatile uint8_t cpu_apic_id[MAX_CPUS];

static void (*volatile job_fn)(unsigned, void *);
static void *volatile job_arg;
static volatile unsigned job_seq, job_done;

static inline uint64_t rdmsr(uint32_t msr) {
  uint32_t lo, hi;
  __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
  return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v) {
  __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static uint8_t sum8(const void *p, unsigned n) {
  uint8_t s = 0;
  for (unsigned i = 0; i < n; i++) s = (uint8_t)(s + ((const uint8_t *)p)[i]);
  return s;
}

static int same4(const char *a, const char *b) { return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]; }

static int valid_rsdp(uint64_t a) {
  const struct acpi_rsdp *r = (const void *)(uintptr_t)a;
  return same4(r->signature, "RSD ") && same4(r->signature + 4, "PTR ") && sum8(r, 20) == 0;
}

static uint64_t scan_rsdp(uint64_t from, uint64_t len) {
  for (uint64_t a = from; a + sizeof(struct acpi_rsdp) <= from + len; a += 16)
    if (valid_rsdp(a)) return a;
  return 0;
}

/* PVH names the RSDP in the start info; else where ACPI says to look: the
 * EBDA's first KiB, then 0xe0000-0xfffff. */
static const struct acpi_rsdp *find_rsdp(void) {
  const struct hvm_start_info *si = (const void *)(uintptr_t)pvh_start_info_paddr;
  uint64_t a = 0;
  if (si->version >= 1 && si->rsdp_paddr && valid_rsdp(si->rsdp_paddr)) a = si->rsdp_paddr;
  uint16_t ebda_seg;
  __asm__ volatile("movw 0x40e, %0" : "=r"(ebda_seg)); /* the BDA's EBDA segment (a plain load: GCC warns on address 0x40e) */
  uint64_t ebda = (uint64_t)ebda_seg << 4;
  if (!a && ebda >= 0x80000 && ebda < 0xa0000) a = scan_rsdp(ebda, 1024);
  if (!a) a = scan_rsdp(0xe0000, 0x20000);
  return (const void *)(uintptr_t)a;
}

static const struct acpi_madt *find_madt(const struct acpi_rsdp *r) {
  int wide = r->revision >= 2 && r->xsdt_paddr;
  const struct acpi_header *root = (const void *)(uintptr_t)(wide ? r->xsdt_paddr : r->rsdt_paddr);
  if (!root || sum8(root, root->length) != 0) return 0;
  unsigned step = wide ? 8 : 4, n = (root->length - sizeof *root) / step;
  const uint8_t *e = (const uint8_t *)(root + 1);
  for (unsigned i = 0; i < n; i++, e += step) {
    uint64_t t = wide ? *(const uint64_t *)e : *(const uint32_t *)e;
    const struct acpi_header *h = (const void *)(uintptr_t)t;
    if (t && t < mapped_top && same4(h->signature, ACPI_MADT_SIGNATURE) && sum8(h, h->length) == 0) return (const void *)h;
  }
  return 0;
}

/* The enabled processors other than this one, from the MADT's LAPIC and
 * x2APIC entries. */
static void read_madt(const struct acpi_madt *m, uint8_t self) {
  table_paddr = (uint64_t)(uintptr_t)m;
  table_cpus = 0;
  const uint8_t *e = (const uint8_t *)(m + 1), *end = (const uint8_t *)m + m->header.length;
  for (; e + 2 <= end && ((const struct acpi_madt_entry *)e)->length >= 2; e += ((const struct acpi_madt_entry *)e)->length) {
    uint32_t id, flags;
    if (*e == ACPI_MADT_LAPIC) {
      const struct acpi_madt_lapic *l = (const void *)e;
      id = l->apic_id, flags = l->flags;
    } else if (*e == ACPI_MADT_X2APIC) {
      const struct acpi_madt_x2apic *x = (const void *)e;
      id = x->x2apic_id, flags = x->flags;
    } else {
      continue;
    }
    if (!(flags & ACPI_LAPIC_ENABLED) || id > 0xff) continue;
    table_cpus++;
    if (id != self && aps_sent < MAX_CPUS - 1) ap_apic_ids[aps_sent++] = (uint8_t)id;
  }
}

/* Ring 0. The LAPIC's own ID register, not CPUID's initial APIC ID: where
 * KVM lets ring 3 run CPUID without an exit (PVM), CPUID answers with the
 * host CPU the vCPU happens to run on. */
static int x2apic_on(void) {
  uint32_t r[4];
  cpuid(1, 0, r);
  if (!(r[2] & CPUID1_ECX_X2APIC)) return 0;
  wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
  wrmsr(MSR_X2APIC_SVR, 0x1ff); /* software-enabled, spurious vector 0xff */
  return 1;
}

static uint8_t own_apic_id(void) { return (uint8_t)rdmsr(MSR_X2APIC_ID); }

void smp_start_aps(void) {
  if (!x2apic_on()) {
    problem = "the CPU offers no x2APIC (CPUID.1:ECX[21]), which this guest starts its APs with";
    return;
  }
  cpu_apic_id[0] = own_apic_id();
  const struct acpi_rsdp *r = find_rsdp();
  if (!r) {
    problem = "no ACPI RSDP (none in the PVH start info, the EBDA or 0xe0000-0xfffff)";
    return;
  }
  const struct acpi_madt *m = find_madt(r);
  if (!m) {
    problem = "the ACPI tables hold no valid MADT";
    return;
  }
  read_madt(m, cpu_apic_id[0]);
  if (!aps_sent) return;
  uint8_t *dst = (uint8_t *)AP_TRAMPOLINE;
  for (const char *p = ap_trampoline; p < ap_trampoline_end; p++) *dst++ = (uint8_t)*p;
  for (unsigned i = 0; i < aps_sent; i++) wrmsr(MSR_X2APIC_ICR, (uint64_t)ap_apic_ids[i] << 32 | ICR_INIT);
  for (int round = 0; round < 2; round++)
    for (unsigned i = 0; i < aps_sent; i++)
      wrmsr(MSR_X2APIC_ICR, (uint64_t)ap_apic_ids[i] << 32 | ICR_SIPI | (AP_TRAMPOLINE >> 12));
}

void smp_wait_aps(uint64_t tsc_khz) {
  uint64_t t0 = rdtsc(), limit = tsc_khz ? tsc_khz * 2000 : 1ULL << 34; /* 2 s */
  while (ap_online < aps_sent && rdtsc() - t0 < limit) cpu_relax();
  smp_cpus = 1 + ap_online;
  if (problem) {
    con_printf("smp: 1 CPU: %s\n", problem);
    return;
  }
  con_printf("smp: %u CPU%s running (MADT at %lx lists %u), apic ids", smp_cpus, smp_cpus == 1 ? "" : "s", table_paddr,
             table_cpus);
  for (unsigned c = 0; c < smp_cpus; c++) con_printf(" %u", cpu_apic_id[c]);
  con_printf(", waited %lu us for them\n", tsc_khz ? (rdtsc() - t0) * 1000 / tsc_khz : 0);
  if (ap_online < aps_sent)
    con_printf("smp: %u of %u APs did not reach ring 3 within 2 s of INIT-SIPI-SIPI\n", aps_sent - ap_online, aps_sent);
}

void smp_ap_ring0(unsigned cpu) {
  if (x2apic_on()) cpu_apic_id[cpu] = own_apic_id();
}

void ap_user_main(unsigned cpu) {
  __atomic_fetch_add(&ap_online, 1, __ATOMIC_RELEASE);
  unsigned seen = 0;
  for (;;) {
    unsigned seq;
    while ((seq = __atomic_load_n(&job_seq, __ATOMIC_ACQUIRE)) == seen) cpu_relax();
    seen = seq;
    job_fn(cpu, job_arg);
    __atomic_fetch_add(&job_done, 1, __ATOMIC_RELEASE);
  }
}

void smp_run(void (*fn)(unsigned cpu, void *arg), void *arg) {
  job_fn = fn;
  job_arg = arg;
  job_done = 0;
  __atomic_fetch_add(&job_seq, 1, __ATOMIC_RELEASE);
  fn(0, arg);
  while (__atomic_load_n(&job_done, __ATOMIC_ACQUIRE) != smp_cpus - 1) cpu_relax();
}
