#include "page_server.h"

#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "thread_priority.h"

namespace migration {

namespace {
// Pages this small always fit in one frame, whatever their data.
constexpr uint64_t kWholePageLimit = uint64_t{kMaxDataChunksPerFrame} * kChunk;
// The data of a push frame of small pages: a fault on a page in flight waits
// for its whole frame, so frames stay small; 4 MiB ones made that wait the
// fault's tail (docs/lab: figures from the code's comments).
constexpr uint32_t kPushFrameChunks = 64;
// The least the push keeps in flight, whatever the estimate says.
constexpr uint64_t kPushInFlightMin = 256 << 10;
}  // namespace

PageServer::PageServer(const uint8_t* mem, uint64_t mem_size, uint64_t dest_page_size,
                       const vmm::Bitmap& missing, const vmm::Bitmap& dest_nonzero,
                       std::function<vmm::Bitmap()> find_allocated, Channel& main, Channel& urgent,
                       uint64_t push_rate, std::chrono::milliseconds link_timeout, std::function<void()> on_commit)
    : mem_(mem),
      page_size_(dest_page_size),
      npages_(mem_size / dest_page_size),
      dest_nonzero_(dest_nonzero),
      find_allocated_(std::move(find_allocated)),
      main_(main),
      urgent_(urgent),
      push_rate_(push_rate),
      sent_(new std::atomic<uint8_t>[npages_]),
      link_timeout_(link_timeout),
      on_commit_(std::move(on_commit)) {
  for (uint64_t p = 0; p < npages_; p++) sent_[p] = missing.test(p) ? 0 : 1;
}

// Sends destination pages [first, first + count) in as few Pages frames as the
// data allows. Pages up to a frame's data limit travel whole in one frame; a
// larger page spans frames and the frame that ends it carries kPagesLastOfPage.
void PageServer::send_pages(Channel& ch, uint64_t first, uint64_t count, uint32_t flags) {
  uint64_t begin = first * page_size_, end = (first + count) * page_size_;
  auto align = static_cast<uint32_t>(page_size_ <= kWholePageLimit ? page_size_ / kChunk : 1);
  for (uint64_t off = begin; off < end;) {
    auto max = static_cast<uint32_t>(std::min<uint64_t>(kMaxChunksPerFrame, (end - off) / kChunk));
    PagesStats st;
    // Small pages travel in small frames: the destination claims a frame's
    // pages when it starts reading it, and a fault on one of them waits for
    // the whole frame. A larger page is one frame, or spans 4 MiB frames.
    uint32_t max_data = page_size_ > kWholePageLimit ? kMaxDataChunksPerFrame : std::max(kPushFrameChunks, align);
    // The source's vCPUs are stopped: guest memory holds still, so frames
    // are sent from it without a copy, checksummed during the zero check.
    PagesGather g =
        plan_pages_bounded(off, max, align, mem_, &dest_nonzero_, allocated_ready_ ? &allocated_ : nullptr, st,
                           nullptr, true, max_data);
    off += uint64_t{g.count} * kChunk;
    bool ends_page = off % page_size_ == 0;
    if (&ch == &main_) pace_push(kHeaderSize + g.prefix.size() + g.data_bytes);
    ch.send_gather(FrameType::Pages, flags | (ends_page ? kPagesLastOfPage : 0), g.prefix, g.data, g.data_bytes,
                   g.data_crc);
    std::lock_guard lock(mutex_);
    stats_.chunks_data += st.data;
    stats_.chunks_zero_markers += st.zero_markers;
    stats_.chunks_skipped += st.skipped;
  }
}

void PageServer::serve_requests() {
  vmm::make_current_thread_urgent("urgent-serve");
  try {
    while (!done_) {
      Frame f = urgent_.receive();
      if (f.header.type != FrameType::PageRequest)
        throw ProtocolError(fmt::format("unexpected {} on the urgent connection", frame_type_name(f.header.type)));
      auto pages = decode_request(f.payload, npages_);
      for (uint64_t pg : pages) {
        cursor_ = pg + 1 < npages_ ? pg + 1 : 0;
        // A page the push already claimed may sit in the main connection's
        // buffers behind megabytes of other pages: pages that fit in one frame
        // are sent again here (the destination keeps whichever copy lands
        // first). A larger page is one unit and is never sent twice.
        if (page_size_ > kWholePageLimit && !allocated_ready_) {
          // A large page is mostly zero chunks: without the bitmap every one would be read.
          std::unique_lock lock(mutex_);
          allocated_cv_.wait(lock, [&] { return allocated_ready_.load() || done_.load(); });
        }
        if (!claim(pg) && page_size_ > kWholePageLimit) continue;
        send_pages(urgent_, pg, 1, kPagesUrgent);
        std::lock_guard lock(mutex_);
        stats_.pages_urgent++;
      }
      std::lock_guard lock(mutex_);
      stats_.requests += pages.size();
    }
  } catch (const PeerClosed& e) {
    // The destination closes the urgent connection when it holds every page;
    // whether that was success is the main connection's to say (Complete).
    // It closes it too when it lost the link, and then its main connection with it.
    spdlog::debug("postcopy: urgent connection ended: {}", e.what());
  } catch (const ConnectionError& e) {
    // Any other failure here ends the main connection, so that the watcher,
    // and the destination, see the link lost.
    spdlog::debug("postcopy: urgent connection failed: {}", e.what());
    if (!done_) main_.shutdown();
  } catch (const std::exception& e) {
    if (!done_) fail(fmt::format("urgent connection: {}", e.what()));
  }
}

void PageServer::watch_main() {
  // On the commit path (Started in, StartedAck out, while the destination's
  // vCPUs wait) and idle otherwise: it must not wait behind the push for a core.
  vmm::make_current_thread_urgent("watch-main");
  try {
    for (;;) {
      Frame f = main_.receive();
      if (f.header.type == FrameType::Heartbeat) continue;
      if (f.header.type == FrameType::Complete) {
        completed_ = true;
        // Said before the connection closes: a send into a socket buffer, or
        // a close, proves nothing to the destination; this frame does.
        try {
          main_.send(FrameType::CompleteAck, 0, {});
        } catch (const ConnectionError& e) {
          spdlog::debug("postcopy: CompleteAck: {}", e.what());
        }
        break;
      }
      if (f.header.type == FrameType::Error) throw std::runtime_error("destination: " + decode_error(f.payload));
      if (f.header.type != FrameType::Started)
        throw ProtocolError(fmt::format("unexpected {} from the destination", frame_type_name(f.header.type)));
      // The commit point: from here the guest lives on the destination, and a
      // lost link is recovered, never answered by resuming the guest here.
      on_commit_();
      // On the urgent connection: the destination's vCPUs wait for it, and on
      // the main one it queued behind the push (docs/lab, 2026-12-04).
      urgent_.send(FrameType::StartedAck, 0, {});
      spdlog::info("postcopy: destination runs the guest (restore took {} us there)",
                   decode_started(f.payload).restore_us);
    }
  } catch (const ConnectionError& e) {
    fail(e.what(), true);
  } catch (const std::exception& e) {
    fail(e.what());
  }
  {
    std::lock_guard lock(mutex_);
    done_ = true;
  }
  allocated_cv_.notify_all();
  urgent_.shutdown();
  // Once complete the destination reads its main connection no more: a push
  // blocked sending a frame of pages it got on the urgent connection waited
  // until the guest exited there, then failed the migration with ECONNRESET
  // (2 MiB pages, hybrid, seen once in CI). Nothing else goes out on it.
  if (completed_) main_.shutdown();
}

void PageServer::fail(const std::string& why, bool link_lost) {
  if (completed_) {
    spdlog::debug("postcopy: after Complete, ignored: {}", why);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    if (error_.empty()) error_ = why, link_lost_ = link_lost;
    done_ = true;
  }
  allocated_cv_.notify_all();
  // Whatever blocks on either connection (a push send into a silent link, a
  // request receive) returns now.
  main_.shutdown();
  urgent_.shutdown();
}

// Finds the next unsent page from the cursor and sends a run of them: up to a
// frame's worth of small pages at once, or one large page.
void PageServer::push() {
  uint64_t remaining = 0;
  for (uint64_t p = 0; p < npages_; p++) remaining += sent_[p] == 0;
  uint64_t per_frame = std::max<uint64_t>(1, (16ULL << 20) / page_size_);  // claimed per step; sent as frames fit
  while (!done_ && remaining) {
    uint64_t start = cursor_.load(), p = start, scanned = 0;
    while (scanned < npages_ && sent_[p]) p = (p + 1) % npages_, scanned++;
    if (scanned == npages_) break;
    uint64_t n = 0;
    while (n < per_frame && p + n < npages_ && claim(p + n)) n++;
    if (n == 0) continue;
    cursor_.compare_exchange_strong(start, (p + n) % npages_);
    // Pace the push to about one bandwidth-delay product in flight: any more
    // only queues at the link's bottleneck, where the urgent connection's
    // answers wait behind it; pacing costs the push nothing (docs/lab: figures from the code's comments).
    main_.wait_sent(std::max<uint64_t>(kPushInFlightMin, main_.bdp_estimate() * 5 / 4), std::chrono::milliseconds(100));
    send_pages(main_, p, n, 0);
    std::lock_guard lock(mutex_);
    stats_.pages_pushed += n;
  }
}

// With a cap, sleeps until the push's bytes so far, this frame's included,
// fit the rate (at most 50 ms at a time, so a migration that ends stops it
// at once).
void PageServer::pace_push(uint64_t bytes) {
  if (!push_rate_) return;
  using std::chrono::steady_clock;
  push_bytes_ += bytes;
  auto due = push_start_ + std::chrono::duration_cast<steady_clock::duration>(std::chrono::duration<double>(
                               static_cast<double>(push_bytes_) / static_cast<double>(push_rate_)));
  for (auto now = steady_clock::now(); !done_ && now < due; now = steady_clock::now())
    std::this_thread::sleep_for(std::min<steady_clock::duration>(due - now, std::chrono::milliseconds(50)));
}

vmm::Bitmap PageServer::sent_bitmap() const {
  vmm::Bitmap bits(npages_);
  for (uint64_t p = 0; p < npages_; p++)
    if (sent_[p]) bits.set(p);
  return bits;
}

PageServerStats PageServer::run() {
  main_.set_receive_timeout(link_timeout_);
  std::thread urgent([this] { serve_requests(); });
  std::thread watcher([this] { watch_main(); });
  Heartbeat heartbeat(main_, link_timeout_ / 4);
  try {
    allocated_ = find_allocated_();
    {
      std::lock_guard lock(mutex_);
      allocated_ready_ = true;
    }
    allocated_cv_.notify_all();
    push_start_ = std::chrono::steady_clock::now();
    push();
  } catch (const ConnectionError& e) {
    fail(fmt::format("background push: {}", e.what()), true);
  } catch (const std::exception& e) {
    fail(fmt::format("background push: {}", e.what()));
  }
  watcher.join();
  urgent.join();
  if (!error_.empty()) {
    if (link_lost_) throw LinkLost(error_);
    throw std::runtime_error(error_);
  }
  return stats_;
}

}  // namespace migration
