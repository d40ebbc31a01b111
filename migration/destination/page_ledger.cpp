#include "page_ledger.h"

#include <fmt/format.h>

namespace migration {

namespace {
constexpr auto u8(PageState s) { return static_cast<uint8_t>(s); }
}  // namespace

PageLedger::PageLedger(uint64_t mem_size, uint64_t page_size)
    : mem_size_(mem_size),
      page_size_(page_size),
      npages_(mem_size / page_size),
      state_(new std::atomic<uint8_t>[npages_]),
      wanted_(new std::atomic<uint8_t>[npages_]),
      covered_(mem_size / kChunk),
      content_(npages_) {
  for (uint64_t p = 0; p < npages_; p++) {
    state_[p].store(u8(PageState::Missing), std::memory_order_relaxed);
    wanted_[p].store(0, std::memory_order_relaxed);
  }
}

vmm::Bitmap PageLedger::present_bitmap() const {
  vmm::Bitmap bits(npages_);
  for (uint64_t p = 0; p < npages_; p++)
    if (state(p) == PageState::Present) bits.set(p);
  return bits;
}

bool PageLedger::page_covered(uint64_t page) const {
  uint64_t per = page_size_ / kChunk;
  return covered_.all(page * per, (page + 1) * per);
}

// Precopy runs on the receiving thread alone, before any other thread looks
// at the states: relaxed stores.
void PageLedger::cover(const PagesView& v) {
  uint64_t first_chunk = v.offset / kChunk, nchunks = v.count;
  covered_.set(first_chunk, first_chunk + nchunks);
  for (uint64_t c = first_chunk; c < first_chunk + nchunks; c++) {
    auto i = static_cast<uint32_t>(c - first_chunk);
    if (v.is_data(i) || v.is_zero(i)) content_.set(c * kChunk / page_size_);
  }
  uint64_t per = page_size_ / kChunk, newly = 0;
  for (uint64_t p = first_chunk / per; p < (first_chunk + nchunks + per - 1) / per; p++) {
    if (state_[p].load(std::memory_order_relaxed) == u8(PageState::Present) || !page_covered(p)) continue;
    state_[p].store(u8(PageState::Present), std::memory_order_relaxed);
    newly++;
  }
  present_.store(present_.load(std::memory_order_relaxed) + newly, std::memory_order_relaxed);
}

void PageLedger::mark_stale(uint64_t first_chunk, uint64_t nchunks) {
  if (first_chunk > mem_size_ / kChunk || nchunks > mem_size_ / kChunk - first_chunk)
    throw ProtocolError(fmt::format("stale chunks {}+{} lie outside guest memory", first_chunk, nchunks));
  covered_.reset(first_chunk, first_chunk + nchunks);
  uint64_t per = page_size_ / kChunk, gone = 0;
  for (uint64_t p = first_chunk / per; p < (first_chunk + nchunks + per - 1) / per; p++) {
    if (state_[p].load(std::memory_order_relaxed) != u8(PageState::Present)) continue;
    state_[p].store(u8(PageState::Missing), std::memory_order_relaxed);
    gone++;
  }
  present_.store(present_.load(std::memory_order_relaxed) - gone, std::memory_order_relaxed);
}

bool PageLedger::try_mark_requested(uint64_t page) {
  auto expected = u8(PageState::Missing);
  return state_[page].compare_exchange_strong(expected, u8(PageState::Requested));
}

// Sequentially consistent on both sides: the fault stores `wanted` then loads
// the state; a completion stores Present then loads `wanted`. At least one
// of them sees the other, so the page is mapped at once (twice at worst,
// which EEXIST absorbs).
bool PageLedger::mark_wanted(uint64_t page) {
  wanted_[page].store(1);
  return state(page) == PageState::Present;
}

bool PageLedger::take_wanted(uint64_t page) { return wanted_[page].load() && wanted_[page].exchange(0); }

bool PageLedger::try_claim(uint64_t page) {
  for (;;) {
    uint8_t cur = state_[page].load();
    if (cur == u8(PageState::Filling) || cur == u8(PageState::Present)) return false;
    if (state_[page].compare_exchange_weak(cur, u8(PageState::Filling))) return true;
  }
}

std::vector<bool> PageLedger::claim(const PagesView& v, uint32_t flags, bool& whole) {
  uint64_t begin = v.offset, end = v.offset + uint64_t{v.count} * kChunk;
  uint64_t first = begin / page_size_, last = (end + page_size_ - 1) / page_size_;
  whole = (flags & kPagesLastOfPage) && begin % page_size_ == 0 && end % page_size_ == 0;
  std::vector<bool> mine(last - first, true);
  for (uint64_t p = first; p < last; p++) {
    if (whole) {
      mine[p - first] = try_claim(p);
    } else if (state(p) == PageState::Present || state(p) == PageState::Filling) {
      throw ProtocolError(fmt::format("source sent data for page {}, which is already present", p));
    }
  }
  return mine;
}

void PageLedger::release(const PagesView& v, const std::vector<bool>& mine) {
  uint64_t first = v.offset / page_size_;
  for (uint64_t i = 0; i < mine.size(); i++)
    if (mine[i]) state_[first + i].store(u8(PageState::Missing));
}

void PageLedger::mark_present(uint64_t first, uint64_t last) {
  for (uint64_t i = first; i < last; i++) state_[i].store(u8(PageState::Present));
}

std::vector<uint64_t> PageLedger::outstanding() {
  std::vector<uint64_t> pages;
  for (uint64_t p = 0; p < npages_; p++) {
    uint8_t cur = state_[p].load();
    if (cur == u8(PageState::Requested)) {
      pages.push_back(p);
    } else if (cur == u8(PageState::Missing) && wanted_[p].load() &&
               state_[p].compare_exchange_strong(cur, u8(PageState::Requested))) {
      pages.push_back(p);
    }
  }
  return pages;
}

}  // namespace migration
