// Where the guest's serial lines go (stdout or a file), line by line, and when
// the first one arrived.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "serial.h"

namespace vmm::cli {

struct SerialSink {
  using TimePoint = std::chrono::steady_clock::time_point;
  Serial::LineSink sink;
  std::shared_ptr<std::optional<TimePoint>> first;
  // When the first line containing the watched text arrived (the vCPU thread
  // writes it once; other threads read it).
  std::shared_ptr<std::atomic<TimePoint::rep>> watched;
  std::optional<TimePoint> first_line() const { return *first; }
  std::optional<TimePoint> watched_line() const {
    auto t = watched->load();
    if (t == 0) return std::nullopt;
    return TimePoint(TimePoint::duration(t));
  }
};

// Serial lines go to stdout or `path`, flushed per line so that a reader (a
// test, a person) sees progress as it happens. `watch`, if not empty, is the
// text whose first appearance watched_line() reports.
SerialSink make_serial_sink(const std::string& path, const std::string& watch = "");

}  // namespace vmm::cli
