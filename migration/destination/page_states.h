// The destination's view of guest RAM during an incoming migration: Pages
// frames received straight into guest memory (through the alias view in
// MINOR mode, into a staging buffer in MISSING mode), under the per-page
// rules of PageLedger (page_ledger.h), and made visible to the guest by
// PageMapper (page_mapper.h) once all of a page's bytes are there.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "channel.h"
#include "fault_metrics.h"
#include "messages.h"
#include "page_ledger.h"
#include "page_mapper.h"

namespace vmm {
class Userfaultfd;
}

namespace migration {

class PageStates {
 public:
  // `staging` null: data is written through `alias` (precopy, MINOR mode).
  // Otherwise data lands in `staging` and UFFDIO_COPY installs it.
  PageStates(uint8_t* primary, uint8_t* alias, uint8_t* staging, uint64_t mem_size, uint64_t page_size);

  uint64_t page_size() const { return ledger_.page_size(); }
  uint64_t npages() const { return ledger_.npages(); }
  uint8_t* primary() const { return primary_; }
  PageLedger& ledger() { return ledger_; }

  // Reads the rest of a Pages frame from `ch` straight into guest memory
  // (page_receive.cpp). Precopy: the guest is not running; every chunk lands,
  // and the frame's chunks count as covered (PageLedger::cover), so that
  // switchover has nothing to compute over all of guest RAM. Postcopy: a
  // frame fills only the pages it can claim (the same page may come twice:
  // pushed, and resent on the urgent channel because the push had it in
  // flight); completed pages are mapped, in line when urgent or when a vCPU
  // waits on them, else by the mapper thread. Returns the pages it completed.
  uint64_t receive_pages(Channel& ch, const std::array<uint8_t, kHeaderSize>& raw, const FrameHeader& h,
                         bool postcopy);
  // Switchover: chunks the guest wrote after they were sent.
  void mark_stale(uint64_t first_chunk, uint64_t nchunks) { ledger_.mark_stale(first_chunk, nchunks); }
  // From here on faults are resolved: every page not Present is Missing.
  // Without a userfaultfd (tests, fuzzing) pages are tracked and never mapped.
  void begin_postcopy(const vmm::Userfaultfd* uffd, FaultMetrics* metrics);
  // The mapper thread (PageMapper::start, PageMapper::stop).
  void start_mapper(std::function<void(const std::string&)> on_error = {}) { mapper_.start(std::move(on_error)); }
  void stop_mapper() { mapper_.stop(); }

  PageState state(uint64_t page) const { return ledger_.state(page); }
  std::vector<uint64_t> outstanding() { return ledger_.outstanding(); }
  vmm::Bitmap present_bitmap() const { return ledger_.present_bitmap(); }
  bool try_mark_requested(uint64_t page) { return ledger_.try_mark_requested(page); }
  // A vCPU waits on `page`: whichever frame completes it maps it in line, not
  // through the mapper's queue. Returns whether the page is present already
  // (then the caller maps it: the completion may have missed the mark).
  bool mark_wanted(uint64_t page) { return ledger_.mark_wanted(page); }
  void install_pages(uint64_t first, uint64_t count) const { mapper_.install(first, count); }
  // Maps the pages that are Present and had content, in runs. `stop` ends it
  // early only in MINOR mode (as with the mapper's queue).
  void install_present_ranges(const std::atomic<bool>& stop) const;

  uint64_t present() const { return ledger_.present(); }
  bool complete() const { return ledger_.complete(); }
  uint64_t pages_pushed() const { return pushed_.load(); }
  // Pages completed by an answer on the urgent connection: with pages_pushed,
  // every page that came during postcopy, each counted once.
  uint64_t pages_answered() const { return answered_.load(); }
  uint64_t chunks_skipped() const { return skipped_.load(); }
  uint64_t chunks_received() const { return received_.load(); }

 private:
  // Whether frame `v`, which holds all of `page`, carried data or a zero marker for it.
  bool has_content(const PagesView& v, uint64_t page) const;
  uint64_t complete_pages(const PagesView& v, uint32_t flags, bool whole, const std::vector<bool>& mine);

  uint8_t* primary_;
  uint8_t* write_base_;  // where received data goes: the staging buffer or the alias view
  uint64_t mem_size_;
  PageLedger ledger_;
  PageMapper mapper_;
  FaultMetrics* metrics_ = nullptr;
  std::atomic<uint64_t> pushed_{0}, answered_{0}, skipped_{0}, received_{0};
};

}  // namespace migration
