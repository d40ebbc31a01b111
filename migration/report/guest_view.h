// What the guest saw of postcopy, joined with what the destination measured.
//
// The touch guest (guest/touch.c) prints, at its end, the touches it found
// slow (SLOW / SLOWREC lines: when, which page, how long) and, at its start,
// what one vCPU exit costs (EXITCOST). The destination feeds every serial line
// here; after the guest exits, join() pairs each fault the destination
// recorded with the guest's touch of that page, giving per fault the latency
// the guest saw beside the VMM's stages and what neither side explains (the
// vCPU's exit and entry, wake-ups, waiting for a core).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fault_metrics.h"

namespace migration {

class GuestView {
 public:
  // Called from the vCPU thread for every complete serial line.
  void feed(std::string_view line);

  struct Touch {
    uint64_t t_us, page, us;  // since the touch loop started; buffer page index; latency
  };
  struct Record {
    uint64_t threshold_us = 0, records = 0, dropped = 0, buffer_gpa = 0, page_size = 0, max_us = 0;
    std::vector<Touch> touches;
    std::optional<uint64_t> exit_cpuid_ns, exit_pio_ns;  // EXITCOST p50s
  };
  // The guest's record once its SLOW line was seen.
  std::optional<Record> record() const;

  // Each fault beside the guest's touch of its page. A fault is joined with
  // the shortest touch of that page not shorter than 0.9x what the VMM
  // measured (so that the guest's view explains it); each touch joins once.
  struct Joined {
    uint64_t guest_t_us;  // when the guest's touch began (its clock)
    double guest_us, read_to_request_us, request_to_data_us, data_to_mapped_us, unexplained_us;
    bool requested;
  };
  struct Join {
    std::vector<Joined> faults;
    uint64_t faults_recorded = 0;
    // The guest's slow touches no fault was joined with, between the first
    // and the last joined touch (while postcopy served faults): how many,
    // their sum and the longest.
    uint64_t touches_unexplained = 0;
    double unexplained_ms = 0, longest_unexplained_us = 0;
  };
  static Join join(const Record& guest, const std::vector<FaultMetrics::Summary::Record>& faults,
                   uint64_t dst_page_size);
  // The report's guest_view section: p50/p99 per stage, counts, exit cost.
  static nlohmann::ordered_json to_json(const Record& guest, const Join& j);

 private:
  mutable std::mutex mutex_;
  Record rec_;
  bool seen_slow_ = false;
};

}  // namespace migration
