#include "guest_view.h"

#include <algorithm>
#include <charconv>
#include <string>
#include <unordered_map>

namespace migration {
namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// The next space-separated word of `s`, consumed.
std::string_view next_word(std::string_view& s) {
  size_t b = s.find_first_not_of(' ');
  if (b == std::string_view::npos) return s = {}, std::string_view{};
  size_t e = s.find(' ', b);
  std::string_view w = s.substr(b, e == std::string_view::npos ? std::string_view::npos : e - b);
  s = e == std::string_view::npos ? std::string_view{} : s.substr(e);
  return w;
}

std::optional<uint64_t> number(std::string_view v, int base = 10) {
  uint64_t x = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x, base);
  if (ec != std::errc() || p != v.data() + v.size()) return std::nullopt;
  return x;
}

// key=value words; unknown keys and malformed values are skipped.
template <typename F>
void for_each_kv(std::string_view s, F&& f) {
  for (std::string_view w = next_word(s); !w.empty(); w = next_word(s)) {
    size_t eq = w.find('=');
    if (eq != std::string_view::npos) f(w.substr(0, eq), w.substr(eq + 1));
  }
}

double pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5))];
}

}  // namespace

void GuestView::feed(std::string_view line) {
  std::lock_guard lock(mutex_);
  if (starts_with(line, "SLOWREC ")) {
    std::string_view s = line.substr(8);
    for (std::string_view w = next_word(s); !w.empty(); w = next_word(s)) {
      size_t a = w.find(':'), b = w.rfind(':');
      if (a == b || a == std::string_view::npos) continue;
      auto t = number(w.substr(0, a)), page = number(w.substr(a + 1, b - a - 1)), us = number(w.substr(b + 1));
      if (t && page && us) rec_.touches.push_back({*t, *page, *us});
    }
  } else if (starts_with(line, "SLOW ")) {
    seen_slow_ = true;
    for_each_kv(line.substr(5), [&](std::string_view k, std::string_view v) {
      auto n = number(v, k == "buffer_gpa" ? 16 : 10);
      if (!n) return;
      if (k == "threshold_us") rec_.threshold_us = *n;
      else if (k == "records") rec_.records = *n;
      else if (k == "dropped") rec_.dropped = *n;
      else if (k == "buffer_gpa") rec_.buffer_gpa = *n;
      else if (k == "page_size") rec_.page_size = *n;
      else if (k == "max_us") rec_.max_us = *n;
    });
  } else if (starts_with(line, "EXITCOST ")) {
    for_each_kv(line.substr(9), [&](std::string_view k, std::string_view v) {
      if (k == "cpuid_p50_ns") rec_.exit_cpuid_ns = number(v);
      else if (k == "pio_p50_ns") rec_.exit_pio_ns = number(v);
    });
  }
}

std::optional<GuestView::Record> GuestView::record() const {
  std::lock_guard lock(mutex_);
  if (!seen_slow_ || rec_.page_size == 0) return std::nullopt;
  return rec_;
}

namespace {

using FaultRecord = FaultMetrics::Summary::Record;

// One pass of the join. Without `offset` (guest clock minus the faults'
// clock, in us) any touch of the page may explain a fault; with it only a
// touch under way when the fault was read.
struct Pass {
  std::vector<GuestView::Joined> faults;
  std::vector<size_t> fault_index;  // of each joined fault, in `faults` given
  std::vector<bool> joined;         // per guest touch
};

Pass join_pass(const GuestView::Record& guest, const std::vector<FaultRecord>& faults, uint64_t dst_page_size,
               std::optional<double> offset) {
  constexpr double kSlackUs = 2000;  // the two clocks' disagreement allowed
  std::unordered_map<uint64_t, std::vector<size_t>> by_page;  // indexes into guest.touches
  for (size_t i = 0; i < guest.touches.size(); i++) {
    const GuestView::Touch& t = guest.touches[i];
    by_page[(guest.buffer_gpa + t.page * guest.page_size) / dst_page_size].push_back(i);
  }
  Pass p{{}, {}, std::vector<bool>(guest.touches.size())};
  for (size_t fi = 0; fi < faults.size(); fi++) {
    const FaultRecord& f = faults[fi];
    double vmm_us = f.read_to_request_us + f.request_to_data_us + f.data_to_mapped_us;
    auto it = by_page.find(f.page);
    if (it == by_page.end()) continue;
    auto& c = it->second;
    auto fits = [&](size_t i) {
      const GuestView::Touch& t = guest.touches[i];
      if (static_cast<double>(t.us) < vmm_us * 0.9) return false;
      if (!offset) return true;
      double read_at = f.t_ms * 1000 + *offset;  // in the guest's clock
      return read_at >= static_cast<double>(t.t_us) - kSlackUs &&
             read_at <= static_cast<double>(t.t_us + t.us) + kSlackUs;
    };
    auto best = c.end();
    for (auto i = c.begin(); i != c.end(); ++i)
      if (fits(*i) && (best == c.end() || guest.touches[*i].us < guest.touches[*best].us)) best = i;
    if (best == c.end()) continue;
    const GuestView::Touch& t = guest.touches[*best];
    p.joined[*best] = true;
    c.erase(best);
    double g = static_cast<double>(t.us);
    p.faults.push_back({t.t_us, g, f.read_to_request_us, f.request_to_data_us, f.data_to_mapped_us,
                        std::max(0.0, g - vmm_us), f.requested});
    p.fault_index.push_back(fi);
  }
  return p;
}

}  // namespace

GuestView::Join GuestView::join(const Record& guest, const std::vector<FaultRecord>& faults, uint64_t dst_page_size) {
  Join j;
  j.faults_recorded = faults.size();
  // The guest's clock and the faults' differ by an offset: the median over a
  // first join by page alone. Joined again within it, a fault takes the touch
  // that was under way when it was read, not a later slow touch of its page.
  Pass first = join_pass(guest, faults, dst_page_size, std::nullopt);
  if (first.faults.empty()) return j;
  std::vector<double> offsets;
  for (size_t k = 0; k < first.faults.size(); k++)
    offsets.push_back(static_cast<double>(first.faults[k].guest_t_us) - faults[first.fault_index[k]].t_ms * 1000);
  std::sort(offsets.begin(), offsets.end());
  double offset = offsets[offsets.size() / 2];
  Pass p = join_pass(guest, faults, dst_page_size, offset);
  j.faults = std::move(p.faults);
  // The slow touches no fault explains while faults were being served.
  double from = faults.front().t_ms * 1000 + offset, to = faults.back().t_ms * 1000 + offset;
  for (size_t i = 0; i < guest.touches.size(); i++) {
    const Touch& t = guest.touches[i];
    if (p.joined[i] || static_cast<double>(t.t_us) < from || static_cast<double>(t.t_us) > to) continue;
    j.touches_unexplained++;
    j.unexplained_ms += static_cast<double>(t.us) / 1000.0;
    j.longest_unexplained_us = std::max(j.longest_unexplained_us, static_cast<double>(t.us));
  }
  return j;
}

nlohmann::ordered_json GuestView::to_json(const Record& guest, const Join& j) {
  nlohmann::ordered_json out;
  out["slow_threshold_us"] = guest.threshold_us;
  out["slow_touches"] = guest.touches.size();
  out["slow_touches_dropped"] = guest.dropped;
  out["slowest_touch_us"] = guest.max_us;
  out["faults_joined"] = j.faults.size();
  out["faults_recorded"] = j.faults_recorded;
  out["unexplained_slow_touches"] = {{"count", j.touches_unexplained},
                                     {"sum_ms", j.unexplained_ms},
                                     {"longest_us", j.longest_unexplained_us}};
  if (guest.exit_cpuid_ns) out["vcpu_exit_cpuid_p50_us"] = static_cast<double>(*guest.exit_cpuid_ns) / 1000.0;
  if (guest.exit_pio_ns) out["vcpu_exit_pio_p50_us"] = static_cast<double>(*guest.exit_pio_ns) / 1000.0;
  auto stage = [&](const char* name, double Joined::*m) {
    std::vector<double> v;
    v.reserve(j.faults.size());
    for (const auto& f : j.faults) v.push_back(f.*m);
    out["waterfall_us"][name] = {{"p50", pct(v, 0.5)}, {"p99", pct(v, 0.99)}};
  };
  out["waterfall_us"] = nlohmann::ordered_json::object();
  stage("guest", &Joined::guest_us);
  stage("read_to_request", &Joined::read_to_request_us);
  stage("request_to_data", &Joined::request_to_data_us);
  stage("data_to_mapped", &Joined::data_to_mapped_us);
  stage("unexplained", &Joined::unexplained_us);
  return out;
}

}  // namespace migration
