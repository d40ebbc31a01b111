/*
 * workload=touch size=MIB seconds=S
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

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng_next(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dULL;
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

static void record_touch(struct slow_stats *st, uint64_t t_us, uint64_t page, uint64_t us) {
  if (us > st->max_us) st->max_us = us, st->max_t_us = t_us, st->max_page = page;
  if (us < st->threshold_us) return;
  if (st->records == SLOW_RECORDS) {
    st->dropped++;
    return;
  }
  slow_log[st->records++] = (struct slow_touch){(uint32_t)t_us, (uint32_t)page, (uint32_t)us};
}

static void touch_loop(struct region *r, uint64_t seconds, uint64_t khz, uint64_t hist[HIST_BUCKETS],
                       struct slow_stats *st) {
  uint64_t start = rdtsc(), hz = khz * 1000, end = start + seconds * hz, next = start + hz;
  uint64_t touches = 0, slow = 0;
  for (uint64_t now = start; now < end;) {
    uint64_t idx = rng_next() % r->npages;
    uint64_t t0 = rdtsc();
    uint32_t gen = ++r->gen[idx];
    write_page(r->pages + idx * WORDS, idx, gen);
    now = rdtsc();
    uint64_t us = (now - t0) * 1000 / khz;
    hist[bucket_of(us)]++;
    touches++;
    if (us >= SLOW_US) slow++;
    record_touch(st, (t0 - start) * 1000 / khz, idx, us);
    if (now >= next) {
      con_printf("touch: t=%lus touches=%lu slow(>=%uus)=%lu max=%luus\n", (now - start) / hz, touches, SLOW_US, slow,
                 st->max_us);
      next += hz;
    }
  }
  con_printf("touch: done touches=%lu slow(>=%uus)=%lu max=%luus\n", touches, SLOW_US, slow, st->max_us);
}

/* SLOW: the summary; SLOWREC: records as t_us:page:us, RECS_PER_LINE a line. */
static void print_slow(const struct region *r, const struct slow_stats *st) {
  con_printf("SLOW threshold_us=%lu records=%lu dropped=%lu buffer_gpa=%lx page_size=%lu max_us=%lu max_t_us=%lu "
             "max_page=%lu\n",
             st->threshold_us, st->records, st->dropped, (uint64_t)(uintptr_t)r->pages, PAGE_SIZE, st->max_us,
             st->max_t_us, st->max_page);
  for (uint64_t i = 0; i < st->records; i += RECS_PER_LINE) {
    con_write("SLOWREC");
    for (uint64_t j = i; j < st->records && j < i + RECS_PER_LINE; j++)
      con_printf(" %u:%u:%u", slow_log[j].t_us, slow_log[j].page, slow_log[j].us);
    con_putc('\n');
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
    con_printf("VERIFY FAIL bad_pages=%lu of %lu\n", bad, r->npages);
    return 0;
  }
  con_printf("VERIFY OK pages=%lu\n", r->npages);
  return 1;
}

static void print_hist(const uint64_t hist[HIST_BUCKETS]) {
  con_printf("HIST touch latency seen by the guest (rdtsc), log2 microsecond buckets\n");
  for (unsigned b = 0; b < HIST_BUCKETS; b++) {
    if (!hist[b]) continue;
    uint64_t lo = b ? 1ULL << (b - 1) : 0, hi = 1ULL << b;
    con_printf("HIST lo_us=%lu hi_us=%lu count=%lu\n", lo, hi, hist[b]);
  }
}

int workload_touch(void) {
  uint64_t size = 64, seconds = 2, hist[HIST_BUCKETS] = {0};
  struct slow_stats st = {.threshold_us = 32};
  if (cmdline_u64("size", &size) < 0 || cmdline_u64("seconds", &seconds) < 0 ||
      cmdline_u64("record_us", &st.threshold_us) < 0 || size == 0) {
    con_printf("touch: size=, seconds= and record_us= take positive decimal numbers (size in MiB)\n");
    return EXIT_BAD_CONFIG;
  }
  const char *src;
  uint64_t khz = clock_tsc_khz(&src);
  if (!khz) {
    con_printf("touch: cannot determine the TSC frequency (no kvmclock, no CPUID 0x15): pass tsc_khz=\n");
    return EXIT_BAD_CONFIG;
  }
  con_printf("touch: tsc %lu kHz (from %s), size=%lu MiB seconds=%lu\n", khz, src, size, seconds);
  struct region r;
  if (!place_region(&r, size)) return EXIT_BAD_CONFIG;
  fill(&r, khz);
  touch_loop(&r, seconds, khz, hist, &st);
  int ok = verify(&r);
  print_exit_cost(khz);
  print_hist(hist);
  print_slow(&r, &st);
  return ok ? EXIT_OK : EXIT_VERIFY_FAIL;
}
