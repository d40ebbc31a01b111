// Where the guest's serial lines go (stdout or a file), line by line, and when
// the first one arrived.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "serial.h"

namespace vmm::cli {

struct SerialSink {
  Serial::LineSink sink;
  std::shared_ptr<std::optional<std::chrono::steady_clock::time_point>> first;
  std::optional<std::chrono::steady_clock::time_point> first_line() const { return *first; }
};

// Serial lines go to stdout or `path`, flushed per line so that a reader (a
// test, a person) sees progress as it happens.
SerialSink make_serial_sink(const std::string& path);

}  // namespace vmm::cli
