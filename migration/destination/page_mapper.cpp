#include "page_mapper.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "error.h"
#include "userfaultfd.h"
#include "messages.h"

namespace migration {

PageMapper::~PageMapper() {
  try {
    stop();
  } catch (const std::exception&) {
    // The migration has failed already; its first error is the one reported.
  }
}

void PageMapper::begin(const vmm::Userfaultfd* uffd, FaultMetrics* metrics) {
  uffd_ = uffd;
  metrics_ = metrics;
}

void PageMapper::start(std::function<void(const std::string&)> on_error) {
  on_error_ = std::move(on_error);
  thread_ = std::thread([this] { loop(); });
}

void PageMapper::stop() {
  if (!thread_.joinable()) return;
  size_t dropped = 0;
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    // MINOR: draining a backlog of pushed pages is needless (the kernel maps
    // them as the guest touches them), and a vCPU that faulted on a queued
    // page waited for all of it, unseen by any fault metric (docs/lab: figures
    // from the code's comments).
    if (optional()) dropped = std::exchange(queue_, {}).size();
  }
  cv_.notify_one();
  thread_.join();
  if (dropped) spdlog::debug("postcopy: {} queued runs left to the kernel to map on first touch", dropped);
  if (!error_.empty()) throw vmm::Error("mapping pushed pages: " + error_);
}

void PageMapper::loop() {
  for (;;) {
    Run run;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and drained
      run = queue_.front();
      queue_.pop_front();
    }
    try {
      install(run.first, run.count);
    } catch (const std::exception& e) {
      bool first = false;
      {
        std::lock_guard lock(mutex_);
        if ((first = error_.empty())) error_ = e.what();
      }
      if (first && on_error_) on_error_(std::string("mapping pushed pages: ") + e.what());
      continue;
    }
    // Outside the queue's lock: the receiving thread never waits on metrics.
    if (metrics_) metrics_->pages_done(run.first, run.first + run.count, run.t_received, Clock::now());
  }
}

// Maps [first, first + count) pages with one resolving ioctl per attempt.
// `attempt(offset, len)` returns 0, or errno with the bytes it did map: after
// EEXIST (a page in the range is mapped already: a racing fault or
// completion) the loop skips past that page; after EAGAIN it resumes.
template <typename Attempt>
void PageMapper::map_range(uint64_t first, uint64_t count, const char* ioctl_name, Attempt attempt) const {
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

void PageMapper::continue_pages(uint64_t first, uint64_t count) const {
  uint64_t base = reinterpret_cast<uint64_t>(primary_);
  map_range(first, count, "UFFDIO_CONTINUE", [&](uint64_t off, uint64_t len) {
    uffdio_continue c{};
    c.range.start = base + off;
    c.range.len = len;
    int err = ::ioctl(uffd_->fd(), UFFDIO_CONTINUE, &c) == 0 ? 0 : errno;
    return std::pair<int, uint64_t>{err, c.mapped > 0 ? static_cast<uint64_t>(c.mapped) : 0};
  });
}

void PageMapper::copy_pages(uint64_t first, uint64_t count) const {
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

void PageMapper::install(uint64_t first, uint64_t count) const {
  if (!uffd_) return;  // begun without a userfaultfd (tests, fuzzing): states only
  if (staging_) copy_pages(first, count);
  else continue_pages(first, count);
}

}  // namespace migration
