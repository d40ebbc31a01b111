#include "machine.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "acpi.h"
#include "elf_loader.h"
#include "error.h"
#include "hugepages.h"
#include "kvm_uapi.h"
#include "layout.h"
#include "pvh.h"

namespace vmm {

namespace {

const MachineConfig& checked(const KvmSystem& kvm, const MachineConfig& c) {
  if (c.mem_size < layout::kMinRamSize)
    throw Error(fmt::format("--mem-size {} is too small: the PVH layout needs at least {}", format_size(c.mem_size),
                            format_size(layout::kMinRamSize)));
  int max = kvm.check_extension(KVM_CAP_MAX_VCPUS);
  if (c.vcpus == 0 || c.vcpus > kMaxVcpus || (max > 0 && c.vcpus > static_cast<uint32_t>(max)))
    throw Error(fmt::format("--vcpus {}: this VMM runs 1 to {} vCPUs{}", c.vcpus, kMaxVcpus,
                            max > 0 && static_cast<uint32_t>(max) < kMaxVcpus
                                ? fmt::format(", and this KVM at most {} (KVM_CAP_MAX_VCPUS)", max)
                                : ""));
  int recommended = kvm.check_extension(KVM_CAP_NR_VCPUS);
  if (recommended > 0 && c.vcpus > static_cast<uint32_t>(recommended))
    spdlog::warn("vcpus: {} vCPUs is more than this host's KVM recommends ({}, KVM_CAP_NR_VCPUS: its CPUs); "
                 "they share host CPUs and every figure shows it",
                 c.vcpus, recommended);
  return c;
}

}  // namespace

Machine::Machine(const KvmSystem& kvm, const MachineConfig& config, Serial::LineSink serial_sink)
    : config_(checked(kvm, config)),
      kvm_(kvm),
      vm_(kvm),
      memory_(GuestMemory::create(config.backend, config.mem_size, &vm_)),
      serial_(std::move(serial_sink)) {
  // The irqchip and PIT come before the first vCPU (KVM requires it); every
  // vCPU then has an in-kernel LAPIC, and HLT waits in the kernel.
  vm_.create_irqchip();
  vm_.create_pit();
  bind_memory(0);
  bus_.register_pio(Serial::kCom1Base, Serial::kPortCount, &serial_);
  bus_.register_pio(DebugExit::kPort, DebugExit::kPortCount, &debug_exit_);
  bus_.register_pio(PostPort::kPort, 1, &post_port_);
  CpuidTable supported = kvm_.supported_cpuid();
  for (uint32_t i = 0; i < config_.vcpus; i++) {
    vcpus_.push_back(std::make_unique<Vcpu>(vm_, static_cast<int>(i)));
    vcpus_.back()->set_cpuid(cpuid_for(supported, i, config_.vcpus));
  }
  if (!config_.kernel_path.empty()) boot();
}

CpuidTable Machine::cpuid_for(const CpuidTable& supported, uint32_t apic_id, uint32_t vcpus) {
  // KVM reports no topology: each vCPU's initial APIC ID (leaf 1 EBX[31:24],
  // the x2APIC ID in leaves 0xb and 0x1f EDX) and the logical CPU count
  // (leaf 1 EBX[23:16], with HTT) are the VMM's to fill, as QEMU does.
  CpuidTable t = supported;
  for (auto& e : t.entries) {
    if (e.function == 1) {
      e.ebx = (e.ebx & 0xffffu) | (vcpus & 0xffu) << 16 | (apic_id & 0xffu) << 24;
      if (vcpus > 1) e.edx |= 1u << 28;
    } else if (e.function == 0xb || e.function == 0x1f) {
      e.edx = apic_id;
    }
  }
  return t;
}

void Machine::boot() {
  std::vector<uint8_t> file = read_file(config_.kernel_path);
  ElfImage image = parse_elf(file);
  load_elf(image, file, memory_.span(), layout::kHighMemStart);
  write_pvh_boot_info(memory_.span(), config_.cmdline, write_acpi_tables(memory_.span(), config_.vcpus));
  Vcpu& bsp = *vcpus_.front();
  kvm_sregs sregs = bsp.get_sregs();
  pvh_initial_sregs(sregs);
  bsp.set_sregs(sregs);
  bsp.set_regs(pvh_initial_regs(image.pvh_entry));
  spdlog::info("boot: {} vCPU{}, {} guest RAM on {}{}, PVH entry {:#x}, image [{:#x}, {:#x})", config_.vcpus,
               config_.vcpus == 1 ? "" : "s", format_size(memory_.size()),
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

Bitmap Machine::get_dirty_log() const {
  uint64_t chunks = memory_.size() / 4096;
  std::vector<uint64_t> words(Bitmap::words_for(chunks), 0);
  vm_.get_dirty_log(0, words);
  return Bitmap::from_words(std::move(words), chunks);
}

VcpuOutcome Machine::run(size_t index, const std::atomic<bool>* stop) {
  VcpuOutcome out = run_vcpu(*vcpus_.at(index), bus_, debug_exit_, stop);
  if (out.reason != StopReason::Stopped) {
    auto hold = bus_.hold();
    serial_.flush();
  }
  return out;
}

}  // namespace vmm
