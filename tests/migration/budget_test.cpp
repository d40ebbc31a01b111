// Big guests without their RAM: the memory budget against the structures it
// counts, and every frame a 1 TiB guest needs within the frame bound.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "memory_budget.h"
#include "messages.h"
#include "page_states.h"

namespace migration {
namespace {

constexpr uint64_t kTiB = 1ULL << 40;

uint64_t rss_anon_bytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  uint64_t kib = 0;
  while (in >> key) {
    if (key == "RssAnon:") {
      in >> kib;
      return kib * 1024;
    }
    in.ignore(1 << 12, '\n');
  }
  return 0;
}

TEST(MemoryBudget, StaysUnderOnePercentOfGuestRamAtFourKibPagesFromOneGibToOneTib) {
  for (uint64_t size = 1ULL << 30; size <= kTiB; size <<= 1)
    for (bool hybrid : {false, true}) {
      MemoryBudget b = memory_budget(size, 4096, hybrid);
      EXPECT_LE(b.source + MemoryBudget::kSourceFixed, size / 100) << size;
      EXPECT_LE(b.destination + MemoryBudget::kDestinationFixed, size / 100) << size;
    }
  // Per page of guest RAM at 4 KiB: the destination holds 2 bytes and two bits.
  EXPECT_EQ(memory_budget(kTiB, 4096, false).destination, 2 * (kTiB / 4096) + 2 * (kTiB / 4096 / 8));
}

// The destination's states for a 1 TiB guest, built for real (no guest RAM:
// nothing is mapped until a frame or a fault comes), cost what the budget says.
TEST(MemoryBudget, TheDestinationsStatesForAOneTibGuestCostWhatTheBudgetSays) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "under ThreadSanitizer its shadow memory counts in RssAnon (4x what the states touch)";
#endif
  uint64_t before = rss_anon_bytes();
  PageStates pages(nullptr, nullptr, nullptr, kTiB, 4096);
  uint64_t grown = rss_anon_bytes() - before, want = memory_budget(kTiB, 4096, false).destination;
  EXPECT_EQ(pages.npages(), kTiB / 4096);
  EXPECT_GE(grown, want * 95 / 100) << "RssAnon grew " << grown << " bytes";
  EXPECT_LE(grown, want * 125 / 100) << "RssAnon grew " << grown << " bytes";  // ASan: shadow and redzones
}

TEST(Messages, EveryFrameOfAOneTibGuestFitsTheFrameBound) {
  uint64_t npages = kTiB / 4096;
  auto hello = decode_hello(encode(Hello{Role::Main, 1, Mode::Postcopy, kTiB, "gmem", 4096}));
  EXPECT_EQ(hello.mem_size, kTiB);
  PostcopyBegin begin = decode_postcopy_begin(encode(PostcopyBegin{4096, npages, 3, 1}), kTiB);
  EXPECT_EQ(begin.npages, npages);
  // The most stale ranges one frame holds, at the top of RAM.
  StaleChunks stale;
  for (uint32_t i = 0; i < kMaxStaleRanges; i++) stale.ranges.push_back({kTiB / 4096 - 2 * (i + 1), 1});
  auto p = encode(stale);
  EXPECT_LE(p.size(), kMaxPayload);
  EXPECT_EQ(decode_stale_chunks(p, kTiB).ranges.size(), kMaxStaleRanges);
  // After a lost link: which of 268 M pages are present, in bounded frames.
  auto present = vmm::Bitmap::from_words(std::vector<uint64_t>(vmm::Bitmap::words_for(npages), 0xf0f0f0f0f0f0f0f0ULL),
                                         npages);
  auto parts = split_received(present);
  EXPECT_EQ(parts.size(), npages / kMaxReceivedPages);
  uint64_t covered = 0;
  for (const auto& r : parts) {
    auto bytes = encode(r);
    ASSERT_LE(bytes.size(), kMaxPayload);
    Received d = decode_received(bytes, npages);
    EXPECT_EQ(d.first_page, covered);
    EXPECT_EQ(d.bits.words()[0], 0xf0f0f0f0f0f0f0f0ULL);
    covered += d.npages;
  }
  EXPECT_EQ(covered, npages);
  // A batch of page requests at the top of RAM.
  std::vector<uint64_t> req(kMaxRequestPages, npages - 1);
  EXPECT_LE(encode_request(req).size(), kMaxPayload);
  EXPECT_EQ(decode_request(encode_request(req), npages).size(), kMaxRequestPages);
}

}  // namespace
}  // namespace migration
