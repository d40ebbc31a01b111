// The vCPU loop: KVM_RUN, then dispatch on exit_reason. It only dispatches;
// devices do the work.
#pragma once

#include <atomic>
#include <string>

namespace vmm {

class Vcpu;
class IoBus;
class DebugExit;

enum class StopReason {
  GuestExit,      // the guest wrote the isa-debug-exit port
  Halted,         // HLT with no interrupt source: the guest can never resume
  Shutdown,       // triple fault
  InternalError,  // KVM could not emulate or enter the guest
  Stopped,        // the VMM asked the vCPU to stop (signal or request)
};

struct VcpuOutcome {
  StopReason reason = StopReason::Stopped;
  int exit_code = 0;   // for GuestExit
  std::string detail;  // what KVM reported, with the guest's registers
};

std::string_view stop_reason_name(StopReason r);

// Runs until the guest stops or *stop becomes true (checked after every exit,
// including EINTR from a signal sent to this thread).
VcpuOutcome run_vcpu(Vcpu& vcpu, IoBus& bus, const DebugExit& debug_exit, const std::atomic<bool>* stop);

}  // namespace vmm
