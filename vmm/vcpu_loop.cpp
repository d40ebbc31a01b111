#include "vcpu_loop.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "debug_exit.h"
#include "io_bus.h"
#include "kvm.h"

namespace vmm {

namespace {

std::string describe_state(const Vcpu& vcpu) {
  kvm_regs r = vcpu.get_regs();
  kvm_sregs s = vcpu.get_sregs();
  return fmt::format("rip={:#x} rsp={:#x} rflags={:#x} cs={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}", r.rip,
                     r.rsp, r.rflags, s.cs.selector, s.cr0, s.cr3, s.cr4, s.efer);
}

void handle_io(kvm_run* run, IoBus& bus) {
  auto* base = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
  for (uint32_t i = 0; i < run->io.count; i++) {
    std::span<uint8_t> data(base + size_t{i} * run->io.size, run->io.size);
    if (run->io.direction == KVM_EXIT_IO_OUT) bus.pio_write(run->io.port, data);
    else bus.pio_read(run->io.port, data);
  }
}

void handle_mmio(kvm_run* run, IoBus& bus) {
  std::span<uint8_t> data(run->mmio.data, std::min<size_t>(run->mmio.len, sizeof run->mmio.data));
  if (run->mmio.is_write) bus.mmio_write(run->mmio.phys_addr, data);
  else bus.mmio_read(run->mmio.phys_addr, data);
}

VcpuOutcome failure(StopReason reason, const Vcpu& vcpu, std::string what) {
  return {reason, 0, fmt::format("vCPU {}: {}; {}", vcpu.id(), what, describe_state(vcpu))};
}

}  // namespace

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::GuestExit: return "guest exit";
    case StopReason::Halted: return "halted";
    case StopReason::Shutdown: return "shutdown (triple fault)";
    case StopReason::InternalError: return "KVM internal error";
    case StopReason::Stopped: return "stopped";
  }
  return "?";
}

VcpuOutcome run_vcpu(Vcpu& vcpu, IoBus& bus, const DebugExit& debug_exit, const std::atomic<bool>* stop) {
  kvm_run* run = vcpu.run_state();
  for (;;) {
    if (stop && stop->load(std::memory_order_acquire)) {
      // One more KVM_RUN with immediate_exit completes a pending port read
      // (KVM's complete_userspace_io) so the saved registers are final.
      vcpu.request_immediate_exit();
      vcpu.run();
      return {StopReason::Stopped, 0, "stop requested"};
    }
    if (!vcpu.run()) continue;  // EINTR: re-check the stop flag
    switch (run->exit_reason) {
      case KVM_EXIT_IO:
        handle_io(run, bus);
        if (auto code = debug_exit.requested()) return {StopReason::GuestExit, *code, {}};
        break;
      case KVM_EXIT_MMIO: handle_mmio(run, bus); break;
      case KVM_EXIT_INTR: break;
      case KVM_EXIT_HLT: return failure(StopReason::Halted, vcpu, "guest executed HLT with interrupts off");
      case KVM_EXIT_SHUTDOWN: return failure(StopReason::Shutdown, vcpu, "guest triple-faulted");
      case KVM_EXIT_FAIL_ENTRY:
        return failure(StopReason::InternalError, vcpu,
                       fmt::format("VM entry failed, hardware reason {:#x}",
                                   run->fail_entry.hardware_entry_failure_reason));
      case KVM_EXIT_INTERNAL_ERROR:
        return failure(StopReason::InternalError, vcpu, fmt::format("suberror {}", run->internal.suberror));
      default:
        return failure(StopReason::InternalError, vcpu, fmt::format("unexpected exit reason {}", run->exit_reason));
    }
  }
}

}  // namespace vmm
