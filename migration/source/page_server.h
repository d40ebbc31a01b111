// The source's postcopy page server. After switchover it answers the
// destination's PageRequests on the urgent connection, so they never wait
// behind bulk data, and pushes every other missing page on the main
// connection, restarting its scan just after the latest requested page
// (QEMU's rule). A page is pushed at most once; a requested page that fits
// in one frame may also be sent on the urgent connection while its push is in flight.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "channel.h"
#include "link.h"
#include "messages.h"

namespace migration {

struct PageServerStats {
  uint64_t pages_urgent = 0, pages_pushed = 0;
  uint64_t chunks_data = 0, chunks_zero_markers = 0, chunks_skipped = 0;
  uint64_t requests = 0;
};

class PageServer {
 public:
  PageServer(const uint8_t* mem, uint64_t mem_size, uint64_t dest_page_size, const vmm::Bitmap& missing,
             const vmm::Bitmap& dest_nonzero, std::function<vmm::Bitmap()> find_allocated, Channel& main,
             Channel& urgent, uint64_t push_rate, std::chrono::milliseconds link_timeout,
             std::function<void()> on_commit);

  // Serves until the destination reports Complete. Throws LinkLost when the
  // link failed (reset, closed, or silent for the link timeout), anything
  // else for a failure no reconnection mends (an Error frame, a bad frame).
  // `on_commit` runs once Started came and StartedAck is on its way: from
  // then on the guest lives on the destination.
  PageServerStats run();
  // After run() threw: the pages this server sent (pushed or answered).
  vmm::Bitmap sent_bitmap() const;

 private:
  bool claim(uint64_t page) { return !sent_[page].exchange(1); }
  void send_pages(Channel& ch, uint64_t first, uint64_t count, uint32_t flags);
  void serve_requests();
  void watch_main();
  void push();
  void pace_push(uint64_t bytes);
  void fail(const std::string& why, bool link_lost = false);

  const uint8_t* mem_;
  uint64_t page_size_, npages_;
  const vmm::Bitmap& dest_nonzero_;
  // Which chunks the source backend holds (GuestMemory::allocated_chunks):
  // found by the push thread once requests are already being served (the
  // scan takes milliseconds (docs/lab: figures from the code's comments), and the first faults come at once). Small pages are
  // answered without it meanwhile (every chunk read); larger ones wait for it.
  std::function<vmm::Bitmap()> find_allocated_;
  vmm::Bitmap allocated_;
  std::atomic<bool> allocated_ready_{false};
  std::condition_variable allocated_cv_;
  Channel& main_;
  Channel& urgent_;
  // The push's cap in bytes per second on the wire (0: none, the link decides).
  uint64_t push_rate_;
  uint64_t push_bytes_ = 0;
  std::chrono::steady_clock::time_point push_start_;
  std::unique_ptr<std::atomic<uint8_t>[]> sent_;
  std::atomic<uint64_t> cursor_{0};
  std::atomic<bool> done_{false};
  // The destination said Complete: it holds every page, and what fails after
  // that (a push frame it will never read) is not a failed migration.
  std::atomic<bool> completed_{false};
  std::chrono::milliseconds link_timeout_;
  std::function<void()> on_commit_;
  bool link_lost_ = false;
  std::mutex mutex_;
  std::string error_;
  PageServerStats stats_;
};

}  // namespace migration
