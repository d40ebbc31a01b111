// vmm::Bitmap: the one bitmap of chunks and pages, in the words KVM and the wire use.
#include <gtest/gtest.h>

#include "bitmap.h"

namespace {

using vmm::Bitmap;

TEST(Bitmap, RangesAcrossWordsSetClearAndAnswerAnyAndAll) {
  Bitmap b(200);
  b.set(60, 130);  // the end of word 0, all of word 1, the start of word 2
  EXPECT_EQ(b.count(), 70u);
  EXPECT_FALSE(b.test(59));
  EXPECT_TRUE(b.test(60));
  EXPECT_TRUE(b.test(129));
  EXPECT_FALSE(b.test(130));
  EXPECT_TRUE(b.all(60, 130));
  EXPECT_FALSE(b.all(59, 130));
  EXPECT_TRUE(b.any(0, 61));
  EXPECT_FALSE(b.any(130, 200));
  b.reset(64, 128);
  EXPECT_EQ(b.count(), 6u);
  EXPECT_EQ(b.words()[1], 0u);
}

TEST(Bitmap, FindNextWalksSetAndClearBitsAndStopsAtTheSize) {
  Bitmap b(130);
  b.set(3);
  b.set(64);
  b.set(129);
  EXPECT_EQ(b.find_next(0), 3u);
  EXPECT_EQ(b.find_next(4), 64u);
  EXPECT_EQ(b.find_next(65), 129u);
  EXPECT_EQ(b.find_next(130), 130u);
  Bitmap full(130, true);
  EXPECT_EQ(full.find_next_clear(0), 130u) << "the clear bits past the size are not bits of the map";
  full.reset(100);
  EXPECT_EQ(full.find_next_clear(0), 100u);
  EXPECT_EQ(full.find_next_clear(101), 130u);
}

TEST(Bitmap, NoBitIsEverSetPastTheSize) {
  Bitmap b(70, true);
  EXPECT_EQ(b.count(), 70u);
  EXPECT_EQ(b.words()[1], (1ULL << 6) - 1);
  b.flip();
  EXPECT_EQ(b.count(), 0u);
  b.flip();
  EXPECT_EQ(b.count(), 70u);
  EXPECT_THROW(Bitmap::from_words({~0ULL, 1ULL << 6}, 70), std::invalid_argument);
  EXPECT_THROW(Bitmap::from_words({~0ULL}, 70), std::invalid_argument) << "too few words";
  EXPECT_EQ(Bitmap::from_words({~0ULL, 1}, 70).count(), 65u);
}

TEST(Bitmap, WordwiseOperationsNeedOneSizeAndSlicesStartAtAWord) {
  Bitmap a(128), b(128);
  a.set(1);
  a.set(100);
  b.set(100);
  b.set(127);
  Bitmap both = a;
  both &= b;
  EXPECT_EQ(both.count(), 1u);
  EXPECT_TRUE(a.intersects(b));
  Bitmap either = a;
  either |= b;
  EXPECT_EQ(either.count(), 3u);
  EXPECT_THROW(a |= Bitmap(64), std::invalid_argument);
  Bitmap s = either.slice(64, 64);
  EXPECT_EQ(s.size(), 64u);
  EXPECT_TRUE(s.test(36));
  EXPECT_TRUE(s.test(63));
  EXPECT_EQ(s.count(), 2u);
  EXPECT_THROW(either.slice(3, 10), std::invalid_argument);
  EXPECT_THROW(either.slice(64, 65), std::invalid_argument);
}

}  // namespace
