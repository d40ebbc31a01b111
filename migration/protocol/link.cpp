#include "link.h"

#include <algorithm>

namespace migration {

Heartbeat::Heartbeat(Channel& ch, std::chrono::milliseconds interval) : ch_(ch) {
  thread_ = std::thread([this, interval] {
    std::unique_lock lock(mutex_);
    while (!cv_.wait_for(lock, interval, [&] { return stop_; })) {
      lock.unlock();
      try {
        ch_.send(FrameType::Heartbeat, 0, {});
      } catch (const ConnectionError&) {
        return;
      }
      lock.lock();
    }
  });
}

Heartbeat::~Heartbeat() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

std::optional<std::chrono::milliseconds> Backoff::next() {
  using namespace std::chrono;
  wait_ = wait_.count() ? std::min(wait_ * 2, milliseconds(2000)) : milliseconds(100);
  auto left = duration_cast<milliseconds>(deadline_ - steady_clock::now());
  if (left.count() <= 0) return std::nullopt;
  return std::min(wait_, left);
}

}  // namespace migration
