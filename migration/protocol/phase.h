// The migration's phases on each side, and the only transitions between
// them, in one place. Each side moves through its PhaseMachine; a transition
// the table lacks is a bug and throws PhaseError. The logs, the destination's
// report ("phases": when each began) and the source's `status` on the API
// socket read the machine.
//
// Source:      idle -> connecting -> [precopy] -> switchover -> postcopy <-> paused -> completed
//              (switchover -> resumed_here: no Started came, the guest runs on the source again;
//               connecting/precopy -> failed: the guest keeps running on the source;
//               paused -> completed: the reconnection found every page there;
//               postcopy/paused -> failed: the link stayed lost after the commit)
// Destination: listening -> handshake -> precopy -> restoring -> held -> postcopy <-> paused -> completed
//              (held: restored, vCPUs held until StartedAck or the source's reconnection;
//               held -> paused: the link went before the commit; any phase before completed -> failed)
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace migration {

enum class SourcePhase : uint8_t { Idle, Connecting, Precopy, Switchover, Postcopy, Paused, Completed, ResumedHere, Failed };
enum class DestinationPhase : uint8_t { Listening, Handshake, Precopy, Restoring, Held, Postcopy, Paused, Completed, Failed };

const char* phase_name(SourcePhase p);
const char* phase_name(DestinationPhase p);
bool allowed(SourcePhase from, SourcePhase to);
bool allowed(DestinationPhase from, DestinationPhase to);
bool is_final(SourcePhase p);
bool is_final(DestinationPhase p);

// A transition the table does not have.
class PhaseError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

template <typename Phase>
class PhaseMachine {
 public:
  struct Step {
    Phase phase;
    double at_ms;  // since the machine was made
    std::string detail;
  };

  PhaseMachine(const char* side, Phase initial);
  // Moves to `next` (logged with `detail`); PhaseError if the table lacks it.
  void to(Phase next, const std::string& detail = "");
  // Moves to `next` unless the current phase is final; false if it was.
  bool to_unless_final(Phase next, const std::string& detail = "");
  Phase now() const;
  // Whether `p` was ever entered.
  bool reached(Phase p) const;
  std::vector<Step> steps() const;
  // [{"phase": name, "at_ms": ms, "detail": ...}, ...]
  nlohmann::ordered_json to_json() const;

 private:
  void move(Phase next, const std::string& detail);  // under mutex_

  const char* side_;
  std::chrono::steady_clock::time_point t0_;
  mutable std::mutex mutex_;
  Phase now_;
  std::vector<Step> steps_;
};

using SourcePhases = PhaseMachine<SourcePhase>;
using DestinationPhases = PhaseMachine<DestinationPhase>;

}  // namespace migration
