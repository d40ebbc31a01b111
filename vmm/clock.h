// The clock every interval the project reports is taken with, and the one
// way to turn an interval into milliseconds.
#pragma once

#include <chrono>

namespace vmm {

using Clock = std::chrono::steady_clock;

inline double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

}  // namespace vmm
