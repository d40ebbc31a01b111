#include "vcpu_thread.h"

#include <unistd.h>

#include <algorithm>
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

VcpuThreads::VcpuThreads(Machine& machine, bool start_paused)
    : machine_(machine),
      state_(start_paused ? State::Paused : State::Running),
      parked_(machine.vcpu_count()),
      native_(machine.vcpu_count()),
      tids_(machine.vcpu_count()) {
  install_kick_handler();
  for (size_t i = 0; i < machine.vcpu_count(); i++) threads_.emplace_back([this, i] { loop(i); });
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [this] { return std::find(tids_.begin(), tids_.end(), 0) == tids_.end(); });
}

VcpuThreads::~VcpuThreads() {
  stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void VcpuThreads::stop() {
  std::unique_lock lock(mutex_);
  if (state_ == State::Finished) return;
  outcome_ = {StopReason::Stopped, 0, "VMM shutting down"};
  pause_requested_ = true;
  state_ = State::Finished;
  kick_all();
  cv_.notify_all();
}

// native_[i] is set before vCPU i's first KVM_RUN; a kick before that is
// harmless because the stop flag is checked before every KVM_RUN.
void VcpuThreads::kick_all() {
  for (size_t i = 0; i < native_.size(); i++) {
    machine_.vcpu(i).request_immediate_exit();
    if (native_[i]) pthread_kill(native_[i], SIGUSR1);
  }
}

void VcpuThreads::loop(size_t index) {
  {
    std::lock_guard lock(mutex_);
    native_[index] = pthread_self();
    tids_[index] = ::gettid();
  }
  cv_.notify_all();
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return state_ == State::Finished || (state_ == State::Running && !pause_requested_); });
      if (state_ == State::Finished) return;
      parked_--;
      // A kick meant for the last pause may still be set.
      machine_.vcpu(index).clear_immediate_exit();
    }
    VcpuOutcome out;
    try {
      out = machine_.run(index, &pause_requested_);
    } catch (const std::exception& e) {
      out = {StopReason::InternalError, 0, fmt::format("vCPU {}: {}", index, e.what())};
    }
    std::lock_guard lock(mutex_);
    parked_++;
    if (out.reason != StopReason::Stopped && state_ != State::Finished) {
      outcome_ = out;
      state_ = State::Finished;  // the guest is done: stop the other vCPUs
      pause_requested_ = true;
      kick_all();
    } else if (state_ == State::Running && pause_requested_ && parked_ == threads_.size()) {
      state_ = State::Paused;
    }
    cv_.notify_all();
    if (state_ == State::Finished) return;
  }
}

bool VcpuThreads::pause() {
  std::unique_lock lock(mutex_);
  if (state_ == State::Finished) return false;
  if (state_ == State::Paused) return true;
  pause_requested_ = true;
  if (parked_ == threads_.size()) state_ = State::Paused;
  kick_all();
  cv_.wait(lock, [this] { return state_ != State::Running; });
  return state_ == State::Paused;
}

void VcpuThreads::request_pause() {
  std::lock_guard lock(mutex_);
  if (state_ != State::Running) return;
  pause_requested_ = true;
  if (parked_ == threads_.size()) state_ = State::Paused;
  kick_all();
}

void VcpuThreads::resume() {
  std::lock_guard lock(mutex_);
  if (state_ == State::Finished) return;
  pause_requested_ = false;
  state_ = State::Running;
  cv_.notify_all();
}

bool VcpuThreads::wait_finished(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [this] { return state_ == State::Finished; });
}

VcpuOutcome VcpuThreads::wait() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [this] { return state_ == State::Finished; });
  return outcome_;
}

bool VcpuThreads::finished() const {
  std::lock_guard lock(mutex_);
  return state_ == State::Finished;
}

std::vector<pid_t> VcpuThreads::thread_ids() const {
  std::lock_guard lock(mutex_);
  return tids_;
}

}  // namespace vmm
