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

const MachineConfig& checked(const MachineConfig& c) {
  if (c.mem_size < layout::kMinRamSize)
    throw Error(fmt::format("--mem-size {} is too small: the PVH layout needs at least {}", format_size(c.mem_size),
                            format_size(layout::kMinRamSize)));
  return c;
}

}  // namespace

Machine::Machine(const KvmSystem& kvm, const MachineConfig& config, Serial::LineSink serial_sink)
    : config_(checked(config)),
      kvm_(kvm),
      vm_(kvm),
      memory_(GuestMemory::create(config.backend, config.mem_size, &vm_)),
      serial_(std::move(serial_sink)) {
  bind_memory(0);
  bus_.register_pio(Serial::kCom1Base, Serial::kPortCount, &serial_);
  bus_.register_pio(DebugExit::kPort, DebugExit::kPortCount, &debug_exit_);
  bus_.register_pio(PostPort::kPort, 1, &post_port_);
  vcpu_ = std::make_unique<Vcpu>(vm_, 0);
  vcpu_->set_cpuid(kvm_.supported_cpuid());
  if (!config_.kernel_path.empty()) boot();
}

void Machine::boot() {
  std::vector<uint8_t> file = read_file(config_.kernel_path);
  ElfImage image = parse_elf(file);
  load_elf(image, file, memory_.span(), layout::kHighMemStart);
  write_pvh_boot_info(memory_.span(), config_.cmdline);
  kvm_sregs sregs = vcpu_->get_sregs();
  pvh_initial_sregs(sregs);
  vcpu_->set_sregs(sregs);
  vcpu_->set_regs(pvh_initial_regs(image.pvh_entry));
  spdlog::info("boot: {} guest RAM on {}{}, PVH entry {:#x}, image [{:#x}, {:#x})", format_size(memory_.size()),
               backend_name(config_.backend),
               config_.backend == Backend::Gmem ? fmt::format(" (bound by {})", gmem_bind_name(config_.gmem_bind))
                                                : "",
               image.pvh_entry, image.lowest, image.highest);
}

void Machine::bind_memory(uint32_t extra_flags) {
  auto hva = reinterpret_cast<uint64_t>(memory_.primary());
  if (config_.backend == Backend::Gmem && config_.gmem_bind == GmemBind::Fd) {
    // userspace_addr still names the shared mapping: KVM uses it for the
    // non-gmem paths and it documents which view the guest sees.
    vm_.set_memory_region2(0, KVM_MEM_GUEST_MEMFD | extra_flags, 0, memory_.size(), hva, memory_.fd(), 0);
    return;
  }
  vm_.set_memory_region(0, extra_flags, 0, memory_.size(), hva);
}

bool Machine::can_log_dirty() const {
  return !(config_.backend == Backend::Gmem && config_.gmem_bind == GmemBind::Fd);
}

void Machine::set_dirty_logging(bool on) {
  if (on && !can_log_dirty())
    throw Error("dirty logging is impossible on a KVM_MEM_GUEST_MEMFD memslot (KVM answers EINVAL): "
                "run the source with --gmem-bind hva for precopy or hybrid, or migrate with --mode postcopy");
  bind_memory(on ? KVM_MEM_LOG_DIRTY_PAGES : 0);
}

void Machine::get_dirty_log(std::vector<uint64_t>& bitmap) const {
  bitmap.assign((memory_.size() / 4096 + 63) / 64, 0);
  vm_.get_dirty_log(0, bitmap);
}

VcpuOutcome Machine::run(const std::atomic<bool>* stop) {
  VcpuOutcome out = run_vcpu(*vcpu_, bus_, debug_exit_, stop);
  if (out.reason != StopReason::Stopped) serial_.flush();
  return out;
}

}  // namespace vmm
