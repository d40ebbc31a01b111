#include "destination.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "clock.h"
#include "error.h"
#include "fault_resolver.h"
#include "hugepages.h"
#include "acpi.h"
#include "thread_priority.h"
#include "vm_state.h"

namespace migration {

namespace {

using vmm::ms_between;

std::string uffd_refusal(vmm::Backend b, vmm::UffdMode mode, int neg_errno) {
  std::string what = fmt::format("UFFDIO_REGISTER(MODE_{}) on the {} guest RAM failed with {}",
                                 mode == vmm::UffdMode::Minor ? "MINOR" : "MISSING", vmm::backend_name(b),
                                 vmm::errno_name(-neg_errno));
  if (b == vmm::Backend::Gmem)
    return what + ": this kernel cannot register guest_memfd with userfaultfd, so it cannot be a postcopy "
                  "destination on guest_memfd (`vmm caps` and `vmm conformance` show the missing piece). Use "
                  "--mode precopy, or receive on --memory shmem, hugetlb-2m or hugetlb-1g";
  return what;
}

}  // namespace

Destination::Destination(DestinationOptions options) : options_(std::move(options)) {}

Destination::~Destination() {
  complete_ = true;
  if (resolver_) resolver_->stop();
  if (link_.has_urgent()) link_.urgent().shutdown();
  if (urgent_thread_.joinable()) urgent_thread_.join();
  if (premap_thread_.joinable()) premap_thread_.join();
  if (pages_) {
    try {
      pages_->stop_mapper();  // it uses metrics_ and uffd_, which go before pages_
    } catch (const std::exception&) {
    }
  }
  // A failed postcopy may leave the vCPU blocked in a userfault: closing the
  // userfaultfd releases it, so the vCPU thread can be stopped and joined.
  uffd_.reset();
  vcpu_.reset();
}

// "20.5 GiB" for a size that is not a round one.
static std::string approx_size(uint64_t bytes) {
  if (bytes < (1ULL << 30) || bytes % (1ULL << 30) == 0) return vmm::format_size(bytes);
  return fmt::format("{:.1f} GiB", static_cast<double>(bytes) / (1ULL << 30));
}

// What the backend could host if the Hello came now.
static uint64_t hostable_now(vmm::Backend b, std::string* how) {
  if (b == vmm::Backend::Hugetlb2M || b == vmm::Backend::Hugetlb1G) {
    auto pool = vmm::read_hugepage_pool(vmm::backend_page_size(b));
    *how = fmt::format("{} free {} hugepages", pool.free, vmm::format_size(pool.page_size));
    return pool.free * pool.page_size;
  }
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  while (in >> key >> kib) {
    if (key == "MemAvailable:") break;
    in.ignore(256, '\n');
  }
  *how = fmt::format("MemAvailable {}", approx_size(kib * 1024));
  return kib * 1024;
}

std::string Destination::check_first_hello(const Hello& hello) const {
  if (hello.role != Role::Main) return "the first connection must announce the Main role";
  if (hello.resume) return "this destination is not receiving a migration to resume";
  if (hello.vcpus > vmm::kMaxVcpus)
    return fmt::format("the guest has {} vCPUs; this VMM runs at most {}", hello.vcpus, vmm::kMaxVcpus);
  std::string how = fmt::format("--max-mem-size {}", vmm::format_size(options_.max_mem_size));
  uint64_t limit = options_.max_mem_size ? options_.max_mem_size : hostable_now(options_.backend, &how);
  if (hello.mem_size > limit)
    return fmt::format("{} of guest RAM is more than this destination takes ({} of {}: {})",
                       vmm::format_size(hello.mem_size), approx_size(limit), vmm::backend_name(options_.backend),
                       how);
  return "";
}

HelloReply Destination::accept_source(const Hello& hello) {
  HelloReply reply;
  reply.dst_backend = std::string(vmm::backend_name(options_.backend));
  reply.dst_page_size = vmm::backend_page_size(options_.backend);
  if (hello.role != Role::Main) {
    reply.reason = "the first connection must announce the Main role";
    return reply;
  }
  bool postcopy = hello.mode != Mode::Precopy;
  vmm::MachineConfig config{"", "", options_.backend, options_.gmem_bind, hello.mem_size, hello.vcpus};
  if (postcopy && options_.backend == vmm::Backend::Gmem && config.gmem_bind == vmm::GmemBind::Fd) {
    spdlog::info("receive: guest_memfd bound by hva for postcopy, so vCPU faults reach userfaultfd through the VMA");
    config.gmem_bind = vmm::GmemBind::Hva;
  }
  try {
    kvm_ = std::make_unique<vmm::KvmSystem>();
    machine_ = std::make_unique<vmm::Machine>(*kvm_, config, [this](std::string_view line) {
      guest_view_.feed(line);
      if (options_.serial_sink) options_.serial_sink(line);
    });
    alias_ = machine_->memory().map_alias();
    bool staged = postcopy && options_.uffd_mode == vmm::UffdMode::Missing;
    if (staged) {
      // MISSING mode: data waits here until UFFDIO_COPY places it.
      void* p = ::mmap(nullptr, hello.mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
      if (p == MAP_FAILED) vmm::throw_errno("mmap(staging buffer)");
      staging_ = vmm::Mapping(p, hello.mem_size);
    }
    pages_ = std::make_unique<PageStates>(machine_->memory().primary(), alias_.data(), staging_.data(),
                                          hello.mem_size, reply.dst_page_size);
    if (postcopy) {
      // Switchover drops the primary view's PTEs; a kernel without madvise()
      // must be found out now, while the source's guest still runs.
      if (::madvise(machine_->memory().primary(), hello.mem_size, MADV_DONTNEED) < 0)
        vmm::throw_errno("madvise(MADV_DONTNEED, guest RAM)",
                         errno == ENOSYS ? "the kernel has no madvise() (CONFIG_ADVISE_SYSCALLS)" : "");
      vmm::UffdMode mode = options_.uffd_mode;
      // MINOR faults need every page in the page cache; MISSING faults need it empty.
      if (mode == vmm::UffdMode::Minor) machine_->memory().populate();
      uint64_t want = UFFD_FEATURE_THREAD_ID | (mode == vmm::UffdMode::Minor
                                                     ? UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MINOR_HUGETLBFS
                                                     : UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MISSING_HUGETLBFS);
      uffd_ = std::make_unique<vmm::Userfaultfd>(want & vmm::Userfaultfd::supported_features());
      uint64_t ioctls = 0;
      int rc = uffd_->try_register(machine_->memory().primary(), hello.mem_size, vmm::uffd_register_mode(mode),
                                   &ioctls);
      if (rc < 0) {
        reply.reason = uffd_refusal(options_.backend, mode, rc);
        return reply;
      }
      if (!(ioctls & vmm::uffd_resolve_ioctl_bit(mode))) {
        reply.reason = fmt::format("the registered {} range does not offer {}", vmm::backend_name(options_.backend),
                                   mode == vmm::UffdMode::Minor ? "UFFDIO_CONTINUE" : "UFFDIO_COPY");
        return reply;
      }
      // Proven possible; the real registration waits for switchover, because
      // restoring the vCPU makes KVM write guest RAM (kvmclock) from this thread.
      uffd_->unregister(machine_->memory().primary(), hello.mem_size);
      reply.uffd_minor = true;
    }
  } catch (const std::exception& e) {
    reply.reason = fmt::format("cannot host {} of guest RAM on {}: {}", vmm::format_size(hello.mem_size),
                               vmm::backend_name(options_.backend), e.what());
    return reply;
  }
  reply.accepted = true;
  return reply;
}

void Destination::receive_until_postcopy() {
  bool have_state = false;
  uint64_t stale_ranges = 0;
  Clock::time_point t_state{}, t_state_done{};
  for (;;) {
    std::array<uint8_t, kHeaderSize> raw;
    FrameHeader h = link_.main().receive_header(raw);
    if (h.type == FrameType::Pages) {
      pages_->receive_pages(link_.main(), raw, h, false);
      continue;
    }
    Frame f{h, std::vector<uint8_t>(h.length)};
    link_.main().read_exact(f.payload);
    verify_crc(raw, f.payload, h.crc);
    switch (f.header.type) {
      case FrameType::RoundDone:
        rounds_ = decode_round_done(f.payload).round + 1;
        spdlog::debug("receive: precopy round {} done", rounds_);
        break;
      case FrameType::VmState:
        t_state = Clock::now();
        {
          VmState vm = decode_vm_state(f.payload);
          restore_vm(*machine_, vm);
          kvm_pages_ = kvm_mapped_pages(vm.vcpus);
        }
        t_state_done = Clock::now();
        restore_parts_.state_ms = ms_between(t_state, t_state_done);
        have_state = true;
        break;
      case FrameType::StaleChunks: {
        if (!have_state) throw ProtocolError("StaleChunks before VmState");
        for (const ChunkRange& r : decode_stale_chunks(f.payload, hello_.mem_size).ranges) {
          pages_->mark_stale(r.first, r.count);
          stale_ranges++;
        }
        break;
      }
      case FrameType::PostcopyBegin: {
        if (!have_state) throw ProtocolError("PostcopyBegin before VmState");
        restore_parts_.wait_begin_ms = ms_between(t_state_done, Clock::now());
        PostcopyBegin begin = decode_postcopy_begin(f.payload, hello_.mem_size);
        if (begin.page_size != pages_->page_size())
          throw ProtocolError(fmt::format("source counts {} byte pages, this destination uses {}", begin.page_size,
                                          pages_->page_size()));
        if (begin.stale_ranges != stale_ranges)
          throw ProtocolError(fmt::format("PostcopyBegin announces {} stale ranges, {} came", begin.stale_ranges,
                                          stale_ranges));
        // Each part is timed on its own: what lies between them (these checks)
        // is in restore_ms_ alone, so the parts sum to it only if they cover it.
        auto t_start = Clock::now();
        start_guest(begin);
        auto t_started = Clock::now();
        restore_parts_.start_ms = ms_between(t_start, t_started);
        restore_ms_ = ms_between(t_state, t_started);
        link_.main().send(FrameType::Started, 0, encode(Started{static_cast<uint64_t>(restore_ms_ * 1000)}));
        return;
      }
      case FrameType::Error: throw vmm::Error("the source gave up: " + decode_error(f.payload));
      default: throw ProtocolError(fmt::format("unexpected {} before switchover", frame_type_name(f.header.type)));
    }
  }
}

// Restoring the vCPU made KVM map the pages of its paravirtual areas
// (kvmclock) through the primary view: drop those mappings (the page cache
// keeps the data), so that the first touch of such a page, if it is missing,
// faults to userfaultfd too. In MISSING mode a page KVM instantiated would not
// fault at all: punch it out. Only those pages: dropping the whole primary
// view took 2.0 ms of the downtime at 8 GiB (KVM's MMU notifier walks every
// gfn of the range), 0.2 ms at 512 MiB.
void Destination::register_postcopy() {
  uint8_t* primary = machine_->memory().primary();
  uint64_t size = hello_.mem_size, page = pages_->page_size();
  for (uint64_t gpa : kvm_pages_) {
    uint64_t at = gpa / page * page;
    if (at >= size) continue;
    if (::madvise(primary + at, page, MADV_DONTNEED) < 0) vmm::throw_errno("madvise(MADV_DONTNEED, a KVM page)");
    if (options_.uffd_mode == vmm::UffdMode::Missing &&
        ::fallocate(machine_->memory().fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(at),
                    static_cast<off_t>(page)) < 0)
      vmm::throw_errno("fallocate(PUNCH_HOLE, a KVM page)");
  }
  int rc = uffd_->try_register(primary, size, vmm::uffd_register_mode(options_.uffd_mode));
  if (rc < 0) {
    errno = -rc;
    vmm::throw_errno(fmt::format("UFFDIO_REGISTER(MODE_{})",
                                 options_.uffd_mode == vmm::UffdMode::Minor ? "MINOR" : "MISSING"));
  }
}

void Destination::start_guest(const PostcopyBegin& begin) {
  source_stop_ms_ = static_cast<double>(begin.source_stop_us) / 1000.0;
  uint64_t missing = pages_->npages() - pages_->present();
  if (missing && !uffd_)
    throw ProtocolError(fmt::format("a precopy migration left {} pages missing", missing));
  pages_->begin_postcopy(missing ? uffd_.get() : nullptr, &metrics_);
  if (missing) {
    register_postcopy();
    resolver_ = std::make_unique<FaultResolver>(
        *uffd_, *pages_, [this](const std::vector<uint64_t>& pages) { link_.request(pages); }, metrics_);
    auto fail_now = [this](const std::string& why) {
      {
        std::lock_guard lock(error_mutex_);
        if (error_.empty()) error_ = why;
      }
      link_.end_main();  // the main thread stops at once, and does not take it for a lost link
    };
    resolver_->set_on_error([fail_now](const std::string& e) { fail_now("fault resolver: " + e); });
    resolver_->start();
    pages_->start_mapper(fail_now);
    start_link_threads();
  } else if (uffd_) {
    uffd_->unregister(machine_->memory().primary(), hello_.mem_size);
    uffd_.reset();
    // Every page came before switchover: staged data goes straight in.
    if (staging_) std::memcpy(alias_.data(), staging_.data(), hello_.mem_size);
  }
  t_postcopy_ = Clock::now();
  main_bytes_at_postcopy_ = link_.main_bytes();
  vcpu_ = std::make_unique<vmm::VcpuThreads>(*machine_);
  auto tids = vcpu_->thread_ids();
  metrics_.set_vcpu_threads({tids.begin(), tids.end()});
  if (missing) {
    // Mapping what precopy left is a saving, never urgent: at normal priority
    // it took the cores from the vCPU and the faults (8 GiB hybrid: fault
    // p99 11.0 ms, downtime 2.5 ms, medians of three runs).
    premap_thread_ = std::thread([this] {
      vmm::make_current_thread_background("premap");
      try {
        pages_->install_present_ranges(complete_);
      } catch (const std::exception& e) {
        spdlog::error("receive: mapping precopied pages: {}", e.what());
      }
    });
  }
  spdlog::info("receive: guest running here; {} of {} pages of {} still on the source", missing, pages_->npages(),
               vmm::format_size(pages_->page_size()));
}

void Destination::progress() {
  auto now = Clock::now();
  if (now - last_progress_ < std::chrono::seconds(1)) return;
  double mib = static_cast<double>(link_.main_bytes() + link_.urgent_bytes()) / (1 << 20);
  spdlog::info("postcopy: {} pages left of {}, {:.0f} MiB received ({:.0f} MiB/s overall), {} faults so far",
               pages_->npages() - pages_->present(), pages_->npages(), mib, mib / ms_between(t_hello_, now) * 1000,
               metrics_.faults_resolved());
  last_progress_ = now;
}

// Tells the source, once, that every page is here (either receiving thread may
// complete the last page). Returns whether the migration is complete.
bool Destination::announce_if_complete() {
  if (!pages_->complete()) return false;
  if (complete_.exchange(true)) return true;
  try {
    link_.main().send(FrameType::Complete, 0, {});
  } catch (const ConnectionError& e) {
    // Every page is here, so the guest needs nothing more: the source, which
    // never heard it, gives up after its recovery timeout.
    spdlog::warn("receive: every page is here, but the source could not be told ({})", e.what());
  }
  return true;
}

void Destination::urgent_loop() {
  vmm::make_current_thread_urgent("urgent-recv");
  try {
    while (!complete_) {
      std::array<uint8_t, kHeaderSize> raw;
      FrameHeader h = link_.urgent().receive_header(raw);
      if (h.type != FrameType::Pages || !(h.flags & kPagesUrgent))
        throw ProtocolError(fmt::format("unexpected {} on the urgent connection", frame_type_name(h.type)));
      pages_->receive_pages(link_.urgent(), raw, h, true);
      announce_if_complete();
    }
  } catch (const ConnectionError& e) {
    // A lost link: the main thread finds its connection ended too, and recovers.
    if (complete_) return;
    spdlog::debug("receive: urgent connection: {}", e.what());
    link_.main().shutdown();
  } catch (const std::exception& e) {
    if (complete_) return;
    std::lock_guard lock(error_mutex_);
    error_ = fmt::format("urgent connection: {}", e.what());
    link_.main().shutdown();
  }
}

void Destination::start_link_threads() {
  link_.up(options_.link);
  urgent_thread_ = std::thread([this] { urgent_loop(); });
}

void Destination::stop_link_threads() {
  link_.down();
  if (urgent_thread_.joinable()) urgent_thread_.join();
}

// Accepts one connection; installs it if it is this migration's reconnection.
bool Destination::take_reconnection(std::chrono::milliseconds left) {
  Arrival m, u;
  try {
    m = link_.accept_hello(
        [this](const Hello& h) {
          return h.role == Role::Main && h.resume && h.session == hello_.session
                     ? std::string()
                     : std::string("this destination is receiving another migration; it takes only that one's "
                                   "reconnection");
        },
        options_.link.link_timeout, std::max(left, std::chrono::milliseconds(1)), "reconnecting source");
  } catch (const ConnectionError&) {
    return false;  // nobody came before the deadline: the caller says so
  }
  try {
    m.channel->set_receive_timeout(options_.link.link_timeout);
    HelloReply yes;
    yes.accepted = true;
    yes.dst_backend = std::string(vmm::backend_name(options_.backend));
    yes.dst_page_size = pages_->page_size();
    yes.uffd_minor = true;
    m.channel->send(FrameType::HelloReply, 0, encode(yes));
    u = link_.accept_hello(
        [this](const Hello& h) {
          return h.role == Role::Urgent && h.session == hello_.session
                     ? std::string()
                     : std::string("not the reconnecting migration's urgent channel");
        },
        options_.link.link_timeout, options_.link.link_timeout, "reconnecting urgent");
    if (auto why = u.channel->mark_urgent(); !why.empty()) spdlog::debug("receive: page requests go unmarked ({})", why);
    Channel* main = m.channel.get();
    // What this side holds: the source pushes the rest again.
    auto parts = split_received(pages_->present_bitmap());
    for (size_t i = 0; i < parts.size(); i++)
      main->send(FrameType::Received, i + 1 == parts.size() ? kReceivedLast : 0, encode(parts[i]));
    link_.replace(std::move(m.channel), std::move(u.channel));
    return true;
  } catch (const ConnectionError& e) {
    spdlog::warn("receive: a reconnection failed: {}", e.what());
  } catch (const ProtocolError& e) {
    spdlog::warn("receive: a reconnection failed: {}", e.what());
  }
  return false;
}

// The link is lost after the guest started here: keep it running on what it
// has, keep listening, take the source's reconnection, say what we hold, ask
// again for what was asked and not answered.
void Destination::recover(const std::string& why) {
  auto t_lost = Clock::now();
  stop_link_threads();
  bool acked = started_acked_;
  // Before StartedAck the source may resume the guest itself: this copy waits.
  if (!acked) vcpu_->request_pause();
  uint64_t missing = pages_->npages() - pages_->present();
  spdlog::warn("postcopy: link lost ({}); {} of {} pages still on the source; {}; waiting up to {:.0f} s for it to "
               "reconnect", why, missing, pages_->npages(),
               acked ? "the guest runs on the pages it has" : "the guest is paused until the source confirms it let go",
               static_cast<double>(options_.link.recovery_timeout.count()) / 1000);
  auto deadline = t_lost + options_.link.recovery_timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      throw vmm::Error(fmt::format("the source did not reconnect within {:.0f} s of the lost link ({}): {} pages "
                                   "never came, and the guest cannot run without them",
                                   static_cast<double>(options_.link.recovery_timeout.count()) / 1000, why,
                                   pages_->npages() - pages_->present()));
    if (take_reconnection(left)) break;
  }
  std::vector<uint64_t> again = pages_->outstanding();
  start_link_threads();
  link_.request(again);
  // The source redials only once it let go of the guest (it got Started).
  started_acked_ = true;
  if (!acked) vcpu_->resume();
  pauses_.push_back({ms_between(t_lost, Clock::now()), pages_->npages() - pages_->present(), again.size()});
  spdlog::info("postcopy: resumed after {:.0f} ms; {} pages still to come, {} asked for again", pauses_.back().ms,
               pauses_.back().pages_missing, again.size());
}

void Destination::receive_postcopy() {
  // This thread runs at the vCPU's priority. SCHED_FIFO, it held a core for
  // 31 ms at a time receiving the push while the vCPU waited runnable on the
  // other core beside the source's push (schedstat): guest touches of 14-35
  // ms that no fault explained. At normal priority the slowest touch was
  // 5-8 ms, and a fault on a page in flight on the push (256 KiB frames)
  // still waited at most about 1 ms (p99 0.02-0.96 ms in three runs).
  pthread_setname_np(pthread_self(), "main-recv");
  while (!complete_) {
    if (announce_if_complete()) break;
    try {
      std::array<uint8_t, kHeaderSize> raw;
      FrameHeader h = link_.main().receive_header(raw);
      if (h.type == FrameType::Pages) {
        pages_->receive_pages(link_.main(), raw, h, true);
      } else {
        std::vector<uint8_t> payload(h.length);
        link_.main().read_exact(payload);
        verify_crc(raw, payload, h.crc);
        if (h.type == FrameType::Error) throw vmm::Error("the source gave up: " + decode_error(payload));
        if (h.type == FrameType::StartedAck) started_acked_ = true;
        else if (h.type != FrameType::Heartbeat)
          throw ProtocolError(fmt::format("unexpected {} during postcopy", frame_type_name(h.type)));
      }
    } catch (const ConnectionError& e) {
      if (complete_) break;
      {
        std::lock_guard lock(error_mutex_);
        if (!error_.empty()) throw vmm::Error(error_);
      }
      if (!resolver_) throw;  // nothing was left for postcopy: nothing to recover
      recover(e.what());
      continue;
    }
    announce_if_complete();
    progress();
  }
  t_complete_ = Clock::now();
}

void Destination::finish_postcopy() {
  // The resolver runs until the mapping threads are done: a vCPU that faults
  // on a page they have not mapped yet is mapped by it at once. Stopped first,
  // such a fault went unread until the queue drained (a 179-189 ms stall).
  if (premap_thread_.joinable()) premap_thread_.join();
  pages_->stop_mapper();
  if (resolver_) {
    resolver_->stop();
    if (auto e = resolver_->error(); !e.empty()) throw vmm::Error("fault resolver: " + e);
  }
  // A fault between the resolver's stop and here is woken by unregister().
  if (uffd_) uffd_->unregister(machine_->memory().primary(), hello_.mem_size);
  link_.end_postcopy();
  if (urgent_thread_.joinable()) urgent_thread_.join();
}

int Destination::run() {
  link_.listen(options_.listen);
  spdlog::info("receive: listening on {} for a migration, RAM on {}{}", options_.listen,
               vmm::backend_name(options_.backend), options_.tls ? ", TLS 1.3 with the pre-shared key" : "");
  if (options_.tls) spdlog::info("receive: {}", ktls_probe());
  auto first = link_.accept_hello([this](const Hello& h) { return check_first_hello(h); }, options_.handshake_timeout,
                                  std::chrono::milliseconds(0), "source");
  link_.set_main(std::move(first.channel));
  hello_ = first.hello;
  t_hello_ = last_progress_ = Clock::now();
  HelloReply reply = accept_source(hello_);
  link_.main().send(FrameType::HelloReply, 0, encode(reply));
  if (!reply.accepted) throw vmm::Error("refused the migration: " + reply.reason);
  auto urgent = link_.accept_hello(
      [this](const Hello& h) {
        return h.role == Role::Urgent && h.session == hello_.session
                   ? std::string()
                   : std::string("this destination is in the handshake of another migration");
      },
      options_.handshake_timeout, options_.handshake_timeout, "urgent");
  link_.set_urgent(std::move(urgent.channel));
  if (auto why = link_.urgent().mark_urgent(); !why.empty())
    spdlog::warn("receive: page requests go unmarked (the kernel refused {})", why);
  // Past the handshake and until the guest starts here, a dead peer shows
  // as a closed connection (the source may take long to map a large guest);
  // in postcopy the link timeout and heartbeats take over.
  link_.main().set_receive_timeout(std::chrono::milliseconds(0));
  link_.urgent().set_receive_timeout(std::chrono::milliseconds(0));
  spdlog::info("receive: {} from {} ({} on the source), mode {}", vmm::format_size(hello_.mem_size), link_.main().peer(),
               hello_.src_backend, mode_name(hello_.mode));
  receive_until_postcopy();
  receive_postcopy();
  finish_postcopy();
  write_report();
  vmm::VcpuOutcome out = vcpu_->wait();
  if (out.reason != vmm::StopReason::GuestExit)
    throw vmm::Error(fmt::format("guest stopped: {}: {}", vmm::stop_reason_name(out.reason), out.detail));
  spdlog::info("guest exited with code {} on the destination", out.exit_code);
  add_guest_view();
  return out.exit_code;
}

}  // namespace migration
