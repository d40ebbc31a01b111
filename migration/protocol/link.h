// What keeps a postcopy migration alive across a lost link: the timeouts that
// say the link is lost, and the heartbeat that keeps an idle one talking.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "channel.h"

namespace migration {

struct LinkOptions {
  // Silence (no frame, no acknowledgement of sent data) that means the link
  // is lost. Heartbeats go every quarter of it.
  std::chrono::milliseconds link_timeout{5000};
  // How long a lost link may stay lost before each side gives up.
  std::chrono::milliseconds recovery_timeout{300000};
  // How long the source keeps trying to connect and complete its handshake
  // before the migration begins (the destination may not listen yet, or a
  // crowd of strangers may hold its door).
  std::chrono::milliseconds connect_timeout{10000};
};

// Waits between attempts: 100 ms, doubling to at most 2 s, never past the
// deadline. next() gives the next wait, or nothing once the deadline passed.
class Backoff {
 public:
  explicit Backoff(std::chrono::steady_clock::time_point deadline) : deadline_(deadline) {}
  std::optional<std::chrono::milliseconds> next();

 private:
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::milliseconds wait_{0};
};

// The link failed (reset, closed, silent) while postcopy ran: both sides keep
// what they hold and reconnect.
class LinkLost : public ConnectionError {
 public:
  using ConnectionError::ConnectionError;
};

// Sends a Heartbeat frame on `ch` every `interval` until destroyed. A failed
// send ends it quietly: the receiving side's timeout is what notices.
class Heartbeat {
 public:
  Heartbeat(Channel& ch, std::chrono::milliseconds interval);
  ~Heartbeat();
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

 private:
  Channel& ch_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace migration
