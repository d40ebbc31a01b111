// The per-page rules alone: no userfaultfd, no socket, no thread. Frames are
// described by their PagesView (which chunks carry data or a zero marker).
#include "page_ledger.h"

#include <gtest/gtest.h>

namespace {

using migration::PageLedger;
using migration::PagesView;
using migration::PageState;
using migration::ProtocolError;

constexpr uint64_t kSmall = 4096, kLarge = 2 << 20;

// A frame over `count` 4 KiB chunks from chunk `first`; `data` says which carry data.
PagesView frame(uint64_t first, uint32_t count, bool data = true) {
  PagesView v;
  v.offset = first * kSmall;
  v.count = count;
  v.data_bits = vmm::Bitmap(count, data);
  v.zero_bits = vmm::Bitmap(count);
  return v;
}

TEST(PageLedger, PrecopyMakesAPagePresentOnceAllItsChunksAreCoveredAndStaleMakesItMissing) {
  PageLedger l(4 * kLarge, kLarge);  // 4 pages of 512 chunks
  l.cover(frame(0, 256));
  EXPECT_EQ(l.state(0), PageState::Missing) << "half a large page is not the page";
  l.cover(frame(256, 256 + 512));  // the rest of page 0 and all of page 1
  EXPECT_EQ(l.state(0), PageState::Present);
  EXPECT_EQ(l.state(1), PageState::Present);
  EXPECT_EQ(l.present(), 2u);
  l.cover(frame(1024, 512, false));  // page 2, every chunk left out: covered, no content
  EXPECT_EQ(l.state(2), PageState::Present);
  EXPECT_TRUE(l.has_content(1));
  EXPECT_FALSE(l.has_content(2));
  l.mark_stale(512 + 7, 1);  // the guest wrote one chunk of page 1 after it was sent
  EXPECT_EQ(l.state(1), PageState::Missing);
  EXPECT_EQ(l.present(), 2u);
  EXPECT_THROW(l.mark_stale(2048, 1), ProtocolError);
  EXPECT_THROW(l.mark_stale(0, 2049), ProtocolError);
}

TEST(PageLedger, APageIsRequestedOnceAndClaimedByOneCopy) {
  PageLedger l(16 * kSmall, kSmall);
  EXPECT_TRUE(l.try_mark_requested(3));
  EXPECT_FALSE(l.try_mark_requested(3));
  bool whole = false;
  auto first = l.claim(frame(2, 3), migration::kPagesLastOfPage, whole);  // pages 2-4
  EXPECT_TRUE(whole);
  EXPECT_EQ(first, (std::vector<bool>{true, true, true})) << "a Requested page is claimed too";
  EXPECT_EQ(l.state(3), PageState::Filling);
  auto second = l.claim(frame(3, 3), migration::kPagesLastOfPage, whole);  // pages 3-5: a second copy
  EXPECT_EQ(second, (std::vector<bool>{false, false, true}));
  EXPECT_FALSE(l.try_mark_requested(5)) << "a page being filled is not asked for";
}

TEST(PageLedger, AFailedFrameGivesItsClaimsBack) {
  PageLedger l(16 * kSmall, kSmall);
  bool whole = false;
  auto v = frame(4, 4);
  auto mine = l.claim(v, migration::kPagesLastOfPage, whole);
  l.release(v, mine);
  for (uint64_t p = 4; p < 8; p++) EXPECT_EQ(l.state(p), PageState::Missing) << p;
  EXPECT_TRUE(l.try_mark_requested(5)) << "a released page is asked for again";
}

TEST(PageLedger, PresentCountsOnlyOnceCounted) {
  PageLedger l(4 * kSmall, kSmall);
  l.mark_present(0, 4);
  EXPECT_EQ(l.state(3), PageState::Present);
  EXPECT_FALSE(l.complete()) << "complete only once the pages are mapped or queued";
  l.count_present(4);
  EXPECT_TRUE(l.complete());
  EXPECT_EQ(l.present_bitmap().count(), 4u);
}

TEST(PageLedger, PartOfALargePageThatIsPresentOrFillingIsRefused) {
  PageLedger l(2 * kLarge, kLarge);
  bool whole = true;
  auto mine = l.claim(frame(0, 64), 0, whole);  // the first 256 KiB of page 0: not whole
  EXPECT_FALSE(whole);
  EXPECT_EQ(l.state(0), PageState::Missing) << "a part claims nothing";
  l.mark_present(0, 1);
  EXPECT_THROW(l.claim(frame(64, 64), 0, whole), ProtocolError);
  l.claim(frame(512, 512), migration::kPagesLastOfPage, whole);  // page 1 whole
  EXPECT_TRUE(whole);
  EXPECT_THROW(l.claim(frame(512, 64), 0, whole), ProtocolError) << "page 1 is being filled";
}

TEST(PageLedger, OutstandingIsWhatWasRequestedOrWantedAndNotPresent) {
  PageLedger l(16 * kSmall, kSmall);
  l.try_mark_requested(1);
  EXPECT_FALSE(l.mark_wanted(2));  // a vCPU waits, nothing asked yet (the link was down)
  l.mark_wanted(3);
  l.mark_present(3, 4);
  l.count_present(1);
  EXPECT_TRUE(l.mark_wanted(3)) << "a wait on a present page is told so";
  EXPECT_EQ(l.outstanding(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(l.state(2), PageState::Requested) << "collected: to be asked for again";
  EXPECT_TRUE(l.take_wanted(2));
  EXPECT_FALSE(l.take_wanted(2)) << "a wait is taken once";
}

}  // namespace
