/* Ring 3 entry: banner, command line, workload dispatch. */
#include "guest.h"

static void hello(void) {
  con_printf("guest: workload hello: all good, cpus=%u\n", smp_cpus);
  guest_exit(EXIT_OK);
}

void user_main(void) {
  const struct hvm_start_info *si = (const void *)(uintptr_t)pvh_start_info_paddr;
  cmdline_init((const char *)(uintptr_t)si->cmdline_paddr);
  con_printf("guest: PVH boot ok, ring 3, ram_top=%lu MiB, mapped=%lu MiB, cmdline=\"%s\"\n", ram_top / MIB,
             mapped_top / MIB, cmdline_raw());
  const char *src;
  smp_wait_aps(clock_tsc_khz(&src));

  char workload[32] = "hello";
  cmdline_str("workload", workload, sizeof workload);
  if (str_eq(workload, "hello")) hello();
  if (str_eq(workload, "touch")) guest_exit(workload_touch());
  con_printf("guest: unknown workload=%s (known: hello, touch)\n", workload);
  guest_exit(EXIT_BAD_CONFIG);
}
