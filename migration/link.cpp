#include "link.h"

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

}  // namespace migration
