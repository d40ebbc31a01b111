// The capability probe agrees with direct kernel calls made here.
#include "caps.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "error.h"
#include "guest_memory.h"
#include "kvm.h"
#include "kvm_uapi.h"
#include "userfaultfd.h"

namespace {

class CapsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm on this host";
    caps_ = vmm::probe_capabilities();
  }
  nlohmann::ordered_json caps_;
};

TEST_F(CapsTest, ReportsKvmApiAndGuestMemfdFlags) {
  ASSERT_TRUE(caps_["kvm"]["available"].get<bool>());
  EXPECT_EQ(caps_["kvm"]["api_version"], KVM_API_VERSION);
  vmm::KvmSystem kvm;
  vmm::Vm vm(kvm);
  EXPECT_EQ(caps_["guest_memfd"]["flags"], vm.check_extension(KVM_CAP_GUEST_MEMFD_FLAGS));
}

TEST_F(CapsTest, ShmemMinorRegistrationMatchesADirectAttempt) {
  if (!caps_["userfaultfd"]["available"].get<bool>()) GTEST_SKIP() << "userfaultfd unavailable here";
  auto mem = vmm::GuestMemory::create(vmm::Backend::Shmem, 4096, nullptr);
  vmm::Userfaultfd uffd(UFFD_FEATURE_MINOR_SHMEM);
  bool direct = uffd.try_register(mem.primary(), 4096, UFFDIO_REGISTER_MODE_MINOR) == 0;
  EXPECT_EQ(caps_["minor_registration"]["shmem"]["minor"].get<bool>(), direct);
}

// On this project's reference host the answer is "no" (EINVAL); on a kernel
// with uffd support for guest_memfd it is "yes". Either way it must be probed
// and must match a registration attempted here.
TEST_F(CapsTest, GuestMemfdMinorRegistrationIsProbedNotAssumed) {
  const auto& g = caps_["minor_registration"]["gmem"];
  if (!g["probed"].get<bool>()) GTEST_SKIP() << "gmem not probed: " << g["reason"].get<std::string>();
  vmm::KvmSystem kvm;
  vmm::Vm vm(kvm);
  auto mem = vmm::GuestMemory::create(vmm::Backend::Gmem, 4096, &vm);
  vmm::Userfaultfd uffd(UFFD_FEATURE_MINOR_SHMEM);
  int rc = uffd.try_register(mem.primary(), 4096, UFFDIO_REGISTER_MODE_MINOR);
  EXPECT_EQ(g["minor"].get<bool>(), rc == 0);
  if (rc != 0) {
    EXPECT_EQ(g["minor_result"].get<std::string>(), vmm::errno_name(-rc));
  }
}

TEST_F(CapsTest, UnprobedHugepageSizesSayWhy) {
  for (const char* b : {"hugetlb-2m", "hugetlb-1g"}) {
    const auto& r = caps_["minor_registration"][b];
    if (r["probed"].get<bool>()) continue;
    EXPECT_FALSE(r["reason"].get<std::string>().empty()) << b;
  }
}

TEST_F(CapsTest, RenderedTextListsEveryBackend) {
  std::string text = vmm::render_capabilities(caps_);
  for (const char* b : {"gmem", "shmem", "hugetlb-2m", "hugetlb-1g"}) EXPECT_NE(text.find(b), std::string::npos) << b;
}

}  // namespace
