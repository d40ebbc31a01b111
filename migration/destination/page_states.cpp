#include "page_states.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "error.h"
#include "userfaultfd.h"

namespace migration {

PageStates::PageStates(uint8_t* primary, uint8_t* alias, uint8_t* staging, uint64_t mem_size, uint64_t page_size)
    : primary_(primary),
      alias_(alias),
      staging_(staging),
      write_base_(staging ? staging : alias),
      mem_size_(mem_size),
      page_size_(page_size),
      npages_(mem_size / page_size),
      state_(new std::atomic<uint8_t>[npages_]),
      wanted_(new std::atomic<uint8_t>[npages_]),
      covered_(mem_size / kChunk),
      content_(npages_) {
  for (uint64_t p = 0; p < npages_; p++) {
    state_[p].store(static_cast<uint8_t>(PageState::Missing), std::memory_order_relaxed);
    wanted_[p].store(0, std::memory_order_relaxed);
  }
}

bool PageStates::page_covered(uint64_t page) const {
  uint64_t per = page_size_ / kChunk;
  return covered_.all(page * per, (page + 1) * per);
}

// Precopy runs on the receiving thread alone, before any other thread looks
// at the states: relaxed stores.
void PageStates::mark_covered(const PagesView& v) {
  uint64_t first_chunk = v.offset / kChunk, nchunks = v.count;
  covered_.set(first_chunk, first_chunk + nchunks);
  for (uint64_t c = first_chunk; c < first_chunk + nchunks; c++) {
    auto i = static_cast<uint32_t>(c - first_chunk);
    if (v.is_data(i) || v.is_zero(i)) content_.set(c * kChunk / page_size_);
  }
  uint64_t per = page_size_ / kChunk, newly = 0;
  for (uint64_t p = first_chunk / per; p < (first_chunk + nchunks + per - 1) / per; p++) {
    if (state_[p].load(std::memory_order_relaxed) == static_cast<uint8_t>(PageState::Present) || !page_covered(p))
      continue;
    state_[p].store(static_cast<uint8_t>(PageState::Present), std::memory_order_relaxed);
    newly++;
  }
  present_.store(present_.load(std::memory_order_relaxed) + newly, std::memory_order_relaxed);
}

void PageStates::mark_stale(uint64_t first_chunk, uint64_t nchunks) {
  if (first_chunk > mem_size_ / kChunk || nchunks > mem_size_ / kChunk - first_chunk)
    throw ProtocolError(fmt::format("stale chunks {}+{} lie outside guest memory", first_chunk, nchunks));
  covered_.reset(first_chunk, first_chunk + nchunks);
  uint64_t per = page_size_ / kChunk, gone = 0;
  for (uint64_t p = first_chunk / per; p < (first_chunk + nchunks + per - 1) / per; p++) {
    if (state_[p].load(std::memory_order_relaxed) != static_cast<uint8_t>(PageState::Present)) continue;
    state_[p].store(static_cast<uint8_t>(PageState::Missing), std::memory_order_relaxed);
    gone++;
  }
  present_.store(present_.load(std::memory_order_relaxed) - gone, std::memory_order_relaxed);
}

PageStates::~PageStates() {
  try {
    stop_mapper();
  } catch (const std::exception&) {
    // The migration has failed already; its first error is the one reported.
  }
}

void PageStates::start_mapper(std::function<void(const std::string&)> on_error) {
  on_map_error_ = std::move(on_error);
  mapper_ = std::thread([this] { map_loop(); });
}

void PageStates::stop_mapper() {
  if (!mapper_.joinable()) return;
  size_t dropped = 0;
  {
    std::lock_guard lock(map_mutex_);
    map_stop_ = true;
    // MINOR: draining a backlog of pushed pages is needless (the kernel maps
    // them as the guest touches them), and a vCPU that faulted on a queued
    // page waited for all of it, unseen by any fault metric (docs/lab: figures from the code's comments).
    if (mapping_is_optional()) dropped = std::exchange(map_queue_, {}).size();
  }
  map_cv_.notify_one();
  mapper_.join();
  if (dropped) spdlog::debug("postcopy: {} queued runs left to the kernel to map on first touch", dropped);
  if (!map_error_.empty()) throw vmm::Error("mapping pushed pages: " + map_error_);
}

void PageStates::map_loop() {
  for (;;) {
    MapRun run;
    {
      std::unique_lock lock(map_mutex_);
      map_cv_.wait(lock, [&] { return map_stop_ || !map_queue_.empty(); });
      if (map_queue_.empty()) return;  // stopping, and drained
      run = map_queue_.front();
      map_queue_.pop_front();
    }
    try {
      install_pages(run.first, run.count);
    } catch (const std::exception& e) {
      bool first = false;
      {
        std::lock_guard lock(map_mutex_);
        if ((first = map_error_.empty())) map_error_ = e.what();
      }
      if (first && on_map_error_) on_map_error_(std::string("mapping pushed pages: ") + e.what());
      continue;
    }
    if (metrics_) metrics_->pages_done(run.first, run.first + run.count, run.t_received, Clock::now());
  }
}

void PageStates::begin_postcopy(const vmm::Userfaultfd* uffd, FaultMetrics* metrics) {
  uffd_ = uffd;
  metrics_ = metrics;
  std::atomic_thread_fence(std::memory_order_release);  // the states precopy left, for the threads started next
}

bool PageStates::try_mark_requested(uint64_t page) {
  auto expected = static_cast<uint8_t>(PageState::Missing);
  return state_[page].compare_exchange_strong(expected, static_cast<uint8_t>(PageState::Requested));
}

// Sequentially consistent on both sides: the fault stores `wanted` then loads
// the state; a completion stores Present then loads `wanted`. At least one
// of them sees the other, so the page is mapped at once (twice at worst,
// which EEXIST absorbs).
bool PageStates::mark_wanted(uint64_t page) {
  wanted_[page].store(1);
  return state(page) == PageState::Present;
}

// Maps [first, first + count) pages with one resolving ioctl per attempt.
// `attempt(offset, len)` returns 0, or errno with the bytes it did map: after
// EEXIST (a page in the range is mapped already: a racing fault or
// completion) the loop skips past that page; after EAGAIN it resumes.
template <typename Attempt>
void PageStates::map_range(uint64_t first, uint64_t count, const char* ioctl_name, Attempt attempt) const {
  if (!uffd_) return;
  uint64_t start = first * page_size_, end = start + count * page_size_;  // offsets into guest RAM
  while (start < end) {
    auto [err, done] = attempt(start, end - start);
    if (err == 0) return;
    if (err == EEXIST || err == EAGAIN) {
      start += done + (err == EEXIST ? page_size_ : 0);
      continue;
    }
    errno = err;
    vmm::throw_errno(fmt::format("{}(pages {}+{})", ioctl_name, start / page_size_, (end - start) / page_size_));
  }
}

void PageStates::continue_pages(uint64_t first, uint64_t count) const {
  uint64_t base = reinterpret_cast<uint64_t>(primary_);
  map_range(first, count, "UFFDIO_CONTINUE", [&](uint64_t off, uint64_t len) {
    uffdio_continue c{};
    c.range.start = base + off;
    c.range.len = len;
    int err = ::ioctl(uffd_->fd(), UFFDIO_CONTINUE, &c) == 0 ? 0 : errno;
    return std::pair<int, uint64_t>{err, c.mapped > 0 ? static_cast<uint64_t>(c.mapped) : 0};
  });
}

void PageStates::copy_pages(uint64_t first, uint64_t count) const {
  uint64_t base = reinterpret_cast<uint64_t>(primary_);
  if (page_size_ > kChunk) {
    // A large page's zero chunks never touched the staging buffer. The kernel
    // copies with page faults disabled; on a hole it allocates a temporary
    // hugepage from the pool outside any reservation and retries, and with no
    // spare hugepage that is ENOMEM (measured: Free 31, Rsvd 31 of 33). Map
    // the holes to the zero page first, which costs no memory.
    if (::madvise(staging_ + first * page_size_, count * page_size_, MADV_POPULATE_READ) < 0)
      vmm::throw_errno("madvise(MADV_POPULATE_READ, staging buffer)");
  }
  map_range(first, count, "UFFDIO_COPY", [&](uint64_t off, uint64_t len) {
    uffdio_copy c{};
    c.dst = base + off;
    c.src = reinterpret_cast<uint64_t>(staging_ + off);
    c.len = len;
    int err = ::ioctl(uffd_->fd(), UFFDIO_COPY, &c) == 0 ? 0 : errno;
    return std::pair<int, uint64_t>{err, c.copy > 0 ? static_cast<uint64_t>(c.copy) : 0};
  });
}

void PageStates::install_pages(uint64_t first, uint64_t count) const {
  if (!uffd_) return;  // begun without a userfaultfd (tests, fuzzing): states only
  if (staging_) copy_pages(first, count);
  else continue_pages(first, count);
}

// Maps, in runs, the pages that precopy left present and gave content, while
// the guest already runs: each first touch would otherwise cost a local
// userfaultfd round trip. A page whose chunks precopy all left out (never
// written on the source) is left to a fault, as in complete_pages().
// Pages that arrive later are mapped on arrival; one that arrives while this
// runs may be mapped twice, and the second time counts as done (EEXIST).
void PageStates::install_present_ranges(const std::atomic<bool>& stop) const {
  auto present = [&](uint64_t p) { return state(p) == PageState::Present && content_.test(p); };
  for (uint64_t p = 0; p < npages_ && !(stop && mapping_is_optional());) {
    if (!present(p)) {
      p++;
      continue;
    }
    uint64_t n = 0;
    while (p + n < npages_ && n < 4096 && present(p + n)) n++;
    install_pages(p, n);
    p += n;
  }
}

void PageStates::release_claims(const PagesView& v, const std::vector<bool>& mine) {
  uint64_t first = v.offset / page_size_;
  for (uint64_t i = 0; i < mine.size(); i++)
    if (mine[i]) state_[first + i].store(static_cast<uint8_t>(PageState::Missing));
}

std::vector<uint64_t> PageStates::outstanding() {
  std::vector<uint64_t> pages;
  for (uint64_t p = 0; p < npages_; p++) {
    uint8_t cur = state_[p].load();
    if (cur == static_cast<uint8_t>(PageState::Requested)) {
      pages.push_back(p);
    } else if (cur == static_cast<uint8_t>(PageState::Missing) && wanted_[p].load() &&
               state_[p].compare_exchange_strong(cur, static_cast<uint8_t>(PageState::Requested))) {
      pages.push_back(p);
    }
  }
  return pages;
}

vmm::Bitmap PageStates::present_bitmap() const {
  vmm::Bitmap bits(npages_);
  for (uint64_t p = 0; p < npages_; p++)
    if (state(p) == PageState::Present) bits.set(p);
  return bits;
}

bool PageStates::try_claim(uint64_t page) {
  for (;;) {
    uint8_t cur = state_[page].load();
    if (cur == static_cast<uint8_t>(PageState::Filling) || cur == static_cast<uint8_t>(PageState::Present)) return false;
    if (state_[page].compare_exchange_weak(cur, static_cast<uint8_t>(PageState::Filling))) return true;
  }
}

bool PageStates::has_content(const PagesView& v, uint64_t page) const {
  uint64_t per = page_size_ / kChunk, c0 = page * per - v.offset / kChunk;
  for (uint64_t i = c0; i < c0 + per; i++)
    if (v.is_data(static_cast<uint32_t>(i)) || v.is_zero(static_cast<uint32_t>(i))) return true;
  return false;
}

// Marks the pages this frame finished present and maps them, in runs.
uint64_t PageStates::complete_pages(const PagesView& v, uint32_t flags, bool whole, const std::vector<bool>& mine) {
  uint64_t begin = v.offset, end = v.offset + uint64_t{v.count} * kChunk;
  uint64_t first = begin / page_size_, last = end / page_size_;
  if (!whole) {
    if (!(flags & kPagesLastOfPage)) return 0;
    if (end % page_size_)
      throw ProtocolError(fmt::format("Pages frame marked last-of-page ends at {:#x}, inside a {} byte page", end,
                                      page_size_));
    first = last - 1;  // the frame ends the large page it is part of
  }
  auto t_received = Clock::now();
  uint64_t completed = 0;
  for (uint64_t p = first; p < last;) {
    if (whole && !mine[p - first]) {
      p++;
      continue;
    }
    uint64_t q = p + 1;
    while (q < last && (!whole || mine[q - first])) q++;
    for (uint64_t i = p; i < q; i++) state_[i].store(static_cast<uint8_t>(PageState::Present));
    // Push frames arrive on the thread that starts and stops the mapper, so
    // reading mapper_ here races with nothing; urgent frames never read it.
    if ((flags & kPagesUrgent) || !mapper_.joinable()) {
      install_pages(p, q - p);  // requested: the faulting vCPU waits for exactly this
      if (metrics_) metrics_->pages_done(p, q, t_received, Clock::now());
    } else {
      // A vCPU waiting on a page of this run (its fault came while the frame
      // was in flight) is not made to wait for the mapper's queue too.
      for (uint64_t i = p; i < q; i++) {
        if (!wanted_[i].load() || !wanted_[i].exchange(0)) continue;
        install_pages(i, 1);
        if (metrics_) metrics_->page_done(i, t_received, Clock::now());
      }
      // Only pages this frame gave content: one whose every chunk was left
      // out is zero here as on the source, where the guest never wrote it.
      // It is mapped if the guest touches it (locally, by the resolver) or by
      // the kernel once postcopy ends; mapping them all cost the mapper a core
      // on large guests and slowed the push (docs/lab: figures from the code's comments).
      {
        std::lock_guard lock(map_mutex_);
        for (uint64_t i = p; i < q;) {
          if (whole && !has_content(v, i)) {
            i++;
            continue;
          }
          uint64_t j = i + 1;
          while (j < q && (!whole || has_content(v, j))) j++;
          map_queue_.push_back({i, j - i, t_received});
          i = j;
        }
      }
      map_cv_.notify_one();
    }
    present_ += q - p;
    completed += q - p;
    ((flags & kPagesUrgent) ? answered_ : pushed_) += q - p;
    p = q;
  }
  return completed;
}

}  // namespace migration
