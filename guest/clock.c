/*
 * TSC frequency, so touch timings can be printed in microseconds.
 * KVM (under our VMM and under QEMU) offers kvmclock: once its MSR points at a
 * pvclock_vcpu_time_info, KVM fills tsc_to_system_mul/tsc_shift, from which the
 * TSC rate follows exactly as Linux's pvclock_tsc_khz() computes it. Without
 * kvmclock we fall back to CPUID leaf 0x15, then to tsc_khz= on the command line.
 */
#include "guest.h"

#define KVM_CPUID_SIGNATURE 0x40000000u
#define KVM_CPUID_FEATURES 0x40000001u
#define KVM_FEATURE_CLOCKSOURCE (1u << 0)
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)
#define MSR_KVM_SYSTEM_TIME 0x12
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01

struct pvclock_vcpu_time_info {
  volatile uint32_t version;
  uint32_t pad0;
  uint64_t tsc_timestamp;
  uint64_t system_time;
  volatile uint32_t tsc_to_system_mul;
  volatile int8_t tsc_shift;
  uint8_t flags;
  uint8_t pad[2];
};

static struct pvclock_vcpu_time_info pvclock __attribute__((aligned(64)));
static int have_kvmclock;

static int is_kvm(void) {
  uint32_t r[4];
  cpuid(KVM_CPUID_SIGNATURE, 0, r);
  return r[1] == 0x4b4d564b && r[2] == 0x564b4d56 && r[3] == 0x0000004d; /* "KVMKVMKVM\0\0\0" */
}

static inline void wrmsr(uint32_t msr, uint64_t v) {
  __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

/* Ring 0 only: wrmsr. KVM fills the structure on the next guest entry. */
void clock_init_ring0(void) {
  if (!is_kvm()) return;
  uint32_t r[4];
  cpuid(KVM_CPUID_FEATURES, 0, r);
  uint64_t pa = (uint64_t)(uintptr_t)&pvclock | 1;
  if (r[0] & KVM_FEATURE_CLOCKSOURCE2) {
    wrmsr(MSR_KVM_SYSTEM_TIME_NEW, pa);
    have_kvmclock = 1;
  } else if (r[0] & KVM_FEATURE_CLOCKSOURCE) {
    wrmsr(MSR_KVM_SYSTEM_TIME, pa);
    have_kvmclock = 1;
  }
}

static uint64_t kvmclock_khz(void) {
  for (int tries = 0; tries < 1000000; tries++) {
    uint32_t v = pvclock.version;
    if (v == 0 || (v & 1)) continue;
    uint32_t mul = pvclock.tsc_to_system_mul;
    int8_t shift = pvclock.tsc_shift;
    if (pvclock.version != v || mul == 0) continue;
    uint64_t khz = (1000000ULL << 32) / mul;
    return shift < 0 ? khz << -shift : khz >> shift;
  }
  return 0;
}

static uint64_t cpuid15_khz(void) {
  uint32_t r[4];
  cpuid(0, 0, r);
  if (r[0] < 0x15) return 0;
  cpuid(0x15, 0, r);
  if (!r[0] || !r[1] || !r[2]) return 0;
  return (uint64_t)r[2] * r[1] / r[0] / 1000;
}

uint64_t clock_tsc_khz(const char **source) {
  uint64_t khz = 0;
  if (cmdline_u64("tsc_khz", &khz) == 1 && khz) {
    *source = "cmdline";
    return khz;
  }
  if (have_kvmclock && (khz = kvmclock_khz())) {
    *source = "kvmclock";
    return khz;
  }
  if ((khz = cpuid15_khz())) {
    *source = "cpuid15";
    return khz;
  }
  *source = "none";
  return 0;
}
