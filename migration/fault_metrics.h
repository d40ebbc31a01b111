// Per-fault timing on the destination, in the spirit of QEMU's
// PostcopyBlocktimeContext: for every userfaultfd event, when it was read,
// when its request went out, when the data arrived and when UFFDIO_CONTINUE
// finished; blocked time per faulting thread (UFFD_FEATURE_THREAD_ID).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace migration {

using Clock = std::chrono::steady_clock;

class FaultMetrics {
 public:
  void fault_read(uint64_t page, Clock::time_point t, uint32_t tid);
  void request_sent(uint64_t page, Clock::time_point t);
  // Pages [first, last) are mapped: every fault waiting on them is resolved.
  // One lock per run of pages: a push frame completes up to thousands.
  void pages_done(uint64_t first, uint64_t last, Clock::time_point t_received, Clock::time_point t_done);
  void page_done(uint64_t page, Clock::time_point t_received, Clock::time_point t_done) {
    pages_done(page, page + 1, t_received, t_done);
  }
  // Faults resolved so far, without summarizing (for progress lines).
  uint64_t faults_resolved() const;

  struct Summary {
    uint64_t faults = 0;  // userfaultfd events (a thread blocked on a missing page)
    uint64_t pages_requested = 0;
    double p50_us = 0, p90_us = 0, p99_us = 0, max_us = 0, mean_us = 0;
    double request_us_p50 = 0, network_us_p50 = 0, continue_us_p50 = 0;  // read->sent, sent->data, data->mapped
    // The two ways a fault ends: its page was requested on the urgent
    // connection, or it was already in flight on the push (claimed by a
    // frame being received), so the fault waited for that frame instead.
    struct Path {
      uint64_t faults = 0;
      double p50_us = 0, p99_us = 0, max_us = 0;
    };
    Path requested, in_flight;
    double blocked_ms = 0;                                                 // summed over vCPU threads
    std::map<uint32_t, double> blocked_ms_by_thread;
    // Every fault, for joining with what the guest saw of it (by page).
    struct Record {
      uint64_t page;  // in destination pages
      double t_ms;    // event read, ms since the first fault
      double read_to_request_us, request_to_data_us, data_to_mapped_us;
      bool requested;
    };
    std::vector<Record> records;
  };
  Summary summarize() const;

 private:
  struct Waiter {
    Clock::time_point t_read;
    uint32_t tid;
  };
  struct Pending {
    std::vector<Waiter> waiters;
    Clock::time_point t_sent{};
  };
  struct Done {
    uint64_t page;
    Clock::time_point t_read, t_sent, t_received, t_done;
    uint32_t tid;
    bool requested;
  };
  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, Pending> pending_;
  std::vector<Done> done_;
  uint64_t requested_ = 0;
};

nlohmann::ordered_json to_json(const FaultMetrics::Summary& s);

}  // namespace migration
