/*
 * workload=touch size=MIB seconds=S [share=disjoint|shared]
 *
 * Fill: every 4 KiB page of the buffer gets {index, generation, checksum, pattern}.
 * Touch: for S seconds rewrite pseudo-random pages with the next generation,
 *        timing each rewrite with rdtsc into a log2 microsecond histogram.
 * Verify: every page must carry its index, the generation recorded in a
 *        separate table (a stale page from an old copy fails here) and a
 *        pattern and checksum that match. Runs entirely in ring 3.
 * Exit cost: after verifying, EXITCOST gives the median and fastest of 256
 *        CPUIDs (a vCPU exit handled in the host kernel and back) and 256
 *        writes to port 0x80 (an exit to the VMM's user space and back), the
 *        vCPU's own share of any fault's latency, measured in the same run
 *        where the guest ended (on a migration's destination).
 * Slow touches (>= record_us, default 32) are kept as {when, page, latency}
 * and printed at the end (SLOW/SLOWREC lines), after verification, so that
 * a VMM can join each one with its own record of the fault behind it.
 * Several CPUs: CPU 0 fills the buffer, then every CPU touches at once from
 * one start to one end. share=disjoint: each CPU its own slice of the buffer
 * and its own random sequence. share=shared: every CPU the whole buffer in
 * lockstep, one page a round: each reads the round's page (where they all
 * fault on it together), the last to arrive rewrites it and opens the next
 * round, so a touch's latency includes waiting for the other CPUs' reads.
 * Histograms, counts and the slow record are kept per CPU; HIST sums them,
 * HISTCPU gives each CPU's.
 */
#include "guest.h"

#define WORDS (PAGE_SIZE / 8)
#define HIST_BUCKETS 32 /* [0,1us), [1,2us), [2,4us) ... */
#define SLOW_US 100

#define SLOW_RECORDS 32768 /* 384 KiB of guest BSS; more are counted as dropped */
#define RECS_PER_LINE 8

extern char __image_end[];

struct slow_touch {
  uint32_t t_us; /* since the touch loop started */
  uint32_t page; /* index in the buffer */
  uint32_t us;   /* the touch's latency */
};
static struct slow_touch slow_log[SLOW_RECORDS];

struct slow_stats {
  uint64_t threshold_us, records, dropped;
  uint64_t max_us, max_t_us, max_page;
};

struct region {
  uint32_t *gen;    /* expected generation per page */
  uint64_t *pages;  /* npages * WORDS words */
  uint64_t npages;
};

/* share=shared: the round every CPU is in, how many have read its page, and
 * whether the last round has been (the last arriver decides, so that all
 * CPUs stop after the same round). */
static volatile uint64_t round_now;
static volatile unsigned round_arrived;
static volatile int rounds_over;

/* What one CPU does and sees; CPU 0's seed is the one-CPU guest's. */
struct cpu_touch {
  uint64_t first, npages; /* the pages it touches: [first, first + npages) */
  uint64_t rng;
  uint64_t hist[HIST_BUCKETS];
  struct slow_stats st;
  struct slow_touch *log; /* its share of slow_log */
  uint64_t log_cap;
  volatile uint64_t touches;
  uint64_t slow;
} __attribute__((aligned(64)));

static struct cpu_touch cpu_work[MAX_CPUS];

struct touch_job {
  struct region *r;
  uint64_t start, end, khz;
  int shared;
};

static uint64_t rng_next(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545f4914f6cdd1dULL;
}

static uint64_t seed_of(uint64_t index, uint64_t gen) {
  uint64_t z = index * 0x9e3779b97f4a7c15ULL + gen * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  return z ^ (z >> 31);
}

static inline uint64_t rotl5(uint64_t x) { return (x << 5) | (x >> 59); }

static void write_page(uint64_t *p, uint64_t index, uint64_t gen) {
  uint64_t v = seed_of(index, gen), sum = index ^ (gen << 32);
  for (uint64_t i = 3; i < WORDS; i++, v += 0x632be59bd9b4e019ULL) {
    p[i] = v;
    sum = rotl5(sum) + v;
  }
  p[0] = index;
  p[1] = gen;
  p[2] = sum;
}

/* Returns 0 if the page is intact, else a short reason. */
static const char *check_page(const uint64_t *p, uint64_t index, uint64_t gen) {
  if (p[0] != index) return "index";
  if (p[1] != gen) return "generation";
  uint64_t v = seed_of(index, gen), sum = index ^ (gen << 32);
  for (uint64_t i = 3; i < WORDS; i++, v += 0x632be59bd9b4e019ULL) {
    if (p[i] != v) return "pattern";
    sum = rotl5(sum) + v;
  }
  return p[2] == sum ? 0 : "checksum";
}

static int place_region(struct region *r, uint64_t size_mib) {
  const struct hvm_start_info *si = (const void *)(uintptr_t)pvh_start_info_paddr;
  const struct hvm_memmap_table_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
  uint64_t base = ((uint64_t)(uintptr_t)__image_end + 2 * MIB - 1) & ~(2 * MIB - 1);
  r->npages = size_mib * MIB / PAGE_SIZE;
  uint64_t gen_bytes = (r->npages * 4 + 2 * MIB - 1) & ~(2 * MIB - 1);
  uint64_t end = base + gen_bytes + size_mib * MIB;
  for (uint32_t i = 0; i < si->memmap_entries; i++) {
    if (e[i].type != HVM_MEMMAP_TYPE_RAM || base < e[i].addr || base >= e[i].addr + e[i].size) continue;
    if (end > e[i].addr + e[i].size || end > mapped_top) break;
    r->gen = (uint32_t *)(uintptr_t)base;
    r->pages = (uint64_t *)(uintptr_t)(base + gen_bytes);
    con_printf("touch: buffer %lu MiB at %lx, %lu pages, generation table at %lx\n", size_mib,
               (uint64_t)(uintptr_t)r->pages, r->npages, base);
    return 1;
  }
  con_printf("touch: size=%lu MiB does not fit in guest RAM (needs %lu MiB from %lx; ram_top=%lu MiB)\n", size_mib,
             (end - base) / MIB, base, ram_top / MIB);
  return 0;
}

#define EXIT_SAMPLES 256

static void sort_u64(uint64_t *v, unsigned n) {
  for (unsigned i = 1; i < n; i++)
    for (unsigned j = i; j && v[j - 1] > v[j]; j--) {
      uint64_t t = v[j];
      v[j] = v[j - 1], v[j - 1] = t;
    }
}

/* Nanoseconds of the median and fastest of EXIT_SAMPLES exits of one kind. */
static void exit_cost(int pio, uint64_t khz, uint64_t *p50_ns, uint64_t *min_ns) {
  static uint64_t ns[EXIT_SAMPLES];
  uint32_t regs[4];
  for (unsigned i = 0; i < EXIT_SAMPLES; i++) {
    uint64_t t0 = rdtsc();
    if (pio) outb(0x80, (uint8_t)i);
    else cpuid(0, 0, regs);
    ns[i] = (rdtsc() - t0) * 1000000 / khz;
  }
  sort_u64(ns, EXIT_SAMPLES);
  *p50_ns = ns[EXIT_SAMPLES / 2];
  *min_ns = ns[0];
}

static void print_exit_cost(uint64_t khz) {
  uint64_t c50, cmin, p50, pmin;
  exit_cost(0, khz, &c50, &cmin);
  exit_cost(1, khz, &p50, &pmin);
  con_printf("EXITCOST samples=%u cpuid_p50_ns=%lu cpuid_min_ns=%lu pio_p50_ns=%lu pio_min_ns=%lu\n", EXIT_SAMPLES,
             c50, cmin, p50, pmin);
}

static void fill(struct region *r, uint64_t khz) {
  uint64_t t0 = rdtsc();
  for (uint64_t i = 0; i < r->npages; i++) {
    r->gen[i] = 1;
    write_page(r->pages + i * WORDS, i, 1);
  }
  con_printf("touch: filled %lu pages in %lu ms\n", r->npages, (rdtsc() - t0) / khz);
}

static unsigned bucket_of(uint64_t us) {
  unsigned b = 0;
  while (us && b < HIST_BUCKETS - 1) us >>= 1, b++;
  return b;
}

static void record_touch(struct cpu_touch *w, uint64_t t_us, uint64_t page, uint64_t us) {
  struct slow_stats *st = &w->st;
  if (us > st->max_us) st->max_us = us, st->max_t_us = t_us, st->max_page = page;
  if (us < st->threshold_us) return;
  if (st->records == w->log_cap) {
    st->dropped++;
    return;
  }
  w->log[st->records++] = (struct slow_touch){(uint32_t)t_us, (uint32_t)page, (uint32_t)us};
}

/* share=shared: read the round's page, then either rewrite it (the last CPU
 * to arrive) or wait for the one that does. Returns 0 after the last round. */
static int shared_touch(struct region *r, uint64_t idx, uint64_t round, uint64_t end) {
  (void)*(volatile uint64_t *)(r->pages + idx * WORDS);
  if (__atomic_add_fetch(&round_arrived, 1, __ATOMIC_ACQ_REL) == smp_cpus) {
    round_arrived = 0;
    uint32_t gen = ++r->gen[idx];
    write_page(r->pages + idx * WORDS, idx, gen);
    if (rdtsc() >= end) rounds_over = 1;
    __atomic_store_n(&round_now, round + 1, __ATOMIC_RELEASE);
  } else {
    while (__atomic_load_n(&round_now, __ATOMIC_ACQUIRE) == round) cpu_relax();
  }
  return !__atomic_load_n(&rounds_over, __ATOMIC_ACQUIRE);
}

static uint64_t total_touches(void) {
  uint64_t n = 0;
  for (unsigned c = 0; c < smp_cpus; c++) n += cpu_work[c].touches;
  return n;
}

/* One CPU's touches; CPU 0 also prints the progress once a second. */
static void touch_cpu(unsigned cpu, void *arg) {
  const struct touch_job *j = arg;
  struct region *r = j->r;
  struct cpu_touch *w = &cpu_work[cpu];
  uint64_t hz = j->khz * 1000, next = j->start + hz;
  int more = 1;
  for (uint64_t now = rdtsc(), round = 0; more && (j->shared || now < j->end); round++) {
    uint64_t idx = w->first + rng_next(&w->rng) % w->npages;
    uint64_t t0 = rdtsc();
    if (j->shared) {
      more = shared_touch(r, idx, round, j->end);
    } else {
      uint32_t gen = ++r->gen[idx];
      write_page(r->pages + idx * WORDS, idx, gen);
    }
    now = rdtsc();
    uint64_t us = (now - t0) * 1000 / j->khz;
    w->hist[bucket_of(us)]++;
    w->touches++;
    if (us >= SLOW_US) w->slow++;
    record_touch(w, (t0 - j->start) * 1000 / j->khz, idx, us);
    if (cpu == 0 && now >= next) {
      con_printf("touch: t=%lus touches=%lu slow(>=%uus)=%lu max=%luus\n", (now - j->start) / hz, total_touches(),
                 SLOW_US, w->slow, w->st.max_us);
      next += hz;
    }
  }
}

/* Each CPU's part, seed and share of the slow record. */
static void plan_cpus(const struct region *r, int shared, uint64_t threshold_us) {
  for (unsigned c = 0; c < smp_cpus; c++) {
    struct cpu_touch *w = &cpu_work[c];
    w->first = shared ? 0 : r->npages * c / smp_cpus;
    w->npages = shared ? r->npages : r->npages * (c + 1) / smp_cpus - w->first;
    w->rng = 0x9e3779b97f4a7c15ULL;
    if (!shared && c) w->rng = seed_of(c, 0) | 1;
    w->log_cap = SLOW_RECORDS / smp_cpus;
    w->log = slow_log + w->log_cap * c;
    w->st = (struct slow_stats){.threshold_us = threshold_us};
  }
}

static void touch_all(struct region *r, uint64_t seconds, uint64_t khz, int shared, struct slow_stats *st) {
  struct touch_job j = {r, 0, 0, khz, shared};
  round_now = 0, round_arrived = 0, rounds_over = 0;
  j.start = rdtsc();
  j.end = j.start + seconds * khz * 1000;
  smp_run(touch_cpu, &j);
  uint64_t slow = 0;
  for (unsigned c = 0; c < smp_cpus; c++) {
    const struct cpu_touch *w = &cpu_work[c];
    slow += w->slow;
    st->records += w->st.records;
    st->dropped += w->st.dropped;
    if (w->st.max_us >= st->max_us) st->max_us = w->st.max_us, st->max_t_us = w->st.max_t_us, st->max_page = w->st.max_page;
    if (smp_cpus > 1)
      con_printf("touch: cpu=%u pages=[%lu,%lu) touches=%lu slow(>=%uus)=%lu max=%luus\n", c, w->first,
                 w->first + w->npages, w->touches, SLOW_US, w->slow, w->st.max_us);
  }
  con_printf("touch: done touches=%lu slow(>=%uus)=%lu max=%luus\n", total_touches(), SLOW_US, slow, st->max_us);
}

/* SLOW: the summary; SLOWREC: records as t_us:page:us, RECS_PER_LINE a line. */
static void print_slow(const struct region *r, const struct slow_stats *st) {
  con_printf("SLOW threshold_us=%lu records=%lu dropped=%lu buffer_gpa=%lx page_size=%lu max_us=%lu max_t_us=%lu "
             "max_page=%lu\n",
             st->threshold_us, st->records, st->dropped, (uint64_t)(uintptr_t)r->pages, PAGE_SIZE, st->max_us,
             st->max_t_us, st->max_page);
  for (unsigned c = 0; c < smp_cpus; c++) {
    const struct cpu_touch *w = &cpu_work[c];
    for (uint64_t i = 0; i < w->st.records; i += RECS_PER_LINE) {
      con_write("SLOWREC");
      for (uint64_t k = i; k < w->st.records && k < i + RECS_PER_LINE; k++)
        con_printf(" %u:%u:%u", w->log[k].t_us, w->log[k].page, w->log[k].us);
      con_putc('\n');
    }
  }
}

static int verify(const struct region *r) {
  uint64_t bad = 0;
  for (uint64_t i = 0; i < r->npages; i++) {
    const uint64_t *p = r->pages + i * WORDS;
    const char *why = check_page(p, i, r->gen[i]);
    if (!why) continue;
    if (!bad)
      con_printf("VERIFY FAIL page=%lu reason=%s expected_gen=%u found_index=%lu found_gen=%lu\n", i, why, r->gen[i],
                 p[0], p[1]);
    bad++;
  }
  if (bad) {
    con_printf("VERIFY FAIL bad_pages=%lu of %lu cpus=%u\n", bad, r->npages, smp_cpus);
    return 0;
  }
  con_printf("VERIFY OK pages=%lu cpus=%u\n", r->npages, smp_cpus);
  return 1;
}

static void print_hist(void) {
  con_printf("HIST touch latency seen by the guest (rdtsc), log2 microsecond buckets, all CPUs\n");
  for (unsigned b = 0; b < HIST_BUCKETS; b++) {
    uint64_t n = 0;
    for (unsigned c = 0; c < smp_cpus; c++) n += cpu_work[c].hist[b];
    if (!n) continue;
    uint64_t lo = b ? 1ULL << (b - 1) : 0, hi = 1ULL << b;
    con_printf("HIST lo_us=%lu hi_us=%lu count=%lu\n", lo, hi, n);
  }
  for (unsigned c = 0; c < smp_cpus && smp_cpus > 1; c++)
    for (unsigned b = 0; b < HIST_BUCKETS; b++)
      if (cpu_work[c].hist[b])
        con_printf("HISTCPU cpu=%u lo_us=%lu hi_us=%lu count=%lu\n", c, b ? 1UL << (b - 1) : 0, 1UL << b,
                   cpu_work[c].hist[b]);
}

int workload_touch(void) {
  uint64_t size = 64, seconds = 2;
  struct slow_stats st = {.threshold_us = 32};
  char share[16] = "disjoint";
  if (cmdline_u64("size", &size) < 0 || cmdline_u64("seconds", &seconds) < 0 ||
      cmdline_u64("record_us", &st.threshold_us) < 0 || size == 0) {
    con_printf("touch: size=, seconds= and record_us= take positive decimal numbers (size in MiB)\n");
    return EXIT_BAD_CONFIG;
  }
  cmdline_str("share", share, sizeof share);
  if (!str_eq(share, "disjoint") && !str_eq(share, "shared")) {
    con_printf("touch: share=%s: expected disjoint or shared\n", share);
    return EXIT_BAD_CONFIG;
  }
  int shared = str_eq(share, "shared");
  const char *src;
  uint64_t khz = clock_tsc_khz(&src);
  if (!khz) {
    con_printf("touch: cannot determine the TSC frequency (no kvmclock, no CPUID 0x15): pass tsc_khz=\n");
    return EXIT_BAD_CONFIG;
  }
  con_printf("touch: tsc %lu kHz (from %s), size=%lu MiB seconds=%lu cpus=%u share=%s\n", khz, src, size, seconds,
             smp_cpus, share);
  struct region r;
  if (!place_region(&r, size)) return EXIT_BAD_CONFIG;
  if (r.npages < smp_cpus) {
    con_printf("touch: %lu pages cannot be shared among %u CPUs\n", r.npages, smp_cpus);
    return EXIT_BAD_CONFIG;
  }
  plan_cpus(&r, shared, st.threshold_us);
  fill(&r, khz);
  touch_all(&r, seconds, khz, shared, &st);
  int ok = verify(&r);
  print_exit_cost(khz);
  print_hist();
  print_slow(&r, &st);
  return ok ? EXIT_OK : EXIT_VERIFY_FAIL;
}
