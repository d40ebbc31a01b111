/*
 * The other CPUs, started as a PC starts them (Intel SDM vol. 3, 9.4, "MP
 * initialization"). The boot CPU finds the CPUs in the MP table (the VMM's,
 * or SeaBIOS's under QEMU), switches its LAPIC to x2APIC mode (the LAPIC's
 * MSR interface: no MMIO page to map, wherever RAM ends), copies the real-mode
 * trampoline (entry.S) below 1 MiB and sends each AP INIT, SIPI, SIPI.
 * Each AP comes up in ring 3 (ap_main, boot.c) and runs what smp_run() posts.
 * Only the boot CPU prints.
 */
#include "guest.h"
#include "mptable_abi.h"

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
static unsigned table_cpus = 1;          /* enabled processors in the MP table */
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

static const struct mp_floating *scan(uint64_t from, uint64_t len) {
  for (uint64_t a = from; a + sizeof(struct mp_floating) <= from + len; a += 16) {
    const struct mp_floating *f = (const void *)(uintptr_t)a;
    if (f->signature == MP_FLOATING_SIGNATURE && f->length == 1 && sum8(f, 16) == 0) return f;
  }
  return 0;
}

/* Where the MP spec says to look: the EBDA's first KiB, the last KiB of base
 * memory, then the BIOS ROM area. */
static const struct mp_floating *find_floating(void) {
  uint16_t ebda_seg;
  __asm__ volatile("movw 0x40e, %0" : "=r"(ebda_seg)); /* the BDA's EBDA segment (a plain load: GCC warns on address 0x40e) */
  uint64_t ebda = (uint64_t)ebda_seg << 4;
  const struct mp_floating *f = 0;
  if (ebda >= 0x80000 && ebda < 0xa0000) f = scan(ebda, 1024);
  if (!f) f = scan(0x9fc00, 1024);
  if (!f) f = scan(0xf0000, 0x10000);
  return f;
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

/* The enabled processors other than this one; 0 if the table is unusable. */
static int read_table(const struct mp_floating *f) {
  const struct mp_config *c = (const void *)(uintptr_t)f->config_paddr;
  if (!f->config_paddr || c->signature != MP_CONFIG_SIGNATURE || sum8(c, c->length) != 0) {
    problem = "the MP floating pointer names no valid configuration table";
    return 0;
  }
  table_paddr = f->config_paddr;
  const uint8_t *e = (const uint8_t *)(c + 1), *end = (const uint8_t *)c + c->length;
  uint8_t self = own_apic_id();
  table_cpus = 0;
  for (unsigned i = 0; i < c->entries && e < end; i++) {
    if (*e != MP_ENTRY_PROCESSOR) {
      e += 8;
      continue;
    }
    const struct mp_processor *p = (const void *)e;
    e += sizeof *p;
    if (!(p->flags & MP_CPU_ENABLED)) continue;
    table_cpus++;
    if (p->apic_id != self && aps_sent < MAX_CPUS - 1) ap_apic_ids[aps_sent++] = p->apic_id;
  }
  return 1;
}

void smp_start_aps(void) {
  if (!x2apic_on()) {
    problem = "the CPU offers no x2APIC (CPUID.1:ECX[21]), which this guest starts its APs with";
    return;
  }
  cpu_apic_id[0] = own_apic_id();
  const struct mp_floating *f = find_floating();
  if (!f) {
    problem = "no MP table (no \"_MP_\" floating pointer in the EBDA, base memory's last KiB or 0xf0000-0xfffff)";
    return;
  }
  if (!read_table(f) || !aps_sent) return;
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
  con_printf("smp: %u CPUs running (MP table at %lx lists %u), apic ids", smp_cpus, table_paddr, table_cpus);
  for (unsigned c = 0; c < smp_cpus; c++) con_printf(" %u", cpu_apic_id[c]);
  con_printf(", up in %lu us\n", tsc_khz ? (rdtsc() - t0) * 1000 / tsc_khz : 0);
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
