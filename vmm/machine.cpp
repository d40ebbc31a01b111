#include "machine.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "elf_loader.h"
#include "error.h"
#include "hugepages.h"
#include "kvm_uapi.h"
#include "layout.h"
#include "pvh.h"

namespace vmm {

namespace {

void check_ram_size(const MachineConfig& c) {
  if (c.mem_size < layout::kMinRamSize)
    throw Error(fmt::format("--mem-size {} is too small: the PVH layout needs at least {}", format_size(c.mem_size),
                            format_size(layout::kMinRamSize)));
}

}  // namespace

Machine::Machine(const KvmSystem& kvm, const MachineConfig& config, Serial::LineSink serial_sink)
    : config_(config),
      kvm_(kvm),
      vm_((check_ram_size(config), kvm)),
      memory_(GuestMemory::create(config.backend, config.mem_size, &vm_)),
      serial_(std::move(serial_sink)) {
  std::vector<uint8_t> file = read_file(config.kernel_path);
  ElfImage image = parse_elf(file);
  load_elf(image, file, memory_.span(), layout::kHighMemStart);
  write_pvh_boot_info(memory_.span(), config.cmdline);
  bind_memory();
  bus_.register_pio(Serial::kCom1Base, Serial::kPortCount, &serial_);
  bus_.register_pio(DebugExit::kPort, DebugExit::kPortCount, &debug_exit_);
  setup_vcpu(image.pvh_entry);
  spdlog::info("boot: {} guest RAM on {}{}, PVH entry {:#x}, image [{:#x}, {:#x})", format_size(memory_.size()),
               backend_name(config.backend),
               config.backend == Backend::Gmem ? fmt::format(" (bound by {})", gmem_bind_name(config.gmem_bind)) : "",
               image.pvh_entry, image.lowest, image.highest);
}

void Machine::bind_memory() {
  auto hva = reinterpret_cast<uint64_t>(memory_.primary());
  if (config_.backend == Backend::Gmem && config_.gmem_bind == GmemBind::Fd) {
    // userspace_addr still names the shared mapping: KVM uses it for the
    // non-gmem paths and it documents which view the guest sees.
    vm_.set_memory_region2(0, KVM_MEM_GUEST_MEMFD, 0, memory_.size(), hva, memory_.fd(), 0);
    return;
  }
  vm_.set_memory_region(0, 0, 0, memory_.size(), hva);
}

void Machine::setup_vcpu(uint32_t entry) {
  vcpu_ = std::make_unique<Vcpu>(vm_, 0);
  vcpu_->set_cpuid(kvm_.supported_cpuid());
  kvm_sregs sregs = vcpu_->get_sregs();
  pvh_initial_sregs(sregs);
  vcpu_->set_sregs(sregs);
  vcpu_->set_regs(pvh_initial_regs(entry));
}

VcpuOutcome Machine::run(const std::atomic<bool>* stop) {
  VcpuOutcome out = run_vcpu(*vcpu_, bus_, debug_exit_, stop);
  serial_.flush();
  return out;
}

}  // namespace vmm
