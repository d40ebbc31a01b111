// PageStates, the destination's per-page state during postcopy: each page
// moves Missing -> Requested -> (Filling) -> Present, is claimed by one copy
// however many come, and is mapped (UFFDIO_CONTINUE) once all its bytes are
// there. Frames come over a real loopback connection; the mapping tests use a
// real userfaultfd on memfd shmem.
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>

#include <atomic>
#include <memory>

#include "loopback.h"
#include "page_states.h"
#include "userfaultfd.h"

namespace {

using namespace migration;
using namespace migration::test;

constexpr uint64_t kPage = 4096, kPages = 16, kRam = kPage * kPages;

// PageStates of 4 KiB pages in postcopy without a userfaultfd: states only,
// nothing mapped (as the fuzzer runs it).
class PostcopyPageStates : public ::testing::Test {
 protected:
  void SetUp() override { pages.begin_postcopy(nullptr, nullptr); }

  SharedRam ram{kRam};
  std::vector<uint8_t> src = numbered_ram(kRam);
  PageStates pages{ram.primary, ram.alias, nullptr, kRam, kPage};
  ChannelPair link;
};

// PageStates over memfd shmem whose primary view is registered in MINOR
// mode, as a destination's is in postcopy; skipped where the kernel refuses.
class MappedPageStates : public PostcopyPageStates {
 protected:
  void SetUp() override {
    std::string why;
    uffd = register_minor(ram, UFFD_FEATURE_MINOR_SHMEM, why);
    if (!uffd) GTEST_SKIP() << why;
    pages.begin_postcopy(uffd.get(), nullptr);
  }
  void TearDown() override {
    if (uffd) uffd->unregister(ram.primary, ram.size);
  }
  bool mapped_page(uint64_t page) const { return mapped(ram.primary + page * kPage); }

  std::unique_ptr<vmm::Userfaultfd> uffd;
};

TEST_F(PostcopyPageStates, APostcopyPageGoesMissingRequestedPresentAndIsAskedForOnce) {
  EXPECT_EQ(pages.state(5), PageState::Missing);
  EXPECT_TRUE(pages.try_mark_requested(5));
  EXPECT_EQ(pages.state(5), PageState::Requested);
  EXPECT_FALSE(pages.try_mark_requested(5)) << "a page in flight must not be asked for twice";

  send_pages(*link.a, src.data(), kPage, 5, 1, kPagesUrgent | kPagesLastOfPage);
  EXPECT_EQ(receive_pages(*link.b, pages, true), 1u);
  EXPECT_EQ(pages.state(5), PageState::Present);
  EXPECT_FALSE(pages.try_mark_requested(5));
  EXPECT_EQ(pages.present(), 1u);
  EXPECT_EQ(pages.pages_answered(), 1u);
  EXPECT_EQ(pages.pages_pushed(), 0u);
  EXPECT_EQ(tag_at(ram.alias + 5 * kPage), 5u * kPage / kChunk + 1) << "the data lands through the alias";
}

// A page the push had in flight when the vCPU faulted comes twice: pushed,
// and answered on the urgent connection. The first copy to arrive claims it;
// the second completes nothing and is not counted.
TEST_F(PostcopyPageStates, APageThatComesTwiceIsClaimedByTheFirstCopyOnly) {
  ASSERT_TRUE(pages.try_mark_requested(3));
  send_pages(*link.a, src.data(), kPage, 2, 4, kPagesLastOfPage);  // the push: pages 2..5
  EXPECT_EQ(receive_pages(*link.b, pages, true), 4u);
  send_pages(*link.a, src.data(), kPage, 3, 1, kPagesUrgent | kPagesLastOfPage);  // the answer, late
  EXPECT_EQ(receive_pages(*link.b, pages, true), 0u);
  EXPECT_EQ(pages.present(), 4u);
  EXPECT_EQ(pages.pages_pushed(), 4u);
  EXPECT_EQ(pages.pages_answered(), 0u);
  EXPECT_EQ(pages.pages_pushed() + pages.pages_answered(), pages.present());
}

// After a lost link the destination asks again for what it was waiting on:
// the Requested pages and the Missing ones a vCPU waits for, none present.
TEST_F(PostcopyPageStates, OutstandingIsWhatWasRequestedOrWantedAndNotPresent) {
  EXPECT_TRUE(pages.outstanding().empty()) << "nothing asked for, nothing waited on";

  ASSERT_TRUE(pages.try_mark_requested(2));
  EXPECT_FALSE(pages.mark_wanted(9));  // a fault whose request the lost link dropped
  EXPECT_FALSE(pages.mark_wanted(7));
  send_pages(*link.a, src.data(), kPage, 7, 1, kPagesLastOfPage);
  ASSERT_EQ(receive_pages(*link.b, pages, true), 1u);
  EXPECT_TRUE(pages.mark_wanted(7)) << "a wanted page that is present says so";

  EXPECT_EQ(pages.outstanding(), (std::vector<uint64_t>{2, 9}));
  EXPECT_EQ(pages.state(9), PageState::Requested);
  EXPECT_EQ(pages.outstanding(), (std::vector<uint64_t>{2, 9})) << "asked again after a second loss too";
}

// Precopy: a page whose every chunk some frame covered is present at once;
// a chunk the guest wrote after it was sent makes its page missing again.
TEST(PageStates, PrecopyCoverageMakesPagesPresentAndStaleChunksMissing) {
  constexpr uint64_t kLarge = 2ULL << 20, kLargeRam = 2 * kLarge;
  SharedRam ram(kLargeRam);
  auto src = numbered_ram(kLargeRam);
  PageStates pages(ram.primary, ram.alias, nullptr, kLargeRam, kLarge);
  ChannelPair link;

  send_pages(*link.a, src.data(), kPage, 0, 256, 0);  // the first half of large page 0
  receive_pages(*link.b, pages, false);
  EXPECT_EQ(pages.state(0), PageState::Missing) << "half a page is not a page";
  send_pages(*link.a, src.data(), kPage, 256, 256, 0);
  receive_pages(*link.b, pages, false);
  EXPECT_EQ(pages.state(0), PageState::Present);
  EXPECT_EQ(pages.present(), 1u);

  pages.mark_stale(300, 1);
  EXPECT_EQ(pages.state(0), PageState::Missing);
  EXPECT_EQ(pages.present(), 0u);
  EXPECT_THROW(pages.mark_stale(kLargeRam / kChunk, 1), ProtocolError);
}

// A frame that is part of a large page must find that page not present: a
// source that sends it again is broken, and the frame is refused.
TEST(PageStates, PartOfALargePageThatIsPresentIsRefused) {
  constexpr uint64_t kLarge = 2ULL << 20;
  SharedRam ram(kLarge);
  auto src = numbered_ram(kLarge);
  PageStates pages(ram.primary, ram.alias, nullptr, kLarge, kLarge);
  pages.begin_postcopy(nullptr, nullptr);
  ChannelPair link;

  send_pages(*link.a, src.data(), kPage, 0, 256, 0);  // first half: no last-of-page
  EXPECT_EQ(receive_pages(*link.b, pages, true), 0u);
  send_pages(*link.a, src.data(), kPage, 256, 256, kPagesLastOfPage);
  EXPECT_EQ(receive_pages(*link.b, pages, true), 1u);
  send_pages(*link.a, src.data(), kPage, 0, 256, 0);
  EXPECT_THROW(receive_pages(*link.b, pages, true), ProtocolError);
  EXPECT_EQ(pages.present(), 1u);
}

// Mapping: UFFDIO_CONTINUE installs the page table entry; a page mapped
// already (EEXIST: a racing fault or completion did it) counts as done. Over
// a run that holds one, the kernel maps the pages before it and answers
// EAGAIN with what it mapped; the loop resumes there, meets EEXIST, and goes
// on past that page.
TEST_F(MappedPageStates, InstallMapsPagesAndGoesOnAfterEagainAndEexist) {
  EXPECT_FALSE(mapped_page(4));
  send_pages(*link.a, src.data(), kPage, 4, 1, kPagesUrgent | kPagesLastOfPage);
  ASSERT_EQ(receive_pages(*link.b, pages, true), 1u);
  EXPECT_TRUE(mapped_page(4)) << "an answered page is mapped in line";
  EXPECT_EQ(tag_at(ram.primary + 4 * kPage), 4u + 1);

  EXPECT_NO_THROW(pages.install_pages(4, 1)) << "EEXIST is done, not an error";
  EXPECT_NO_THROW(pages.install_pages(3, 3));  // 3 and 5 unmapped, 4 mapped between them
  EXPECT_TRUE(mapped_page(3));
  EXPECT_TRUE(mapped_page(5));
  EXPECT_FALSE(mapped_page(6));
}

// Pushed pages are mapped by the mapper thread; stopping it in MINOR mode
// drops what is queued (the page cache holds it: the kernel maps it on first
// touch once the range is unregistered) and never fails.
TEST_F(MappedPageStates, TheMapperMapsPushedPagesAndStopsCleanly) {
  std::atomic<int> errors{0};
  pages.start_mapper([&](const std::string&) { errors++; });

  send_pages(*link.a, src.data(), kPage, 8, 4, kPagesLastOfPage);
  ASSERT_EQ(receive_pages(*link.b, pages, true), 4u);
  bool all = false;
  for (int i = 0; i < 200 && !all; i++) {  // the mapper's queue: at most 2 s
    all = mapped_page(8) && mapped_page(11);
    if (!all) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(all) << "the mapper did not map pushed pages 8..11 within 2 s";
  EXPECT_NO_THROW(pages.stop_mapper());
  EXPECT_EQ(errors.load(), 0);
}

}  // namespace
