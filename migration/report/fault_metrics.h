// Per-fault timing on the destination, in the spirit of QEMU's
// PostcopyBlocktimeContext: for every userfaultfd event, when it was read,
// when its request went out, when the data arrived and when UFFDIO_CONTINUE
// finished; which thread faulted (UFFD_FEATURE_THREAD_ID), so blocked time
// per vCPU and the time every vCPU was blocked at once (QEMU's
// postcopy-vcpu-blocktime and postcopy-blocktime).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "clock.h"

namespace migration {

using vmm::Clock;

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
  // The kernel thread IDs of the vCPU threads, index = vCPU: faults of other
  // threads (the VMM's own accesses) are counted apart.
  void set_vcpu_threads(std::vector<uint32_t> tids);

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
    double blocked_ms = 0;  // summed over every faulting thread
    std::map<uint32_t, double> blocked_ms_by_thread;
    struct Vcpu {
      uint32_t tid = 0;
      uint64_t faults = 0;
      double blocked_ms = 0;  // the union of its blocked intervals (from event read to page mapped)
      double p50_us = 0, p99_us = 0;
    };
    std::vector<Vcpu> vcpus;        // index = vCPU; empty until set_vcpu_threads()
    double all_vcpus_blocked_ms = 0;  // time every vCPU was blocked at once
    uint64_t other_thread_faults = 0;  // faults of threads that are no vCPU
    // Pages on which two or more threads waited at once, and the faults that
    // joined a wait already under way (no request of their own: the one
    // arrival and its UFFDIO_CONTINUE woke them all).
    uint64_t pages_waited_by_several = 0, faults_joined = 0;
    // Every fault, for joining with what the guest saw of it (by page).
    struct Record {
      uint64_t page;  // in destination pages
      double t_ms;    // event read, ms since the first fault
      double read_to_request_us, request_to_data_us, data_to_mapped_us;
      bool requested;
      int vcpu = -1;  // -1: not a vCPU thread (or vCPU threads not known)
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
    bool joined;  // another thread's fault on this page came first
  };
  void summarize_vcpus(Summary& s) const;  // under mutex_

  mutable std::mutex mutex_;
  std::vector<uint32_t> vcpu_tids_;
  std::unordered_map<uint64_t, Pending> pending_;
  std::vector<Done> done_;
  uint64_t requested_ = 0;
  uint64_t several_ = 0;  // pages more than one thread waited on
};

nlohmann::ordered_json to_json(const FaultMetrics::Summary& s);

}  // namespace migration
