// What a source's migration is doing right now, for a status request on the
// API socket while it runs: its phase, and the lost links it has lived through.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "clock.h"

namespace migration {

class MigrationStatus {
 public:
  // idle, connecting, precopy, switchover, postcopy, paused (the link is
  // lost: redialing), completed, failed, resumed_here (failed before the
  // commit point: the guest runs on the source again).
  void set_phase(const std::string& phase, const std::string& detail = "") {
    std::lock_guard lock(mutex_);
    phase_ = phase;
    detail_ = detail;
    if (phase == "paused") pauses_++, paused_at_ = vmm::Clock::now();
    if (phase == "postcopy" && pauses_ > 0) resumed_++;
  }
  nlohmann::json to_json() const {
    std::lock_guard lock(mutex_);
    nlohmann::json j = {{"phase", phase_}, {"link_pauses", pauses_}, {"link_resumes", resumed_}};
    if (!detail_.empty()) j["detail"] = detail_;
    if (phase_ == "paused")
      j["paused_ms"] =
          vmm::ms_between(paused_at_, vmm::Clock::now());
    return j;
  }

 private:
  mutable std::mutex mutex_;
  std::string phase_ = "idle", detail_;
  unsigned pauses_ = 0, resumed_ = 0;
  vmm::Clock::time_point paused_at_{};
};

}  // namespace migration
