// Runs each vCPU on its own thread, all under one small state machine
// (Running / Paused / Finished, after Firecracker's vcpu.rs), so a migration
// can stop every vCPU together at switchover and resume them together if the
// migration fails. The VM finishes when any vCPU does (the guest wrote the
// exit port, or KVM failed): the others are stopped then.
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "vcpu_loop.h"

namespace vmm {

class Machine;

// SIGUSR1 only interrupts KVM_RUN (no SA_RESTART): a handler that does
// nothing, installed once. A thread blocked in KVM_RUN is kicked out with
// Vcpu::request_immediate_exit() and pthread_kill(SIGUSR1).
void install_kick_handler();

class VcpuThreads {
 public:
  // Starts one thread per vCPU of `machine`; they run the guest at once
  // unless start_paused.
  explicit VcpuThreads(Machine& machine, bool start_paused = false);
  ~VcpuThreads();
  VcpuThreads(const VcpuThreads&) = delete;
  VcpuThreads& operator=(const VcpuThreads&) = delete;

  // Stops every vCPU out of KVM_RUN. False if the guest had already finished.
  bool pause();
  // Asks every vCPU to stop at its next exit, without waiting (one may be
  // blocked in a page fault that only a page's arrival ends).
  void request_pause();
  // Ends the VM: every vCPU is kicked and leaves KVM_RUN at its next exit,
  // without waiting for it (the destructor joins them). A signal stays
  // pending in a vCPU that waits in a fault the signal cannot interrupt, so
  // once that fault ends KVM returns to the VMM before it enters the guest.
  void stop();
  // Runs them again, also when a request_pause() has not taken effect yet.
  void resume();
  // Blocks until the guest finished (exit, error) or `timeout` passed.
  bool wait_finished(std::chrono::milliseconds timeout);
  VcpuOutcome wait();
  bool finished() const;
  // The kernel thread IDs of the vCPU threads, index = vCPU (known once the
  // constructor returns).
  std::vector<pid_t> thread_ids() const;

 private:
  enum class State { Running, Paused, Finished };
  void loop(size_t index);
  void kick_all();  // under mutex_

  Machine& machine_;
  std::atomic<bool> pause_requested_{false};
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  State state_;
  size_t parked_;  // threads outside KVM_RUN, waiting at the top of their loop
  VcpuOutcome outcome_;
  std::vector<pthread_t> native_;
  std::vector<pid_t> tids_;
  std::vector<std::thread> threads_;
};

}  // namespace vmm
