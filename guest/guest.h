/* Shared declarations of the tiny guest. Freestanding: no libc. */
#ifndef GUEST_GUEST_H
#define GUEST_GUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes written to the isa-debug-exit port (QEMU reports (code << 1) | 1). */
enum {
  EXIT_OK = 0,
  EXIT_VERIFY_FAIL = 1,
  EXIT_BAD_CONFIG = 2,
  EXIT_EXCEPTION = 3,
};

#define PAGE_SIZE 4096UL
#define MIB (1024UL * 1024UL)
#define GIB (1024ULL * MIB)

#include "hvm_start_info.h"

/* Set up by boot.c before ring 3 starts. */
extern uint32_t pvh_start_info_paddr;
extern uint64_t ram_top;            /* end of the highest RAM range */
extern uint64_t mapped_top;         /* end of the identity map */

/* port I/O: ring 3 runs with IOPL 3, so these work there too. */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
  __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

/* console.c: COM1 16550, polled. */
void con_putc(char c);
void con_flush(void);
void con_write(const char *s);
void con_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void guest_exit(int code);

/* cmdline.c */
void cmdline_init(const char *cmdline);
const char *cmdline_raw(void);
int cmdline_str(const char *key, char *out, size_t out_size);  /* 1 if found */
int cmdline_u64(const char *key, uint64_t *out);               /* 1 found, 0 absent, -1 malformed */
int str_eq(const char *a, const char *b);

/* clock.c: TSC frequency from kvmclock (KVM, QEMU) or CPUID leaf 0x15. */
void clock_init_ring0(void);
uint64_t clock_tsc_khz(const char **source);

/* smp.c: the other CPUs, from the ACPI MADT, started with INIT-SIPI-SIPI. */
#define MAX_CPUS 8
void smp_start_aps(void);            /* ring 0, boot CPU: send the IPIs */
void smp_wait_aps(uint64_t tsc_khz); /* ring 3, boot CPU: wait for them, print what came up */
void smp_ap_ring0(unsigned cpu);     /* ring 0, each AP: its LAPIC */
void ap_user_main(unsigned cpu);     /* ring 3, each AP: run what smp_run() posts */
/* Runs fn(cpu, arg) on every started CPU (the caller is CPU 0) and returns when all did. */
void smp_run(void (*fn)(unsigned cpu, void *arg), void *arg);
extern unsigned smp_cpus; /* CPUs running, the boot CPU included */

static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

/* touch.c */
int workload_touch(void);

#endif
