#include "source.h"

#include <chrono>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "clock.h"
#include "error.h"
#include "hugepages.h"
#include "machine.h"
#include "vcpu_thread.h"
#include "vm_state.h"

namespace migration {

namespace {

using vmm::Clock;
using vmm::ms_between;

Frame expect(Channel& ch, FrameType type) {
  Frame f = ch.receive();
  if (f.header.type == FrameType::Error) throw vmm::Error("destination refused: " + decode_error(f.payload));
  if (f.header.type != type)
    throw ProtocolError(fmt::format("expected {} from the destination, got {}", frame_type_name(type),
                                    frame_type_name(f.header.type)));
  return f;
}

}  // namespace

void check_source_mode(const vmm::Machine& m, Mode mode) {
  if (mode != Mode::Postcopy && !m.can_log_dirty())
    throw vmm::Error(fmt::format(
        "--mode {} needs KVM dirty logging, which KVM refuses on a KVM_MEM_GUEST_MEMFD memslot: run the source "
        "with --gmem-bind hva (a plain memslot over the guest_memfd mapping), or use --mode postcopy",
        mode_name(mode)));
}

void Source::phase(SourcePhase p, const std::string& detail) {
  phases_.to(p, detail);
  if (options_.status) options_.status->set_phase(phase_name(p), detail);
}

Source::Source(vmm::Machine& machine, vmm::VcpuThreads& vcpu, SourceOptions options)
    : machine_(machine), vcpu_(vcpu), options_(std::move(options)) {
  uint64_t chunks = machine_.memory().size() / kChunk;
  sent_ = vmm::Bitmap(chunks);
  dest_nonzero_ = vmm::Bitmap(chunks);
  if (options_.precopy_rounds == 0) options_.precopy_rounds = options_.mode == Mode::Precopy ? 30 : 1;
}

std::unique_ptr<Channel> Source::dial() {
  auto ch = connect_channel(io_, options_.to, options_.link.link_timeout);
  if (options_.tls) ch->start_tls(*options_.tls, false, options_.link.link_timeout);
  return ch;
}

// Runs `attempt` until it gets through, with backoff, for at most the
// connect timeout: a refused, closed, reset or silent connection is tried
// again; a refusal in words (HelloReply), another key or a peer that does not
// speak the protocol is not.
void Source::with_retries(const char* what, const std::function<void()>& attempt) {
  auto t0 = Clock::now();
  Backoff backoff(t0 + options_.link.connect_timeout);
  for (unsigned n = 1;; n++) {
    try {
      attempt();
      if (n > 1)
        spdlog::info("migrate: {} got through on attempt {}, {:.0f} ms after the first", what, n,
                     ms_between(t0, Clock::now()));
      return;
    } catch (const AuthError&) {
      throw;
    } catch (const ConnectionError& e) {
      auto wait = backoff.next();
      if (!wait)
        throw ConnectionError(fmt::format("{} (attempt {}; gave up {:.1f} s after the first, --connect-timeout)",
                                          e.what(), n, ms_between(t0, Clock::now()) / 1000));
      spdlog::warn("migrate: {}: {}; attempt {} in {} ms", what, e.what(), n + 1, wait->count());
      std::this_thread::sleep_for(*wait);
    }
  }
}

void Source::connect() {
  const auto& mem = machine_.memory();
  Hello hello{Role::Main, std::random_device{}() | (uint64_t{std::random_device{}()} << 32), options_.mode,
              mem.size(), std::string(vmm::backend_name(mem.backend())), mem.page_size()};
  hello.vcpus = static_cast<uint32_t>(machine_.vcpu_count());
  hello_ = hello;
  if (options_.tls) spdlog::info("migrate: TLS 1.3 with the pre-shared key; {}", ktls_probe());
  with_retries("the main connection", [&] {
    main_ = dial();
    // A destination that accepts and then says nothing cannot hang us.
    main_->set_receive_timeout(options_.handshake_timeout);
    main_->send(FrameType::Hello, 0, encode(hello));
    peer_ = decode_hello_reply(expect(*main_, FrameType::HelloReply).payload);
  });
  if (!peer_.accepted) throw vmm::Error("destination refused the migration: " + peer_.reason);
  main_->set_receive_timeout(std::chrono::milliseconds(0));
  hello.role = Role::Urgent;
  with_retries("the urgent connection", [&] {
    urgent_ = dial();
    if (auto why = urgent_->mark_urgent(); !why.empty())
      spdlog::warn("migrate: answers to faults go unmarked (the kernel refused {}): they queue behind the push", why);
    urgent_->send(FrameType::Hello, 0, encode(hello));
  });
  spdlog::info("migrate: {} to {} ({} {} pages, userfaultfd ready {}), mode {}", vmm::format_size(mem.size()),
               options_.to, peer_.dst_backend, vmm::format_size(peer_.dst_page_size),
               peer_.uffd_minor ? "yes" : "no", mode_name(options_.mode));
}

// Sends every chunk whose bit is set, in runs of at most one frame.
uint64_t Source::send_chunks(const vmm::Bitmap& bits, const vmm::Bitmap* allocated) {
  const uint8_t* mem = machine_.memory().primary();
  uint64_t sent = 0;
  for (uint64_t c = bits.find_next(0); c < bits.size();) {
    auto run = static_cast<uint32_t>(std::min<uint64_t>(kMaxChunksPerFrame, bits.find_next_clear(c) - c));
    uint32_t n = 0;
    PagesStats st;
    auto payload =
        encode_pages_bounded(c * kChunk, run, 1, mem, &dest_nonzero_, allocated, st, n, &dest_nonzero_);
    main_->send(FrameType::Pages, 0, payload);
    sent_.set(c, c + n);
    sent += n;
    c = n < run ? c + n : bits.find_next(c + n);
  }
  return sent;
}

void Source::precopy() {
  machine_.set_dirty_logging(true);
  vmm::Bitmap bits(sent_.size(), true);
  vmm::Bitmap dirty = machine_.get_dirty_log();  // clears what happened before round 0, which sends everything
  // Round 0 skips chunks the backend never allocated; a write after this scan
  // shows up in the dirty log, so nothing is lost.
  vmm::Bitmap allocated = machine_.memory().allocated_chunks();
  for (rounds_ = 0;; rounds_++) {
    auto t0 = Clock::now();
    uint64_t n = send_chunks(bits, rounds_ == 0 ? &allocated : nullptr);
    precopy_chunks_ += n;
    main_->send(FrameType::RoundDone, 0, encode(RoundDone{rounds_, n}));
    dirty = machine_.get_dirty_log();
    uint64_t ndirty = dirty.count();
    spdlog::info("precopy: round {} sent {} in {:.0f} ms; {} dirtied meanwhile", rounds_,
                 vmm::format_size(n * kChunk), ms_between(t0, Clock::now()), vmm::format_size(ndirty * kChunk));
    if (ndirty < options_.converge_chunks || rounds_ >= options_.precopy_rounds || vcpu_.finished()) break;
    std::swap(bits, dirty);
  }
  rounds_++;
  pending_dirty_ = std::move(dirty);  // stale on the destination: resent or missing at switchover
}

// Destination pages that still have to come: any chunk never sent or dirtied
// since. Word by word: 8 GiB of 4 KiB pages is 32,768 words.
vmm::Bitmap Source::missing_pages(const vmm::Bitmap& final_dirty) const {
  uint64_t page = peer_.dst_page_size, npages = machine_.memory().size() / page, per = page / kChunk;
  vmm::Bitmap need = sent_;
  need.flip() |= final_dirty;  // per 4 KiB chunk
  if (per == 1) return need;
  vmm::Bitmap missing(npages);
  for (uint64_t p = 0; p < npages; p++)  // a large page spans whole words of chunks (2 MiB: 8)
    if (need.any(p * per, (p + 1) * per)) missing.set(p);
  return missing;
}

// Chunks the destination holds from precopy that the guest wrote since:
// sent as ranges (StaleChunks frames), so that what crosses the wire at
// switchover is as large as the guest's last writes, not as its RAM.
uint64_t Source::send_stale(const vmm::Bitmap& final_dirty) {
  StaleChunks frame;
  uint64_t total = 0;
  auto flush = [&] {
    if (frame.ranges.empty()) return;
    main_->send(FrameType::StaleChunks, 0, encode(frame));
    total += frame.ranges.size();
    frame.ranges.clear();
  };
  // In the downtime: walked in place, no copy of a bitmap as large as RAM.
  for (uint64_t c = final_dirty.find_next(0); c < final_dirty.size(); c = final_dirty.find_next(c + 1)) {
    if (!sent_.test(c)) continue;  // never sent: missing, not stale
    auto& r = frame.ranges;
    if (!r.empty() && r.back().first + r.back().count == c && r.back().count < UINT32_MAX) {
      r.back().count++;
    } else {
      if (r.size() == kMaxStaleRanges) flush();
      r.push_back({c, 1});
    }
  }
  flush();
  return total;
}

// While the guest still runs: every page it has written gets a page-table
// entry in our view, so the page server reads them without faulting after
// switchover (a guest_memfd guest bound by fd never mapped them there). A
// page first written after this costs one fault when it is read; a kernel
// that refuses costs a fault per page, which is said, not fatal.
void Source::map_guest_memory_for_reading() {
  auto t0 = Clock::now();
  const auto& mem = machine_.memory();
  try {
    uint64_t mapped = mem.map_for_reading(mem.allocated_chunks());
    spdlog::info("source: mapped {} of guest memory for reading in {:.1f} ms", vmm::format_size(mapped),
                 ms_between(t0, Clock::now()));
  } catch (const vmm::Error& e) {
    spdlog::warn("source: {}; the page server will take a page fault per 4 KiB it reads", e.what());
  }
}

void Source::switchover(SourceReport& report) {
  auto t_stop = Clock::now();
  vmm::Bitmap final_dirty(sent_.size());
  if (options_.mode != Mode::Postcopy) {
    final_dirty = machine_.get_dirty_log();
    final_dirty |= pending_dirty_;
  }
  if (options_.mode == Mode::Precopy) {
    precopy_chunks_ += send_chunks(final_dirty);
    final_dirty = vmm::Bitmap(sent_.size());
  }
  VmState state = capture_vm(machine_, migratable_msrs(machine_.kvm(), machine_.vcpu()));
  main_->send(FrameType::VmState, 0, encode(state));
  PostcopyBegin begin;
  begin.page_size = peer_.dst_page_size;
  begin.npages = machine_.memory().size() / begin.page_size;
  begin.stale_ranges = send_stale(final_dirty);
  report.downtime_source_ms = ms_between(t_stop, Clock::now());
  begin.source_stop_us = static_cast<uint64_t>(report.downtime_source_ms * 1000);
  main_->send(FrameType::PostcopyBegin, 0, encode(begin));
  // The destination starts the guest meanwhile: out of the downtime.
  vmm::Bitmap missing = missing_pages(final_dirty);
  spdlog::info("switchover: vCPU state sent {:.2f} ms after stop ({} stale ranges); {} of {} destination pages left "
               "for postcopy", report.downtime_source_ms, begin.stale_ranges, missing.count(), begin.npages);
  if (options_.push_rate)
    spdlog::info("postcopy: background push capped at {:.1f} MiB/s", static_cast<double>(options_.push_rate) / (1 << 20));
  serve_postcopy(report, std::move(missing), begin.page_size);
  // Dirty logging goes off only now, out of the downtime and away from the
  // first faults: the memslot update is not free (docs/lab: figures from the code's comments), and a stopped guest
  // dirties nothing.
  if (options_.mode != Mode::Postcopy) machine_.set_dirty_logging(false);
}

// Serves pages until the destination holds them all. After the commit point a
// lost link pauses the page server and the source redials, as often as the
// link is lost, each time within the recovery timeout.
void Source::serve_postcopy(SourceReport& report, vmm::Bitmap missing, uint64_t page_size) {
  const auto& mem = machine_.memory();
  uint64_t npages = mem.size() / page_size;
  for (;;) {
    for (auto* ch : {main_.get(), urgent_.get()})
      if (auto why = ch->set_link_timeout(options_.link.link_timeout); !why.empty())
        spdlog::warn("postcopy: a blocked send notices a lost link only from the receive side ({} refused)", why);
    if (phases_.now() == SourcePhase::Paused) phase(SourcePhase::Postcopy);
    PageServer server(mem.primary(), mem.size(), page_size, missing, dest_nonzero_,
                      [&mem] { return mem.allocated_chunks(); }, *main_, *urgent_, options_.push_rate,
                      options_.link.link_timeout, [this] {
                        committed_ = true;
                        phase(SourcePhase::Postcopy, "Started came; StartedAck sent");
                      });
    try {
      PageServerStats st = server.run();
      report.postcopy.pages_urgent += st.pages_urgent;
      report.postcopy.pages_pushed += st.pages_pushed;
      report.postcopy.chunks_data += st.chunks_data;
      report.postcopy.chunks_zero_markers += st.chunks_zero_markers;
      report.postcopy.chunks_skipped += st.chunks_skipped;
      report.postcopy.requests += st.requests;
      return;
    } catch (const LinkLost& e) {
      if (!committed_) throw;  // before the commit point the guest resumes here
      auto t_lost = Clock::now();
      phase(SourcePhase::Paused, e.what());
      vmm::Bitmap resent = missing;  // missing then, sent since, and missing still
      resent &= server.sent_bitmap();
      missing = reconnect(e.what(), npages);
      resent &= missing;
      report.pages_resent += resent.count();
      report.pauses_ms.push_back(ms_between(t_lost, Clock::now()));
      if (missing.count() == 0) {
        // Its Received bitmap is full: Complete was lost with the link.
        spdlog::info("postcopy: reconnected after {:.0f} ms; the destination holds every page: complete",
                     report.pauses_ms.back());
        return;
      }
      spdlog::info("postcopy: resumed after {:.0f} ms: {} pages still to send ({} sent again so far: in flight or claimed by "
                   "the push when the link broke)",
                   report.pauses_ms.back(), missing.count(), report.pages_resent);
    }
  }
}

// Redials the destination until it takes the reconnection of this migration
// (or the recovery timeout runs out), and returns the pages it still lacks.
vmm::Bitmap Source::reconnect(const std::string& why, uint64_t npages) {
  auto t0 = Clock::now(), deadline = t0 + options_.link.recovery_timeout;
  spdlog::warn("postcopy: link lost ({}); paused, redialing {} for up to {} s", why, options_.to,
               options_.link.recovery_timeout.count() / 1000);
  std::string last = why;
  for (unsigned attempt = 1;; attempt++) {
    if (Clock::now() >= deadline)
      throw vmm::Error(fmt::format("the link to {} stayed lost for {:.0f} s (last: {}): the guest ran there since "
                                   "switchover and cannot go on without the pages only this side held",
                                   options_.to, ms_between(t0, Clock::now()) / 1000, last));
    try {
      main_ = dial();
      main_->set_receive_timeout(options_.link.link_timeout);
      Hello hello = hello_;
      hello.resume = true;
      main_->send(FrameType::Hello, 0, encode(hello));
      HelloReply reply = decode_hello_reply(expect(*main_, FrameType::HelloReply).payload);
      // Refused in words: the destination may still be waiting for the urgent
      // half of an attempt that failed here; it takes the next one once it
      // gives that up. After the commit the guest lives there: keep trying.
      if (!reply.accepted) throw ConnectionError("the destination refused the reconnection: " + reply.reason);
      hello.role = Role::Urgent;
      urgent_ = dial();
      urgent_->mark_urgent();
      urgent_->send(FrameType::Hello, 0, encode(hello));
      vmm::Bitmap missing(npages, true);
      for (;;) {
        Frame f = expect(*main_, FrameType::Received);
        Received r = decode_received(f.payload, npages);
        for (uint64_t i = r.bits.find_next(0); i < r.npages; i = r.bits.find_next(i + 1)) missing.reset(r.first_page + i);
        if (f.header.flags & kReceivedLast) break;
      }
      spdlog::info("postcopy: reconnected to {} (attempt {}, {:.0f} ms after the loss)", options_.to, attempt,
                   ms_between(t0, Clock::now()));
      return missing;
    } catch (const ConnectionError& e) {
      last = e.what();
      spdlog::debug("postcopy: reconnection attempt {}: {}", attempt, last);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

SourceReport Source::run() {
  SourceReport report;
  auto t0 = Clock::now();
  bool switched = false;
  try {
    phase(SourcePhase::Connecting, options_.to);
    connect();
    map_guest_memory_for_reading();
    if (options_.mode != Mode::Postcopy) {
      phase(SourcePhase::Precopy);
      precopy();
    }
    // The VM state goes out behind whatever precopy data the kernel still
    // queues for the main connection; the guest runs while that drains, or
    // the queue would be downtime (docs/lab: figures from the code's comments).
    auto t_drain = Clock::now();
    bool drained = main_->wait_sent(64 << 10, std::chrono::milliseconds(500));
    spdlog::debug("switchover: main connection {} in {:.1f} ms", drained ? "drained" : "still queued",
                  ms_between(t_drain, Clock::now()));
    if (!vcpu_.pause()) {
      main_->send(FrameType::Error, 0, encode_error("the guest exited on the source before switchover"));
      report.result = SourceResult::GuestFinished;
      phase(SourcePhase::Failed, "the guest exited before switchover");
      return report;
    }
    switched = true;
    phase(SourcePhase::Switchover);
    switchover(report);
    report.result = SourceResult::Completed;
    phase(SourcePhase::Completed);
  } catch (const std::exception& e) {
    report.error = e.what();
    // Before the commit point the destination has not taken the guest over
    // (it runs no vCPU before StartedAck, and waits for a reconnection that
    // will not come): it resumes here.
    if (switched && !committed_) {
      report.resumed_here = true;  // the caller resumes it, as for any failure before switchover
      switched = false;
    }
    if (phases_.to_unless_final(report.resumed_here ? SourcePhase::ResumedHere : SourcePhase::Failed, report.error) &&
        options_.status)
      options_.status->set_phase(phase_name(phases_.now()), report.error);
    report.result = switched ? SourceResult::FailedAfterSwitchover : SourceResult::FailedBeforeSwitchover;
    if (main_) {
      try {
        main_->send(FrameType::Error, 0, encode_error(report.error));
      } catch (const std::exception&) {
      }
    }
    if (!switched && options_.mode != Mode::Postcopy && machine_.can_log_dirty()) {
      try {
        machine_.set_dirty_logging(false);
      } catch (const std::exception&) {
      }
    }
  }
  report.precopy_rounds = rounds_;
  report.precopy_chunks = precopy_chunks_;
  report.total_ms = ms_between(t0, Clock::now());
  return report;
}

}  // namespace migration
