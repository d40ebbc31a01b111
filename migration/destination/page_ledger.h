// The destination's per-page rules, with no kernel object behind them: each
// page moves Missing -> (Requested) -> Filling -> Present; precopy makes a
// page Present once frames covered all its chunks, and a stale range makes it
// Missing again; in postcopy one copy of a page claims it however many come,
// a claim given back makes it Missing, and a vCPU's wait on a page is noted
// so that its arrival maps it at once. PageStates (page_states.h) applies
// these rules to the frames it receives and the mappings it makes; here they
// are tested on their own (tests/migration/page_ledger_test.cpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "bitmap.h"
#include "messages.h"

namespace migration {

enum class PageState : uint8_t { Missing = 0, Requested = 1, Filling = 2, Present = 3 };

class PageLedger {
 public:
  PageLedger(uint64_t mem_size, uint64_t page_size);

  uint64_t page_size() const { return page_size_; }
  uint64_t npages() const { return npages_; }
  PageState state(uint64_t page) const { return static_cast<PageState>(state_[page].load()); }
  uint64_t present() const { return present_.load(); }
  bool complete() const { return present_.load() == npages_; }
  // Which pages are present, as a bitmap (bit set: present).
  vmm::Bitmap present_bitmap() const;

  // Precopy, on the receiving thread alone: frame `v` covered its chunks (data,
  // a zero marker, or left out as zero here already); a page all of whose
  // chunks are covered is Present.
  void cover(const PagesView& v);
  // Whether some frame gave `page` data or a zero marker (a page every frame
  // left out was never written on the source).
  bool has_content(uint64_t page) const { return content_.test(page); }
  // Switchover: chunks the guest wrote after they were sent; their pages are
  // Missing again. ProtocolError when the range lies outside guest RAM.
  void mark_stale(uint64_t first_chunk, uint64_t nchunks);

  // Postcopy. Missing -> Requested, once: whether this caller should ask.
  bool try_mark_requested(uint64_t page);
  // A vCPU waits on `page`. Returns whether it is present already.
  bool mark_wanted(uint64_t page);
  // Takes the mark a waiting vCPU left on `page`: true once per mark.
  bool take_wanted(uint64_t page);
  // The pages of frame `v` this copy may write: a frame of whole pages claims
  // each (Missing or Requested -> Filling; a page another copy holds is not
  // its); a frame inside a larger page requires that page not present nor
  // filling (ProtocolError). `whole` says which kind it was.
  std::vector<bool> claim(const PagesView& v, uint32_t flags, bool& whole);
  // A frame that failed half-way gives back the pages it claimed: Missing again.
  void release(const PagesView& v, const std::vector<bool>& mine);
  // [first, last) are all here: Present. They count in present() (and so in
  // complete()) only once count_present() says so: after they are mapped or
  // queued, so that the migration does not end with a mapping still to make.
  void mark_present(uint64_t first, uint64_t last);
  void count_present(uint64_t n) { present_ += n; }
  // After a lost link: the pages requested, or wanted by a vCPU and missing,
  // none present; each is Requested now (to be asked for again).
  std::vector<uint64_t> outstanding();

 private:
  bool try_claim(uint64_t page);
  bool page_covered(uint64_t page) const;

  uint64_t mem_size_, page_size_, npages_;
  std::unique_ptr<std::atomic<uint8_t>[]> state_;
  std::unique_ptr<std::atomic<uint8_t>[]> wanted_;
  vmm::Bitmap covered_;  // precopy: bit per 4 KiB chunk some frame covered
  vmm::Bitmap content_;  // precopy: bit per page some frame gave data or a zero marker
  std::atomic<uint64_t> present_{0};
};

}  // namespace migration
