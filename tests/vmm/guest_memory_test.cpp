// Guest RAM backends: alias views, sizes, population and their errors.
#include "guest_memory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "error.h"
#include "gmem_support.h"
#include "hugepages.h"
#include "kvm.h"
#include "kvm_uapi.h"
#include "unique_fd.h"

namespace {

using vmm::Backend;
using vmm::GuestMemory;

bool have_kvm() { return ::access("/dev/kvm", R_OK | W_OK) == 0; }

void expect_alias_shares_pages(const GuestMemory& mem) {
  vmm::Mapping alias = mem.map_alias();
  ASSERT_EQ(alias.size(), mem.size());
  ASSERT_NE(alias.data(), mem.primary());
  std::memcpy(alias.data() + mem.size() - 8, "ALIASED", 8);
  EXPECT_STREQ(reinterpret_cast<const char*>(mem.primary() + mem.size() - 8), "ALIASED");
  mem.primary()[0] = 0x5a;
  EXPECT_EQ(alias.data()[0], 0x5a);
}

TEST(GuestMemory, ShmemAliasSeesTheSameBytes) {
  auto mem = GuestMemory::create(Backend::Shmem, 4 << 20, nullptr);
  expect_alias_shares_pages(mem);
}

TEST(GuestMemory, GuestMemfdAliasSeesTheSameBytes) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm: guest_memfd needs a VM";
  vmm::KvmSystem kvm;
  vmm::Vm vm(kvm);
  if (auto why = vmm::guest_memfd_missing(vm)) GTEST_SKIP() << *why;
  GuestMemory mem = GuestMemory::create(Backend::Gmem, 4 << 20, &vm);
  expect_alias_shares_pages(mem);
}

TEST(GuestMemory, PopulateAllocatesEveryPage) {
  auto mem = GuestMemory::create(Backend::Shmem, 2 << 20, nullptr);
  mem.populate();
  struct stat st {};
  ASSERT_EQ(::fstat(mem.fd(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_blocks) * 512, mem.size());
}

TEST(GuestMemory, GmemPopulateFillsEveryPageWithZeros) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm: guest_memfd needs a VM";
  vmm::KvmSystem kvm;
  vmm::Vm vm(kvm);
  if (auto why = vmm::guest_memfd_missing(vm)) GTEST_SKIP() << *why;
  GuestMemory mem = GuestMemory::create(Backend::Gmem, 2 << 20, &vm);
  mem.populate();
  EXPECT_EQ(mem.allocated_chunks().count(), mem.size() / 4096) << "every guest_memfd page must be in the page cache";
  auto span = mem.span();
  EXPECT_TRUE(std::all_of(span.begin(), span.end(), [](uint8_t b) { return b == 0; }));
}

TEST(GuestMemory, AllocatedChunksFindsExactlyTheWrittenGmemPages) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm: guest_memfd needs a VM";
  vmm::KvmSystem kvm;
  vmm::Vm vm(kvm);
  if (auto why = vmm::guest_memfd_missing(vm)) GTEST_SKIP() << *why;
  // Sparse, dense and mixed stretches, so that whole ranges and single pages are both settled.
  GuestMemory mem = GuestMemory::create(Backend::Gmem, 64 << 20, &vm);
  std::vector<uint64_t> written = {0, 1, 2, 511, 512, 4095, 8191, 16383};
  for (uint64_t p = 4096; p < 4096 + 1024; p++) written.push_back(p);  // a full 4 MiB
  vmm::Mapping alias = mem.map_alias();
  for (uint64_t p : written) alias.data()[p * 4096] = 1;
  vmm::Bitmap bits = mem.allocated_chunks();
  ASSERT_EQ(bits.size(), mem.size() / 4096);
  for (uint64_t p = 0; p < mem.size() / 4096; p++) {
    bool want = std::find(written.begin(), written.end(), p) != written.end();
    ASSERT_EQ(bits.test(p), want) << "page " << p;
  }
}

// Whether `addr` has a page-table entry in this process (/proc/self/pagemap bit 63).
bool pte_present(const uint8_t* addr) {
  vmm::UniqueFd pm(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  uint64_t entry = 0;
  auto off = static_cast<off_t>(reinterpret_cast<uintptr_t>(addr) / 4096 * 8);
  if (!pm || ::pread(pm.get(), &entry, 8, off) != 8) throw std::runtime_error("cannot read /proc/self/pagemap");
  return entry >> 63 & 1;
}

// The pages a guest wrote through another view (here the alias, as KVM does
// for a guest_memfd bound by fd) get entries in the primary view, and only
// those: the unwritten ones stay holes.
TEST(GuestMemory, MapForReadingMapsExactlyTheAllocatedChunks) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm: guest_memfd needs a VM";
  vmm::KvmSystem kvm;
  vmm::Vm vm(kvm);
  if (auto why = vmm::guest_memfd_missing(vm)) GTEST_SKIP() << *why;
  GuestMemory mem = GuestMemory::create(Backend::Gmem, 8 << 20, &vm);
  vmm::Mapping alias = mem.map_alias();
  std::vector<uint64_t> written = {0, 1, 63, 64, 65, 700, 2047};
  for (uint64_t p : written) alias.data()[p * 4096] = 1;
  for (uint64_t p : written) ASSERT_FALSE(pte_present(mem.primary() + p * 4096)) << "page " << p;
  EXPECT_EQ(mem.map_for_reading(mem.allocated_chunks()), written.size() * 4096);
  for (uint64_t p = 0; p < mem.size() / 4096; p++) {
    bool want = std::find(written.begin(), written.end(), p) != written.end();
    ASSERT_EQ(pte_present(mem.primary() + p * 4096), want) << "page " << p;
  }
}

TEST(GuestMemory, ShmemIsSealedAgainstResizing) {
  auto mem = GuestMemory::create(Backend::Shmem, 2 << 20, nullptr);
  EXPECT_NE(::ftruncate(mem.fd(), 1 << 20), 0) << "guest RAM must not shrink under KVM";
}

TEST(GuestMemory, SizeThatIsNotAPageMultipleNamesTheNextGoodSize) {
  try {
    vmm::check_backend_size(Backend::Hugetlb2M, 3 << 20);
    FAIL() << "3 MiB is not a multiple of 2 MiB";
  } catch (const vmm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of its 2 MiB pages; 3 MiB is not (use 4 MiB)"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(vmm::check_backend_size(Backend::Shmem, 4097), vmm::Error);
  EXPECT_THROW(vmm::check_backend_size(Backend::Shmem, 0), vmm::Error);
}

TEST(GuestMemory, MissingHugepagesSayHowToReserveThem) {
  vmm::HugepagePool pool = vmm::read_hugepage_pool(1ULL << 30);
  if (!pool.exists) GTEST_SKIP() << "this kernel offers no 1 GiB hugepages";
  uint64_t need = pool.free + 1;
  try {
    vmm::check_backend_size(Backend::Hugetlb1G, need << 30);
    FAIL() << "asking for one more 1 GiB page than is free must fail";
  } catch (const vmm::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(fmt::format("needs {} free 1 GiB hugepage(s)", need)), std::string::npos) << msg;
    EXPECT_NE(msg.find("tools/hugepages.sh reserve 1g"), std::string::npos) << msg;
    EXPECT_NE(msg.find("hugepages-1048576kB/nr_hugepages"), std::string::npos) << msg;
  }
}

TEST(GuestMemory, ParsesSizesWithUnits) {
  EXPECT_EQ(vmm::parse_size("256M"), 256ULL << 20);
  EXPECT_EQ(vmm::parse_size("1G"), 1ULL << 30);
  EXPECT_EQ(vmm::parse_size("2MiB"), 2ULL << 20);
  EXPECT_EQ(vmm::parse_size("4096"), 4096u);
  EXPECT_FALSE(vmm::parse_size("12X"));
  EXPECT_FALSE(vmm::parse_size("M"));
  EXPECT_FALSE(vmm::parse_size("99999999999999999G"));
}

TEST(GuestMemory, BackendNamesRoundTrip) {
  for (Backend b : {Backend::Gmem, Backend::Shmem, Backend::Hugetlb2M, Backend::Hugetlb1G})
    EXPECT_EQ(vmm::parse_backend(vmm::backend_name(b)), b);
  EXPECT_FALSE(vmm::parse_backend("hugetlb"));
  EXPECT_EQ(vmm::backend_page_size(Backend::Hugetlb1G), 1ULL << 30);
}

}  // namespace
