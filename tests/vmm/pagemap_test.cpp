// The page-table scan a postcopy destination trusts to find a guest page
// mapped where it should fault: pages in the page cache but never touched
// through the mapping are not mapped; touched ones are, until MADV_DONTNEED.
#include "pagemap.h"

#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace {

constexpr size_t kPage = 4096, kPages = 64;

struct Memfd {
  Memfd() {
    fd = ::memfd_create("pagemap-test", MFD_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, kPages * kPage), 0);
    std::vector<char> data(kPages * kPage, 'x');
    EXPECT_EQ(::pwrite(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));  // cached, unmapped
    p = static_cast<char*>(::mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    EXPECT_NE(p, MAP_FAILED);
  }
  ~Memfd() {
    ::munmap(p, kPages * kPage);
    ::close(fd);
  }
  int fd;
  char* p;
};

std::string show(const std::vector<vmm::MappedRange>& r) {
  std::string s;
  for (auto& m : r) s += fmt::format("[{},{}) ", m.begin / kPage, m.end / kPage);
  return s;
}

class Pagemap : public ::testing::TestWithParam<vmm::PagemapMethod> {};

TEST_P(Pagemap, FindsExactlyThePagesTouchedThroughTheMapping) {
  Memfd m;
  EXPECT_TRUE(vmm::mapped_ranges(m.p, kPages * kPage, GetParam()).empty());
  // Writes: a read fault on a shared file mapping maps its neighbours too
  // (fault-around), which is one reason the destination scans the whole view.
  m.p[3 * kPage] = 1;
  m.p[7 * kPage] = 1;
  m.p[8 * kPage + 100] = 1;
  m.p[63 * kPage] = 1;
  auto r = vmm::mapped_ranges(m.p, kPages * kPage, GetParam());
  EXPECT_EQ(show(r), "[3,4) [7,9) [63,64) ");
  ASSERT_EQ(::madvise(m.p + 7 * kPage, kPage, MADV_DONTNEED), 0);
  EXPECT_EQ(show(vmm::mapped_ranges(m.p, kPages * kPage, GetParam())), "[3,4) [8,9) [63,64) ");
  // A part of the range: offsets count from its own start.
  EXPECT_EQ(show(vmm::mapped_ranges(m.p + 8 * kPage, 8 * kPage, GetParam())), "[0,1) ");
}

TEST_P(Pagemap, ScansAManyRunRangeWhole) {
  Memfd m;
  for (size_t i = 0; i < kPages; i += 2) m.p[i * kPage] = 1;  // 32 runs of one page
  EXPECT_EQ(vmm::mapped_ranges(m.p, kPages * kPage, GetParam()).size(), kPages / 2);
}

INSTANTIATE_TEST_SUITE_P(BothMethods, Pagemap, ::testing::Values(vmm::PagemapMethod::Scan, vmm::PagemapMethod::Read),
                         [](const ::testing::TestParamInfo<vmm::PagemapMethod>& p) { return p.param == vmm::PagemapMethod::Scan ? "Scan" : "Read"; });

TEST(Pagemap, RefusesAnUnalignedRange) {
  Memfd m;
  EXPECT_THROW(vmm::mapped_ranges(m.p + 1, kPage), std::exception);
}

}  // namespace
