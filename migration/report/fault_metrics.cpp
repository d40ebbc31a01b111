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
    const auto& waiters = it->second.waiters;
    for (size_t i = 0; i < waiters.size(); i++) {
      const Waiter& w = waiters[i];
      bool requested = it->second.t_sent != Clock::time_point{};
      bool joined = std::any_of(waiters.begin(), waiters.begin() + static_cast<ptrdiff_t>(i),
                                [&w](const Waiter& e) { return e.tid != w.tid; });
      done_.push_back(
          {page, w.t_read, requested ? it->second.t_sent : w.t_read, t_received, t_done, w.tid, requested, joined});
    }
    if (std::any_of(waiters.begin(), waiters.end(), [&](const Waiter& e) { return e.tid != waiters.front().tid; }))
      several_++;
    pending_.erase(it);
  }
}

void FaultMetrics::set_vcpu_threads(std::vector<uint32_t> tids) {
  std::lock_guard lock(mutex_);
  vcpu_tids_ = std::move(tids);
}

// Each vCPU's blocked intervals, merged (a thread blocks on one fault at a
// time, but the kernel may report a retried fault twice); then one sweep
// over all of them for the time every vCPU was blocked at once.
void FaultMetrics::summarize_vcpus(Summary& s) const {
  size_t n = vcpu_tids_.size();
  if (n == 0) return;
  s.vcpus.resize(n);
  std::vector<std::vector<std::pair<Clock::time_point, Clock::time_point>>> spans(n);
  std::vector<std::vector<double>> lat(n);
  for (const Done& d : done_) {
    auto it = std::find(vcpu_tids_.begin(), vcpu_tids_.end(), d.tid);
    if (it == vcpu_tids_.end()) {
      s.other_thread_faults++;
      continue;
    }
    auto v = static_cast<size_t>(it - vcpu_tids_.begin());
    spans[v].push_back({d.t_read, d.t_done});
    lat[v].push_back(us(d.t_read, d.t_done));
  }
  std::vector<std::pair<Clock::time_point, int>> edges;  // +1 a vCPU blocks, -1 it runs again
  for (size_t v = 0; v < n; v++) {
    Summary::Vcpu& out = s.vcpus[v];
    out.tid = vcpu_tids_[v];
    out.faults = lat[v].size();
    out.p50_us = percentile(lat[v], 0.5);
    out.p99_us = percentile(lat[v], 0.99);
    auto& sp = spans[v];
    std::sort(sp.begin(), sp.end());
    for (size_t i = 0; i < sp.size();) {
      auto [a, b] = sp[i];
      for (i++; i < sp.size() && sp[i].first <= b; i++) b = std::max(b, sp[i].second);
      out.blocked_ms += us(a, b) / 1000.0;
      edges.push_back({a, +1});
      edges.push_back({b, -1});
    }
  }
  std::sort(edges.begin(), edges.end());  // at a tie, -1 first: touching intervals do not overlap
  int blocked = 0;
  Clock::time_point since{};
  for (const auto& [t, step] : edges) {
    if (blocked == static_cast<int>(n)) s.all_vcpus_blocked_ms += us(since, t) / 1000.0;
    blocked += step;
    since = t;
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
    auto v = std::find(vcpu_tids_.begin(), vcpu_tids_.end(), d.tid);
    s.records.push_back({d.page, us(first, d.t_read) / 1000.0, req.back(), net.back(), cont.back(), d.requested,
                         v == vcpu_tids_.end() ? -1 : static_cast<int>(v - vcpu_tids_.begin())});
  }
  summarize_vcpus(s);
  s.pages_waited_by_several = several_;
  s.faults_joined =
      static_cast<uint64_t>(std::count_if(done_.begin(), done_.end(), [](const Done& d) { return d.joined; }));
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
  nlohmann::ordered_json vcpus = nlohmann::ordered_json::array();
  for (size_t v = 0; v < s.vcpus.size(); v++) {
    const auto& c = s.vcpus[v];
    vcpus.push_back({{"vcpu", v}, {"tid", c.tid}, {"faults", c.faults}, {"blocked_ms", c.blocked_ms},
                     {"latency_us", {{"p50", c.p50_us}, {"p99", c.p99_us}}}});
  }
  j["by_vcpu"] = vcpus;
  j["all_vcpus_blocked_ms"] = s.all_vcpus_blocked_ms;
  j["other_thread_faults"] = s.other_thread_faults;
  j["pages_waited_by_several"] = s.pages_waited_by_several;
  j["faults_joined"] = s.faults_joined;
  j["pages_requested"] = s.pages_requested;
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const auto& r : s.records)
    rows.push_back(
        {r.page, r.t_ms, r.read_to_request_us, r.request_to_data_us, r.data_to_mapped_us, r.requested, r.vcpu});
  j["fault_records"] = {{"columns",
                         {"page", "t_ms", "read_to_request_us", "request_to_data_us", "data_to_mapped_us", "requested",
                          "vcpu"}},
                        {"rows", rows}};
  return j;
}

}  // namespace migration
