// Runs the boot vCPU on its own thread as a small state machine
// (Running / Paused / Finished, after Firecracker's vcpu.rs), so a migration
// can stop it at switchover and resume it if the migration fails.
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "vcpu_loop.h"

namespace vmm {

class Machine;

// SIGUSR1 only interrupts KVM_RUN (no SA_RESTART): a handler that does
// nothing, installed once. A thread blocked in KVM_RUN is kicked out with
// Vcpu::request_immediate_exit() and pthread_kill(SIGUSR1).
void install_kick_handler();

class VcpuThread {
 public:
  // Starts the thread; it runs the guest at once unless start_paused.
  explicit VcpuThread(Machine& machine, bool start_paused = false);
  ~VcpuThread();
  VcpuThread(const VcpuThread&) = delete;
  VcpuThread& operator=(const VcpuThread&) = delete;

  // Stops the vCPU out of KVM_RUN. False if the guest had already finished.
  bool pause();
  // Asks the vCPU to stop at its next exit, without waiting for it (it may
  // be blocked in a page fault that only a page's arrival ends).
  void request_pause();
  // Runs it again, also when a request_pause() has not taken effect yet.
  void resume();
  // Blocks until the guest finished (exit, error) or `timeout` passed.
  bool wait_finished(std::chrono::milliseconds timeout);
  VcpuOutcome wait();
  bool finished() const;

 private:
  enum class State { Running, Paused, Finished };
  void loop();

  Machine& machine_;
  std::atomic<bool> pause_requested_{false};
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  State state_;
  VcpuOutcome outcome_;
  pthread_t native_{};
  std::thread thread_;
};

}  // namespace vmm
