// Makes received pages visible to the guest: UFFDIO_CONTINUE on the primary
// view (MINOR mode: the data is in the page cache already), or UFFDIO_COPY
// from the staging buffer (MISSING mode), in line or by the mapper thread.
// Pushed pages go through the thread, so the receiving thread goes back to the
// socket at once (mapping in line halved the push rate).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "clock.h"
#include "fault_metrics.h"

namespace vmm {
class Userfaultfd;
}

namespace migration {

class PageMapper {
 public:
  // `staging` null: MINOR mode, data written through the alias view.
  PageMapper(uint8_t* primary, uint8_t* staging, uint64_t page_size)
      : primary_(primary), staging_(staging), page_size_(page_size) {}
  ~PageMapper();
  PageMapper(const PageMapper&) = delete;
  PageMapper& operator=(const PageMapper&) = delete;

  // From here on pages are mapped into `uffd`'s range; without one (tests,
  // fuzzing) nothing is. The pages each run maps are counted in `metrics`.
  void begin(const vmm::Userfaultfd* uffd, FaultMetrics* metrics);
  // MINOR mode: every present page is in the page cache already, so mapping
  // it ahead is only a saving; what is left, the kernel maps after unregister.
  bool optional() const { return staging_ == nullptr; }

  // Maps [first, first + count) pages now. EEXIST (mapped already) counts as done.
  void install(uint64_t first, uint64_t count) const;

  // The thread: start() it; queue() runs of pages for it; stop() drains the
  // queue in MISSING mode (the data is only in staging until UFFDIO_COPY
  // places it) and drops it in MINOR mode. Call stop() before unregistering,
  // with the fault resolver still running: a vCPU that faults meanwhile on a
  // queued page is mapped by the resolver, not left waiting for the queue.
  // `on_error` is called from the thread on its first failure; stop() throws it.
  void start(std::function<void(const std::string&)> on_error = {});
  bool running() const { return thread_.joinable(); }
  struct Run {
    uint64_t first, count;
    Clock::time_point t_received;
  };
  // Adds the runs `fill` pushes onto the queue, under its lock, and wakes the thread.
  template <typename Fill>
  void queue(Fill fill) {
    {
      std::lock_guard lock(mutex_);
      fill(queue_);
    }
    cv_.notify_one();
  }
  void stop();

 private:
  template <typename Attempt>
  void map_range(uint64_t first, uint64_t count, const char* ioctl_name, Attempt attempt) const;
  void continue_pages(uint64_t first, uint64_t count) const;
  void copy_pages(uint64_t first, uint64_t count) const;
  void loop();

  uint8_t* primary_;
  uint8_t* staging_;
  uint64_t page_size_;
  const vmm::Userfaultfd* uffd_ = nullptr;
  FaultMetrics* metrics_ = nullptr;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Run> queue_;
  bool stop_ = false;
  std::thread thread_;
  std::string error_;
  std::function<void(const std::string&)> on_error_;
};

}  // namespace migration
