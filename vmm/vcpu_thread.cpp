#include "vcpu_thread.h"

#include <csignal>

#include <spdlog/spdlog.h>

#include "error.h"
#include "machine.h"

namespace vmm {

void install_kick_handler() {
  static bool installed = [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, nullptr);
    return true;
  }();
  (void)installed;
}

VcpuThread::VcpuThread(Machine& machine, bool start_paused)
    : machine_(machine), state_(start_paused ? State::Paused : State::Running) {
  install_kick_handler();
  thread_ = std::thread([this] { loop(); });
}

VcpuThread::~VcpuThread() {
  {
    std::unique_lock lock(mutex_);
    if (state_ != State::Finished) {
      outcome_ = {StopReason::Stopped, 0, "VMM shutting down"};
      pause_requested_ = true;
      machine_.vcpu().request_immediate_exit();
      if (state_ == State::Running) pthread_kill(native_, SIGUSR1);
      state_ = State::Finished;
      cv_.notify_all();
    }
  }
  if (thread_.joinable()) thread_.join();
}

void VcpuThread::loop() {
  {
    std::lock_guard lock(mutex_);
    native_ = pthread_self();
  }
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return state_ != State::Paused; });
      if (state_ == State::Finished) return;
    }
    VcpuOutcome out;
    try {
      out = machine_.run(&pause_requested_);
    } catch (const std::exception& e) {
      out = {StopReason::InternalError, 0, e.what()};
    }
    std::lock_guard lock(mutex_);
    if (out.reason == StopReason::Stopped && state_ != State::Finished) {
      if (pause_requested_) state_ = State::Paused;  // else a resume() came first: run on
    } else if (state_ != State::Finished) {
      outcome_ = out;
      state_ = State::Finished;
    }
    cv_.notify_all();
    if (state_ == State::Finished) return;
  }
}

bool VcpuThread::pause() {
  std::unique_lock lock(mutex_);
  if (state_ == State::Finished) return false;
  if (state_ == State::Paused) return true;
  pause_requested_ = true;
  machine_.vcpu().request_immediate_exit();
  // native_ is set before the first KVM_RUN; a kick before that is harmless
  // because the stop flag is checked before every KVM_RUN.
  if (native_) pthread_kill(native_, SIGUSR1);
  cv_.wait(lock, [this] { return state_ != State::Running; });
  return state_ == State::Paused;
}

void VcpuThread::request_pause() {
  std::lock_guard lock(mutex_);
  if (state_ != State::Running) return;
  pause_requested_ = true;
  machine_.vcpu().request_immediate_exit();
  if (native_) pthread_kill(native_, SIGUSR1);
}

void VcpuThread::resume() {
  std::lock_guard lock(mutex_);
  if (state_ == State::Running && pause_requested_) {  // a request_pause() not yet taken
    pause_requested_ = false;
    machine_.vcpu().clear_immediate_exit();
    return;
  }
  if (state_ != State::Paused) return;
  pause_requested_ = false;
  machine_.vcpu().clear_immediate_exit();
  state_ = State::Running;
  cv_.notify_all();
}

bool VcpuThread::wait_finished(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [this] { return state_ == State::Finished; });
}

VcpuOutcome VcpuThread::wait() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [this] { return state_ == State::Finished; });
  return outcome_;
}

bool VcpuThread::finished() const {
  std::lock_guard lock(mutex_);
  return state_ == State::Finished;
}

}  // namespace vmm
