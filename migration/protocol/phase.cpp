#include "phase.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace migration {

namespace {

template <typename Phase>
struct Edge {
  Phase from, to;
};

using S = SourcePhase;
constexpr Edge<S> kSourceEdges[] = {
    {S::Idle, S::Connecting},         {S::Connecting, S::Precopy},    {S::Connecting, S::Switchover},
    {S::Connecting, S::Failed},       {S::Precopy, S::Switchover},    {S::Precopy, S::Failed},
    {S::Switchover, S::Postcopy},     {S::Switchover, S::ResumedHere}, {S::Postcopy, S::Paused},
    {S::Postcopy, S::Completed},      {S::Postcopy, S::Failed},       {S::Paused, S::Postcopy},
    {S::Paused, S::Completed},        {S::Paused, S::Failed},
};

using D = DestinationPhase;
constexpr Edge<D> kDestinationEdges[] = {
    {D::Listening, D::Handshake}, {D::Listening, D::Failed}, {D::Handshake, D::Precopy}, {D::Handshake, D::Failed},
    {D::Precopy, D::Restoring},   {D::Precopy, D::Failed},   {D::Restoring, D::Held},    {D::Restoring, D::Failed},
    {D::Held, D::Postcopy},       {D::Held, D::Paused},      {D::Held, D::Failed},       {D::Postcopy, D::Paused},
    {D::Postcopy, D::Completed},  {D::Postcopy, D::Failed},  {D::Paused, D::Postcopy},   {D::Paused, D::Completed},
    {D::Paused, D::Failed},
};

template <typename Phase, size_t N>
bool in(const Edge<Phase> (&edges)[N], Phase from, Phase to) {
  for (const auto& e : edges)
    if (e.from == from && e.to == to) return true;
  return false;
}

}  // namespace

const char* phase_name(SourcePhase p) {
  switch (p) {
    case S::Idle: return "idle";
    case S::Connecting: return "connecting";
    case S::Precopy: return "precopy";
    case S::Switchover: return "switchover";
    case S::Postcopy: return "postcopy";
    case S::Paused: return "paused";
    case S::Completed: return "completed";
    case S::ResumedHere: return "resumed_here";
    case S::Failed: return "failed";
  }
  return "?";
}

const char* phase_name(DestinationPhase p) {
  switch (p) {
    case D::Listening: return "listening";
    case D::Handshake: return "handshake";
    case D::Precopy: return "precopy";
    case D::Restoring: return "restoring";
    case D::Held: return "held";
    case D::Postcopy: return "postcopy";
    case D::Paused: return "paused";
    case D::Completed: return "completed";
    case D::Failed: return "failed";
  }
  return "?";
}

bool allowed(SourcePhase from, SourcePhase to) { return in(kSourceEdges, from, to); }
bool allowed(DestinationPhase from, DestinationPhase to) { return in(kDestinationEdges, from, to); }
bool is_final(SourcePhase p) { return p == S::Completed || p == S::ResumedHere || p == S::Failed; }
bool is_final(DestinationPhase p) { return p == D::Completed || p == D::Failed; }

template <typename Phase>
PhaseMachine<Phase>::PhaseMachine(const char* side, Phase initial)
    : side_(side), t0_(std::chrono::steady_clock::now()), now_(initial), steps_{{initial, 0.0, ""}} {}

template <typename Phase>
void PhaseMachine<Phase>::move(Phase next, const std::string& detail) {
  if (!allowed(now_, next))
    throw PhaseError(fmt::format("{}: no transition from {} to {}", side_, phase_name(now_), phase_name(next)));
  double at = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
  spdlog::debug("{}: phase {} -> {} at {:.2f} ms{}{}", side_, phase_name(now_), phase_name(next), at,
                detail.empty() ? "" : ": ", detail);
  now_ = next;
  steps_.push_back({next, at, detail});
}

template <typename Phase>
void PhaseMachine<Phase>::to(Phase next, const std::string& detail) {
  std::lock_guard lock(mutex_);
  move(next, detail);
}

template <typename Phase>
bool PhaseMachine<Phase>::to_unless_final(Phase next, const std::string& detail) {
  std::lock_guard lock(mutex_);
  if (is_final(now_)) return false;
  move(next, detail);
  return true;
}

template <typename Phase>
Phase PhaseMachine<Phase>::now() const {
  std::lock_guard lock(mutex_);
  return now_;
}

template <typename Phase>
bool PhaseMachine<Phase>::reached(Phase p) const {
  std::lock_guard lock(mutex_);
  for (const auto& s : steps_)
    if (s.phase == p) return true;
  return false;
}

template <typename Phase>
std::vector<typename PhaseMachine<Phase>::Step> PhaseMachine<Phase>::steps() const {
  std::lock_guard lock(mutex_);
  return steps_;
}

template <typename Phase>
nlohmann::ordered_json PhaseMachine<Phase>::to_json() const {
  nlohmann::ordered_json j = nlohmann::ordered_json::array();
  for (const auto& s : steps()) {
    nlohmann::ordered_json step = {{"phase", phase_name(s.phase)}, {"at_ms", s.at_ms}};
    if (!s.detail.empty()) step["detail"] = s.detail;
    j.push_back(step);
  }
  return j;
}

template class PhaseMachine<SourcePhase>;
template class PhaseMachine<DestinationPhase>;

}  // namespace migration
