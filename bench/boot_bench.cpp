// Boot-to-first-serial-line: from "create the VM" to the guest's first COM1
// line, in process, per RAM backend. Each iteration is a whole fresh VM:
// KVM_CREATE_VM, RAM, ELF load, PVH setup, vCPU, and the guest's ring-0 setup
// up to its banner in ring 3. Also reported: the same to guest exit.
#include <chrono>
#include <optional>

#include <benchmark/benchmark.h>

#include "guest_memory.h"
#include "hugepages.h"
#include "kvm.h"
#include "machine.h"

namespace {

using Clock = std::chrono::steady_clock;

void boot(benchmark::State& state, vmm::Backend backend, vmm::GmemBind bind) {
  uint64_t page = vmm::backend_page_size(backend);
  uint64_t size = std::max<uint64_t>(256ULL << 20, page);
  if ((backend == vmm::Backend::Hugetlb2M || backend == vmm::Backend::Hugetlb1G) &&
      vmm::read_hugepage_pool(page).free < size / page) {
    state.SkipWithError("not enough free hugepages (tools/bench-boot.sh reserves them)");
    return;
  }
  vmm::KvmSystem kvm;
  vmm::MachineConfig config{GUEST_ELF, "workload=hello", backend, bind, size};
  // Freshly reserved hugepages are cold in the outer hypervisor (the first pass
  // was measured ~40x slower): boot once untimed so every backend starts warm.
  { vmm::Machine(kvm, config, [](std::string_view) {}).run(0); }
  double exit_ms_total = 0;
  for (auto _ : state) {
    std::optional<Clock::time_point> first;
    auto t0 = Clock::now();
    vmm::Machine machine(kvm, config, [&](std::string_view) {
      if (!first) first = Clock::now();
    });
    auto out = machine.run(0);
    auto t1 = Clock::now();
    if (out.reason != vmm::StopReason::GuestExit || out.exit_code != 0 || !first) {
      state.SkipWithError("guest did not boot cleanly");
      return;
    }
    state.SetIterationTime(std::chrono::duration<double>(*first - t0).count());
    exit_ms_total += std::chrono::duration<double, std::milli>(t1 - t0).count();
  }
  state.counters["boot_to_exit_ms"] = exit_ms_total / static_cast<double>(state.iterations());
}

}  // namespace

BENCHMARK_CAPTURE(boot, gmem_fd, vmm::Backend::Gmem, vmm::GmemBind::Fd)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(boot, gmem_hva, vmm::Backend::Gmem, vmm::GmemBind::Hva)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(boot, shmem, vmm::Backend::Shmem, vmm::GmemBind::Fd)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(boot, hugetlb_2m, vmm::Backend::Hugetlb2M, vmm::GmemBind::Fd)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(boot, hugetlb_1g, vmm::Backend::Hugetlb1G, vmm::GmemBind::Fd)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
