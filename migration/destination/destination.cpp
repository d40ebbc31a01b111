#include "destination.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "clock.h"
#include "error.h"
#include "fault_resolver.h"
#include "hugepages.h"
#include "pagemap.h"
#include "thread_priority.h"
#include "vm_state.h"

namespace migration {

using vmm::ms_between;

Destination::Destination(DestinationOptions options) : options_(std::move(options)) {}

Destination::~Destination() {
  end_.complete = true;
  if (postcopy_.resolver) postcopy_.resolver->stop();
  if (link_.has_urgent()) link_.urgent().shutdown();
  if (postcopy_.urgent_thread.joinable()) postcopy_.urgent_thread.join();
  if (postcopy_.premap_thread.joinable()) postcopy_.premap_thread.join();
  if (guest_.pages) {
    try {
      guest_.pages->stop_mapper();  // its thread uses out_.metrics and postcopy_.uffd
    } catch (const std::exception&) {
    }
  }
  // The vCPUs are told to stop first. One blocked in an interruptible
  // userfault leaves it (KVM_RUN returns EINTR); one whose fault only a fatal
  // signal ends (a KVM-internal access, such as its kvmclock cache) is freed
  // by the userfaultfd's close, and with the kick pending KVM returns before
  // it runs any guest code on a page whose data never came. Then they are joined.
  if (guest_.vcpus) guest_.vcpus->stop();
  postcopy_.uffd.reset();
  guest_.vcpus.reset();
}

// Precopy pages and rounds, then the switchover: VmState, the stale chunks
// and PostcopyBegin, after which the guest runs here.
void Destination::receive_until_postcopy() {
  bool have_state = false;
  uint64_t stale_ranges = 0;
  Clock::time_point t_state{}, t_state_done{};
  phases_.to(DestinationPhase::Precopy);
  for (;;) {
    std::array<uint8_t, kHeaderSize> raw;
    FrameHeader h = link_.main().receive_header(raw);
    if (h.type == FrameType::Pages) {
      guest_.pages->receive_pages(link_.main(), raw, h, false);
      continue;
    }
    Frame f{h, std::vector<uint8_t>(h.length)};
    link_.main().read_exact(f.payload);
    verify_crc(raw, f.payload, h.crc);
    switch (f.header.type) {
      case FrameType::RoundDone:
        times_.rounds = decode_round_done(f.payload).round + 1;
        spdlog::debug("receive: precopy round {} done", times_.rounds);
        break;
      case FrameType::VmState:
        if (have_state) throw ProtocolError("a second VmState");
        phases_.to(DestinationPhase::Restoring);
        t_state = Clock::now();
        restore_state(f.payload);
        t_state_done = Clock::now();
        times_.restore_parts.state_ms = ms_between(t_state, t_state_done);
        have_state = true;
        break;
      case FrameType::StaleChunks:
        if (!have_state) throw ProtocolError("StaleChunks before VmState");
        for (const ChunkRange& r : decode_stale_chunks(f.payload, guest_.hello.mem_size).ranges) {
          guest_.pages->mark_stale(r.first, r.count);
          stale_ranges++;
        }
        break;
      case FrameType::PostcopyBegin:
        if (!have_state) throw ProtocolError("PostcopyBegin before VmState");
        times_.restore_parts.wait_begin_ms = ms_between(t_state_done, Clock::now());
        switch_over(decode_postcopy_begin(f.payload, guest_.hello.mem_size), stale_ranges, t_state);
        return;
      case FrameType::Error: throw vmm::Error("the source gave up: " + decode_error(f.payload));
      default: throw ProtocolError(fmt::format("unexpected {} before switchover", frame_type_name(f.header.type)));
    }
  }
}

void Destination::restore_state(std::span<const uint8_t> payload) {
  VmState vm = decode_vm_state(payload);
  restore_vm(*guest_.machine, vm);
  guest_.kvm_pages = kvm_mapped_pages(vm.vcpus);
}

// PostcopyBegin came: the guest starts here and the source hears of it.
void Destination::switch_over(const PostcopyBegin& begin, uint64_t stale_ranges, Clock::time_point t_state) {
  if (begin.page_size != guest_.pages->page_size())
    throw ProtocolError(fmt::format("source counts {} byte pages, this destination uses {}", begin.page_size,
                                    guest_.pages->page_size()));
  if (begin.stale_ranges != stale_ranges)
    throw ProtocolError(fmt::format("PostcopyBegin announces {} stale ranges, {} came", begin.stale_ranges,
                                    stale_ranges));
  // Each part is timed on its own: what lies between them (these checks) is
  // in times_.restore_ms alone, so the parts sum to it only if they cover it.
  auto t_start = Clock::now();
  start_guest(begin);
  auto t_started = Clock::now();
  times_.restore_parts.start_ms = ms_between(t_start, t_started);
  times_.restore_ms = ms_between(t_state, t_started);
  times_.t_started_sent = Clock::now();
  phases_.to(DestinationPhase::Held, "Started sent");
  link_.main().send(FrameType::Started, 0, encode(Started{static_cast<uint64_t>(times_.restore_ms * 1000)}));
}

// StartedAck, or a reconnection (the source redials only once it let go):
// the commit. The guest runs here from now on, and never on the source.
void Destination::go() {
  if (end_.started_acked.exchange(true)) return;
  times_.commit_ms = ms_between(times_.t_started_sent, Clock::now());
  phases_.to(DestinationPhase::Postcopy, "the source let go");
  guest_.vcpus->resume();
  spdlog::info("receive: guest running here (the source let go {:.2f} ms after Started)", times_.commit_ms);
}

// Restoring the vCPU made KVM map the pages of its paravirtual areas
// (kvmclock) through the primary view: drop those mappings (the page cache
// keeps the data), so that the first touch of such a page, if it is missing,
// faults to userfaultfd too. In MISSING mode a page KVM instantiated would not
// fault at all: punch it out. Only those pages: dropping the whole primary
// view costs downtime in proportion to guest RAM (KVM's MMU notifier walks
// every gfn of the range) (docs/lab: figures from the code's comments).
void Destination::register_postcopy() {
  uint8_t* primary = guest_.machine->memory().primary();
  uint64_t size = guest_.hello.mem_size, page = guest_.pages->page_size();
  for (uint64_t gpa : guest_.kvm_pages) {
    uint64_t at = gpa / page * page;
    if (at >= size) continue;
    if (::madvise(primary + at, page, MADV_DONTNEED) < 0) vmm::throw_errno("madvise(MADV_DONTNEED, a KVM page)");
    if (options_.uffd_mode == vmm::UffdMode::Missing &&
        ::fallocate(guest_.machine->memory().fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(at),
                    static_cast<off_t>(page)) < 0)
      vmm::throw_errno("fallocate(PUNCH_HOLE, a KVM page)");
  }
  int rc = postcopy_.uffd->try_register(primary, size, vmm::uffd_register_mode(options_.uffd_mode));
  if (rc < 0) {
    errno = -rc;
    vmm::throw_errno(fmt::format("UFFDIO_REGISTER(MODE_{})",
                                 options_.uffd_mode == vmm::UffdMode::Minor ? "MINOR" : "MISSING"));
  }
  check_primary_view();
}

// A page mapped in the primary view never faults: were it missing, the guest
// would read whatever the page cache holds there (zeros) instead of waiting
// for its data. Only pages that are here may be mapped (MINOR), and in
// MISSING mode none (each lands by UFFDIO_COPY, which a mapped page refuses).
// Before the vCPUs exist and Started is sent, so that a failure leaves the
// guest on the source.
void Destination::check_primary_view() const {
  uint64_t page = guest_.pages->page_size();
  uint64_t wrong = 0, first = 0;
  auto t0 = Clock::now();
  auto mapped = vmm::mapped_ranges(guest_.machine->memory().primary(), guest_.hello.mem_size);
  spdlog::debug("receive: {} runs mapped in the primary view, scanned in {:.3f} ms", mapped.size(),
                ms_between(t0, Clock::now()));
  for (const auto& r : mapped)
    for (uint64_t at = r.begin / page * page; at < r.end; at += page) {
      bool fine = options_.uffd_mode == vmm::UffdMode::Minor && guest_.pages->state(at / page) == PageState::Present;
      if (!fine && !wrong++) first = at;
    }
  if (wrong)
    throw vmm::Error(fmt::format("{} guest pages not placed here are mapped in the primary view, where they would "
                                 "never fault (the first at gpa {:#x}): the guest must not run on them",
                                 wrong, first));
}

void Destination::start_guest(const PostcopyBegin& begin) {
  times_.source_stop_ms = static_cast<double>(begin.source_stop_us) / 1000.0;
  uint64_t missing = guest_.pages->npages() - guest_.pages->present();
  if (missing && !postcopy_.uffd)
    throw ProtocolError(fmt::format("a precopy migration left {} pages missing", missing));
  guest_.pages->begin_postcopy(missing ? postcopy_.uffd.get() : nullptr, &out_.metrics);
  if (missing) {
    register_postcopy();
    postcopy_.resolver = std::make_unique<FaultResolver>(
        *postcopy_.uffd, *guest_.pages, [this](const std::vector<uint64_t>& pages) { link_.request(pages); }, out_.metrics);
    auto fail_now = [this](const std::string& why) {
      {
        std::lock_guard lock(end_.error_mutex);
        if (end_.error.empty()) end_.error = why;
      }
      link_.end_main();  // the main thread stops at once, and does not take it for a lost link
    };
    postcopy_.resolver->set_on_error([fail_now](const std::string& e) { fail_now("fault resolver: " + e); });
    postcopy_.resolver->start();
    guest_.pages->start_mapper(fail_now);
  } else if (postcopy_.uffd) {
    postcopy_.uffd->unregister(guest_.machine->memory().primary(), guest_.hello.mem_size);
    postcopy_.uffd.reset();
    // Every page came before switchover: staged data goes straight in.
    if (guest_.staging) std::memcpy(guest_.alias.data(), guest_.staging.data(), guest_.hello.mem_size);
  }
  // Also with nothing missing: StartedAck comes on the urgent connection.
  start_link_threads();
  times_.t_postcopy = Clock::now();
  times_.main_bytes_at_postcopy = link_.main_bytes();
  // Held until the source says it let go (StartedAck, go()): a source that
  // never hears Started resumes its own guest, and this copy must not have run.
  guest_.vcpus = std::make_unique<vmm::VcpuThreads>(*guest_.machine, /*start_paused=*/true);
  auto tids = guest_.vcpus->thread_ids();
  out_.metrics.set_vcpu_threads({tids.begin(), tids.end()});
  if (missing) {
    // Mapping what precopy left is a saving, never urgent: at normal priority
    // it took the cores from the vCPU and the faults (docs/lab: figures from the code's comments).
    postcopy_.premap_thread = std::thread([this] {
      vmm::make_current_thread_background("premap");
      try {
        guest_.pages->install_present_ranges(end_.complete);
      } catch (const std::exception& e) {
        spdlog::error("receive: mapping precopied pages: {}", e.what());
      }
    });
  }
  spdlog::info("receive: guest restored here, held until the source lets go; {} of {} pages of {} still on the source",
               missing, guest_.pages->npages(), vmm::format_size(guest_.pages->page_size()));
}

void Destination::progress() {
  auto now = Clock::now();
  if (now - times_.last_progress < std::chrono::seconds(1)) return;
  double mib = static_cast<double>(link_.main_bytes() + link_.urgent_bytes()) / (1 << 20);
  spdlog::info("postcopy: {} pages left of {}, {:.0f} MiB received ({:.0f} MiB/s overall), {} faults so far",
               guest_.pages->npages() - guest_.pages->present(), guest_.pages->npages(), mib, mib / ms_between(times_.t_hello, now) * 1000,
               out_.metrics.faults_resolved());
  times_.last_progress = now;
}

// Tells the source, once, that every page is here (either receiving thread may
// complete the last page). Returns whether the migration is complete.
//
// Only once the source has let go (StartedAck, or its reconnection): a source
// that hears Complete ends, so a Complete sent before the commit, with the
// StartedAck after it lost, left a destination that may not start the guest
// and a source that had stopped it (the cut before StartedAck in hybrid,
// where precopy had sent every page, lost the guest so).
bool Destination::announce_if_complete() {
  if (!guest_.pages->complete() || !end_.started_acked) return false;
  if (end_.complete.exchange(true)) return true;
  try {
    link_.main().send(FrameType::Complete, 0, {});
    end_.complete_sent = true;
  } catch (const ConnectionError& e) {
    // Every page is here, so the guest needs nothing more; the source learns
    // it from its reconnection (tell_source_complete).
    spdlog::warn("receive: every page is here, but the source could not be told ({})", e.what());
  }
  return true;
}

void Destination::receive_postcopy() {
  // This thread runs at the vCPU's priority. SCHED_FIFO, it held a core for
  // tens of ms at a time receiving the push while the vCPU waited runnable
  // (schedstat): guest stalls that no fault explained. At normal priority a
  // fault on a page in flight on the push still waits little (docs/lab: figures from the code's comments).
  pthread_setname_np(pthread_self(), "main-recv");
  while (!postcopy_done()) {
    announce_if_complete();
    if (postcopy_done()) break;
    try {
      std::array<uint8_t, kHeaderSize> raw;
      FrameHeader h = link_.main().receive_header(raw);
      if (h.type == FrameType::Pages) {
        guest_.pages->receive_pages(link_.main(), raw, h, true);
      } else {
        std::vector<uint8_t> payload(h.length);
        link_.main().read_exact(payload);
        verify_crc(raw, payload, h.crc);
        if (h.type == FrameType::Error) throw vmm::Error("the source gave up: " + decode_error(payload));
        if (h.type == FrameType::CompleteAck && end_.complete_sent) end_.complete_acked = true;
        else if (h.type != FrameType::Heartbeat)
          throw ProtocolError(fmt::format("unexpected {} during postcopy", frame_type_name(h.type)));
      }
    } catch (const ConnectionError& e) {
      if (postcopy_done()) break;
      {
        std::lock_guard lock(end_.error_mutex);
        if (!end_.error.empty()) throw vmm::Error(end_.error);
      }
      recover(e.what());
      continue;
    }
    announce_if_complete();
    progress();
  }
  times_.t_complete = Clock::now();
}

void Destination::finish_postcopy() {
  // The resolver runs until the mapping threads are done: a vCPU that faults
  // on a page they have not mapped yet is mapped by it at once. Stopped first,
  // such a fault went unread until the queue drained (docs/lab: figures from the code's comments).
  if (postcopy_.premap_thread.joinable()) postcopy_.premap_thread.join();
  guest_.pages->stop_mapper();
  if (postcopy_.resolver) {
    postcopy_.resolver->stop();
    if (auto e = postcopy_.resolver->error(); !e.empty()) throw vmm::Error("fault resolver: " + e);
  }
  // A fault between the resolver's stop and here is woken by unregister().
  if (postcopy_.uffd) postcopy_.uffd->unregister(guest_.machine->memory().primary(), guest_.hello.mem_size);
  link_.end_postcopy();
  if (postcopy_.urgent_thread.joinable()) postcopy_.urgent_thread.join();
}

int Destination::run() {
  try {
    return run_phases();
  } catch (const std::exception& e) {
    auto was = phases_.now();
    if (phases_.to_unless_final(DestinationPhase::Failed, e.what()))
      spdlog::info("receive: the migration failed in phase {}", phase_name(was));
    throw;
  }
}

int Destination::run_phases() {
  link_.listen(options_.listen);
  spdlog::info("receive: listening on {} for a migration, RAM on {}{}", options_.listen,
               vmm::backend_name(options_.backend), options_.tls ? ", TLS 1.3 with the pre-shared key" : "");
  if (options_.tls) spdlog::info("receive: {}", ktls_probe());
  auto first = link_.accept_hello([this](const Hello& h) { return check_first_hello(h); }, options_.handshake_timeout,
                                  options_.accept_timeout, "source");
  link_.set_main(std::move(first.channel));
  guest_.hello = first.hello;
  phases_.to(DestinationPhase::Handshake, link_.main().peer());
  times_.t_hello = times_.last_progress = Clock::now();
  HelloReply reply = accept_source(guest_.hello);
  link_.main().send(FrameType::HelloReply, 0, encode(reply));
  if (!reply.accepted) throw vmm::Error("refused the migration: " + reply.reason);
  auto urgent = link_.accept_hello(urgent_of_this_migration("this destination is in the handshake of another migration"),
                                   options_.handshake_timeout, options_.handshake_timeout, "urgent");
  link_.set_urgent(std::move(urgent.channel));
  if (auto why = link_.urgent().mark_urgent(); !why.empty())
    spdlog::warn("receive: page requests go unmarked (the kernel refused {})", why);
  // Past the handshake and until the guest starts here, a dead peer shows
  // as a closed connection (the source may take long to map a large guest);
  // in postcopy the link timeout and heartbeats take over.
  link_.main().set_receive_timeout(std::chrono::milliseconds(0));
  link_.urgent().set_receive_timeout(std::chrono::milliseconds(0));
  spdlog::info("receive: {} from {} ({} on the source), mode {}", vmm::format_size(guest_.hello.mem_size), link_.main().peer(),
               guest_.hello.src_backend, mode_name(guest_.hello.mode));
  receive_until_postcopy();
  receive_postcopy();
  finish_postcopy();
  tell_source_complete();
  phases_.to(DestinationPhase::Completed);
  write_report();
  vmm::VcpuOutcome out = guest_.vcpus->wait();
  if (out.reason != vmm::StopReason::GuestExit)
    throw vmm::Error(fmt::format("guest stopped: {}: {}", vmm::stop_reason_name(out.reason), out.detail));
  spdlog::info("guest exited with code {} on the destination", out.exit_code);
  add_guest_view();
  return out.exit_code;
}

}  // namespace migration
