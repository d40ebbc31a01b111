#include "page_states.h"

#include <atomic>

#include <fmt/format.h>

namespace migration {

PageStates::PageStates(uint8_t* primary, uint8_t* alias, uint8_t* staging, uint64_t mem_size, uint64_t page_size)
    : primary_(primary),
      write_base_(staging ? staging : alias),
      mem_size_(mem_size),
      ledger_(mem_size, page_size),
      mapper_(primary, staging, page_size) {}

void PageStates::begin_postcopy(const vmm::Userfaultfd* uffd, FaultMetrics* metrics) {
  mapper_.begin(uffd, metrics);
  metrics_ = metrics;
  std::atomic_thread_fence(std::memory_order_release);  // the states precopy left, for the threads started next
}

// Maps, in runs, the pages that precopy left present and gave content, while
// the guest already runs: each first touch would otherwise cost a local
// userfaultfd round trip. A page whose chunks precopy all left out (never
// written on the source) is left to a fault, as in complete_pages().
// Pages that arrive later are mapped on arrival; one that arrives while this
// runs may be mapped twice, and the second time counts as done (EEXIST).
void PageStates::install_present_ranges(const std::atomic<bool>& stop) const {
  auto present = [&](uint64_t p) { return ledger_.state(p) == PageState::Present && ledger_.has_content(p); };
  uint64_t n_pages = ledger_.npages();
  for (uint64_t p = 0; p < n_pages && !(stop && mapper_.optional());) {
    if (!present(p)) {
      p++;
      continue;
    }
    uint64_t n = 0;
    while (p + n < n_pages && n < 4096 && present(p + n)) n++;
    mapper_.install(p, n);
    p += n;
  }
}

bool PageStates::has_content(const PagesView& v, uint64_t page) const {
  uint64_t per = ledger_.page_size() / kChunk, c0 = page * per - v.offset / kChunk;
  for (uint64_t i = c0; i < c0 + per; i++)
    if (v.is_data(static_cast<uint32_t>(i)) || v.is_zero(static_cast<uint32_t>(i))) return true;
  return false;
}

// Marks the pages this frame finished present and maps them, in runs.
uint64_t PageStates::complete_pages(const PagesView& v, uint32_t flags, bool whole, const std::vector<bool>& mine) {
  uint64_t page_size = ledger_.page_size();
  uint64_t begin = v.offset, end = v.offset + uint64_t{v.count} * kChunk;
  uint64_t first = begin / page_size, last = end / page_size;
  if (!whole) {
    if (!(flags & kPagesLastOfPage)) return 0;
    if (end % page_size)
      throw ProtocolError(fmt::format("Pages frame marked last-of-page ends at {:#x}, inside a {} byte page", end,
                                      page_size));
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
    ledger_.mark_present(p, q);
    // Push frames arrive on the thread that starts and stops the mapper, so
    // asking whether it runs races with nothing; urgent frames never ask.
    if ((flags & kPagesUrgent) || !mapper_.running()) {
      mapper_.install(p, q - p);  // requested: the faulting vCPU waits for exactly this
      if (metrics_) metrics_->pages_done(p, q, t_received, Clock::now());
    } else {
      // A vCPU waiting on a page of this run (its fault came while the frame
      // was in flight) is not made to wait for the mapper's queue too.
      for (uint64_t i = p; i < q; i++) {
        if (!ledger_.take_wanted(i)) continue;
        mapper_.install(i, 1);
        if (metrics_) metrics_->page_done(i, t_received, Clock::now());
      }
      // Only pages this frame gave content: one whose every chunk was left
      // out is zero here as on the source, where the guest never wrote it.
      // It is mapped if the guest touches it (locally, by the resolver) or by
      // the kernel once postcopy ends; mapping them all cost the mapper a core
      // on large guests and slowed the push (docs/lab: figures from the
      // code's comments).
      mapper_.queue([&](std::deque<PageMapper::Run>& queue) {
        for (uint64_t i = p; i < q;) {
          if (whole && !has_content(v, i)) {
            i++;
            continue;
          }
          uint64_t j = i + 1;
          while (j < q && (!whole || has_content(v, j))) j++;
          queue.push_back({i, j - i, t_received});
          i = j;
        }
      });
    }
    ledger_.count_present(q - p);
    completed += q - p;
    ((flags & kPagesUrgent) ? answered_ : pushed_) += q - p;
    p = q;
  }
  return completed;
}

}  // namespace migration
