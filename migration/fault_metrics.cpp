#include "fault_metrics.h"

#include <algorithm>

namespace migration {

namespace {

double us(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::micro>(b - a).count(); }

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

void FaultMetrics::fault_read(uint64_t page, Clock::time_point t, uint32_t tid) {
  std::lock_guard lock(mutex_);
  pending_[page].waiters.push_back({t, tid});
}

void FaultMetrics::request_sent(uint64_t page, Clock::time_point t) {
  std::lock_guard lock(mutex_);
  pending_[page].t_sent = t;
  requested_++;
}

void FaultMetrics::pages_done(uint64_t first, uint64_t last, Clock::time_point t_received, Clock::time_point t_done) {
  std::lock_guard lock(mutex_);
  if (pending_.empty()) return;
  for (uint64_t page = first; page < last; page++) {
    auto it = pending_.find(page);
    if (it == pending_.end()) continue;
    for (const Waiter& w : it->second.waiters) {
      bool requested = it->second.t_sent != Clock::time_point{};
      done_.push_back(
          {page, w.t_read, requested ? it->second.t_sent : w.t_read, t_received, t_done, w.tid, requested});
    }
    pending_.erase(it);
  }
}

uint64_t FaultMetrics::faults_resolved() const {
  std::lock_guard lock(mutex_);
  return done_.size();
}

FaultMetrics::Summary FaultMetrics::summarize() const {
  std::lock_guard lock(mutex_);
  Summary s;
  s.faults = done_.size();
  s.pages_requested = requested_;
  std::vector<double> lat, req, net, cont, by_path[2];
  Clock::time_point first = done_.empty() ? Clock::time_point{} : done_.front().t_read;
  for (const Done& d : done_) first = std::min(first, d.t_read);
  for (const Done& d : done_) {
    double l = us(d.t_read, d.t_done);
    lat.push_back(l);
    by_path[d.requested].push_back(l);
    req.push_back(us(d.t_read, d.t_sent));
    net.push_back(us(d.t_sent, d.t_received));
    cont.push_back(us(d.t_received, d.t_done));
    s.blocked_ms_by_thread[d.tid] += l / 1000.0;
    s.blocked_ms += l / 1000.0;
    s.records.push_back({d.page, us(first, d.t_read) / 1000.0, req.back(), net.back(), cont.back(), d.requested});
  }
  s.p50_us = percentile(lat, 0.50);
  s.p90_us = percentile(lat, 0.90);
  s.p99_us = percentile(lat, 0.99);
  s.max_us = lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end());
  double sum = 0;
  for (double l : lat) sum += l;
  s.mean_us = lat.empty() ? 0 : sum / static_cast<double>(lat.size());
  s.request_us_p50 = percentile(req, 0.5);
  s.network_us_p50 = percentile(net, 0.5);
  s.continue_us_p50 = percentile(cont, 0.5);
  auto path = [](const std::vector<double>& v) {
    return Summary::Path{v.size(), percentile(v, 0.5), percentile(v, 0.99),
                         v.empty() ? 0 : *std::max_element(v.begin(), v.end())};
  };
  s.requested = path(by_path[1]);
  s.in_flight = path(by_path[0]);
  return s;
}

nlohmann::ordered_json to_json(const FaultMetrics::Summary& s) {
  nlohmann::ordered_json j;
  j["faults"] = s.faults;
  j["latency_us"] = {{"p50", s.p50_us}, {"p90", s.p90_us}, {"p99", s.p99_us}, {"max", s.max_us}, {"mean", s.mean_us}};
  j["latency_breakdown_us_p50"] = {
      {"read_to_request", s.request_us_p50}, {"request_to_data", s.network_us_p50}, {"data_to_mapped", s.continue_us_p50}};
  auto path = [](const FaultMetrics::Summary::Path& p) {
    return nlohmann::ordered_json{{"faults", p.faults}, {"p50", p.p50_us}, {"p99", p.p99_us}, {"max", p.max_us}};
  };
  j["latency_by_path_us"] = {{"requested", path(s.requested)}, {"in_flight_on_push", path(s.in_flight)}};
  j["vcpu_blocked_ms"] = s.blocked_ms;
  nlohmann::ordered_json by_thread = nlohmann::ordered_json::object();
  for (const auto& [tid, ms] : s.blocked_ms_by_thread) by_thread[std::to_string(tid)] = ms;
  j["vcpu_blocked_ms_by_thread"] = by_thread;
  j["pages_requested"] = s.pages_requested;
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const auto& r : s.records)
    rows.push_back({r.page, r.t_ms, r.read_to_request_us, r.request_to_data_us, r.data_to_mapped_us, r.requested});
  j["fault_records"] = {
      {"columns", {"page", "t_ms", "read_to_request_us", "request_to_data_us", "data_to_mapped_us", "requested"}},
      {"rows", rows}};
  return j;
}

}  // namespace migration
