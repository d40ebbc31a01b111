// The destination's end-of-migration summary (stderr) and --report JSON.
#include <cstring>
#include <fstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "destination.h"
#include "fault_resolver.h"
#include "error.h"
#include "hugepages.h"

namespace migration {

namespace {

// ", all 2 vCPUs at once 0.31 ms (vCPU 0: 120 faults 4.10 ms, vCPU 1: ...)"
std::string by_vcpu_text(const FaultMetrics::Summary& s) {
  if (s.vcpus.size() < 2) return "";
  std::string out = fmt::format(", all {} vCPUs at once {:.2f} ms (", s.vcpus.size(), s.all_vcpus_blocked_ms);
  for (size_t v = 0; v < s.vcpus.size(); v++)
    out += fmt::format("{}vCPU {}: {} faults {:.2f} ms", v ? ", " : "", v, s.vcpus[v].faults, s.vcpus[v].blocked_ms);
  if (s.other_thread_faults) out += fmt::format("; other threads: {} faults", s.other_thread_faults);
  return out + fmt::format(")\n  waited on together: {} pages ({} faults joined a wait: no request of their own)",
                           s.pages_waited_by_several, s.faults_joined);
}

}  // namespace

void Destination::write_report() {
  FaultMetrics::Summary s = out_.metrics.summarize();
  out_.json = report_json(s);
  print_summary(s, out_.json);
  out_.fault_records = std::move(s.records);
  save_report();
}

nlohmann::ordered_json Destination::report_json(const FaultMetrics::Summary& s) const {
  nlohmann::ordered_json j;
  j["mode"] = mode_name(guest_.hello.mode);
  j["uffd_mode"] = postcopy_.uffd ? vmm::uffd_mode_name(options_.uffd_mode) : "none";
  j["src_backend"] = guest_.hello.src_backend;
  j["dst_backend"] = std::string(vmm::backend_name(options_.backend));
  j["page_size"] = guest_.pages->page_size();
  j["mem_size"] = guest_.hello.mem_size;
  auto faults = to_json(s);
  for (auto& [k, v] : faults.items()) j[k] = v;
  j["pages_pushed"] = guest_.pages->pages_pushed();
  j["pages_answered"] = guest_.pages->pages_answered();
  j["zero_pages_skipped"] = guest_.pages->chunks_skipped();
  j["chunks_received"] = guest_.pages->chunks_received();
  j["local_resolutions"] = postcopy_.resolver ? postcopy_.resolver->local_resolutions() : 0;
  FaultResolver::Load load = postcopy_.resolver ? postcopy_.resolver->load() : FaultResolver::Load{};
  j["fault_thread"] = {{"reads", load.reads},
                       {"events", load.events},
                       {"max_events_per_read", load.max_batch},
                       {"cpu_ms", load.cpu_ms},
                       {"wall_ms", load.wall_ms},
                       {"busy_fraction", load.wall_ms > 0 ? load.cpu_ms / load.wall_ms : 0.0}};
  j["phases"] = phases_.to_json();
  j["precopy_rounds"] = times_.rounds;
  j["downtime_ms"] = times_.source_stop_ms + times_.restore_ms + times_.commit_ms;
  j["downtime_breakdown_ms"] = {{"source_stop_to_begin", times_.source_stop_ms},
                                {"destination_restore", times_.restore_ms},
                                {"commit_round_trip", times_.commit_ms},
                                {"destination_restore_parts",
                                 {{"vm_state", times_.restore_parts.state_ms},
                                  {"wait_for_begin", times_.restore_parts.wait_begin_ms},
                                  {"start_guest", times_.restore_parts.start_ms}}}};
  j["total_ms"] = vmm::ms_between(times_.t_hello, times_.t_complete);
  add_link_figures(j);
  nlohmann::ordered_json timeline = nlohmann::ordered_json::array();
  for (const auto& r : s.records)
    timeline.push_back({r.t_ms, r.read_to_request_us + r.request_to_data_us + r.data_to_mapped_us});
  j["fault_timeline_ms_us"] = timeline;
  return j;
}

// What crossed each connection, the push rate, and each lost link.
void Destination::add_link_figures(nlohmann::ordered_json& j) const {
  uint64_t main_bytes = link_.main_bytes();
  uint64_t urgent_bytes = link_.urgent_bytes();
  j["bytes_received"] = main_bytes + urgent_bytes;
  // What answering the faults cost on the wire: the urgent connection carries
  // only requested pages (and requests' answers the push had in flight).
  j["urgent_bytes_received"] = urgent_bytes;
  // Background push rate: main-connection bytes from switchover to completion.
  double push_s = std::chrono::duration<double>(times_.t_complete - times_.t_postcopy).count();
  double push_mib = static_cast<double>(main_bytes - times_.main_bytes_at_postcopy) / (1 << 20);
  j["push_mib"] = push_mib;
  j["push_mib_per_s"] = push_s > 0 ? push_mib / push_s : 0.0;
  // Each lost link: how long the pause lasted, what was still missing then,
  // and how many requests went out again on the new connection.
  nlohmann::ordered_json pauses = nlohmann::ordered_json::array();
  for (const auto& p : times_.pauses)
    pauses.push_back({{"ms", p.ms}, {"pages_missing", p.pages_missing}, {"requests_outstanding", p.requests_outstanding}});
  j["link_pauses"] = pauses;
}

// The text summary on stderr: the figures of the report `j`, as it holds them.
void Destination::print_summary(const FaultMetrics::Summary& s, const nlohmann::ordered_json& j) const {
  double paused_ms = 0;
  for (const auto& p : j["link_pauses"]) paused_ms += p["ms"].get<double>();
  const auto& load = j["fault_thread"];
  double cpu_ms = load["cpu_ms"], wall_ms = load["wall_ms"];
  fmt::print(stderr,
             "\n=== postcopy summary: {} -> {} ({} pages), mode {}, userfaultfd {} ===\n"
             "  faults {:>8}   latency us  p50 {:.0f}  p90 {:.0f}  p99 {:.0f}  max {:.0f}  mean {:.0f}\n"
             "  per fault (p50 us): read->request {:.0f}, request->data {:.0f}, data->mapped {:.0f} ({})\n"
             "  by path: requested {} (p50 {:.0f}, p99 {:.0f} us); already in flight on the push {} (p50 {:.0f}, p99 {:.0f} us)\n"
             "  vCPU blocked {:.2f} ms{}; pages requested {}, pushed {}; zero 4 KiB chunks skipped {}\n"
             "  precopy rounds {}; downtime {:.2f} ms (source {:.2f} + destination {:.2f} + commit {:.2f}); total {:.0f} ms\n"
             "  lost links recovered {} (paused {:.0f} ms in all)\n"
             "  fault thread: {} events in {} reads (at most {} at once), on a CPU {:.1f} of {:.0f} ms ({:.1f}%)\n\n",
             guest_.hello.src_backend, vmm::backend_name(options_.backend), vmm::format_size(guest_.pages->page_size()),
             mode_name(guest_.hello.mode), postcopy_.uffd ? vmm::uffd_mode_name(options_.uffd_mode) : "none", s.faults, s.p50_us, s.p90_us, s.p99_us, s.max_us, s.mean_us, s.request_us_p50,
             s.network_us_p50, s.continue_us_p50,
             options_.uffd_mode == vmm::UffdMode::Minor ? "UFFDIO_CONTINUE" : "UFFDIO_COPY", s.requested.faults,
             s.requested.p50_us, s.requested.p99_us, s.in_flight.faults, s.in_flight.p50_us, s.in_flight.p99_us,
             s.blocked_ms, by_vcpu_text(s), s.pages_requested, guest_.pages->pages_pushed(),
             guest_.pages->chunks_skipped(), times_.rounds, j["downtime_ms"].get<double>(), times_.source_stop_ms, times_.restore_ms, times_.commit_ms,
             j["total_ms"].get<double>(), j["link_pauses"].size(), paused_ms, load["events"].get<uint64_t>(),
             load["reads"].get<uint64_t>(), load["max_events_per_read"].get<uint64_t>(), cpu_ms, wall_ms,
             wall_ms > 0 ? 100 * cpu_ms / wall_ms : 0.0);
}

// After the guest's exit: its record of slow touches joined with the faults.
void Destination::add_guest_view() {
  if (out_.json.empty()) return;  // no postcopy summary to add to
  auto guest = out_.guest_view.record();
  if (!guest) return;  // not the touch guest, or it printed no record
  GuestView::Join join = GuestView::join(*guest, out_.fault_records, guest_.pages->page_size());
  out_.json["guest_view"] = GuestView::to_json(*guest, join);
  const auto& w = out_.json["guest_view"]["waterfall_us"];
  fmt::print(stderr,
             "=== the guest's view: {} of {} faults joined with its touch of the page ===\n"
             "  p50 us: guest {:.0f} = read->request {:.0f} + request->data {:.0f} + data->mapped {:.0f} + unexplained {:.0f}\n"
             "  p99 us: guest {:.0f}, unexplained {:.0f}; slowest touch {} us; one vCPU exit (CPUID) {:.1f} us\n"
             "  slow touches no fault explains while faults were served: {} ({:.1f} ms, longest {:.0f} us)\n\n",
             join.faults.size(), join.faults_recorded, w["guest"]["p50"].get<double>(),
             w["read_to_request"]["p50"].get<double>(), w["request_to_data"]["p50"].get<double>(),
             w["data_to_mapped"]["p50"].get<double>(), w["unexplained"]["p50"].get<double>(),
             w["guest"]["p99"].get<double>(), w["unexplained"]["p99"].get<double>(), guest->max_us,
             guest->exit_cpuid_ns ? static_cast<double>(*guest->exit_cpuid_ns) / 1000.0 : 0.0, join.touches_unexplained,
             join.unexplained_ms, join.longest_unexplained_us);
  save_report();
}

// The guest has migrated by now: a report that cannot be written is said, not
// allowed to stop the guest.
void Destination::save_report() const {
  if (options_.report_path.empty()) return;
  std::ofstream out(options_.report_path);
  if (out << out_.json.dump(2) << "\n" && out.flush()) {
    spdlog::info("receive: report written to {}", options_.report_path);
    return;
  }
  spdlog::error("receive: cannot write the report to {}: {}", options_.report_path, std::strerror(errno));
}

}  // namespace migration
