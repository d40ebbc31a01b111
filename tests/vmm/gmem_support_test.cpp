// The guest_memfd probe names the missing piece, and VMM_HIDE_GUEST_MEMFD
// makes this process answer as a KVM without it does, down to the errno.
#include "gmem_support.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "error.h"
#include "guest_memory.h"
#include "kvm.h"
#include "kvm_uapi.h"

namespace {

// Sets VMM_HIDE_GUEST_MEMFD for one test and puts back what was there.
class HideGuestMemfd {
 public:
  explicit HideGuestMemfd(const char* value) {
    if (const char* v = std::getenv(kVar)) saved_ = v;
    if (value) ::setenv(kVar, value, 1);
    else ::unsetenv(kVar);
  }
  ~HideGuestMemfd() {
    if (saved_) ::setenv(kVar, saved_->c_str(), 1);
    else ::unsetenv(kVar);
  }

 private:
  static constexpr const char* kVar = "VMM_HIDE_GUEST_MEMFD";
  std::optional<std::string> saved_;
};

class GmemSupport : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm on this host";
    kvm_.emplace();
    vm_.emplace(*kvm_);
  }
  std::optional<vmm::KvmSystem> kvm_;
  std::optional<vmm::Vm> vm_;
};

TEST_F(GmemSupport, HiddenAllAnswersAsAKvmBuiltWithoutIt) {
  HideGuestMemfd hide("1");
  EXPECT_EQ(vm_->check_extension(KVM_CAP_GUEST_MEMFD), 0);
  EXPECT_EQ(vm_->check_extension(KVM_CAP_GUEST_MEMFD_FLAGS), 0);
  EXPECT_EQ(kvm_->check_extension(KVM_CAP_GUEST_MEMFD), 0);
  EXPECT_GT(vm_->check_extension(KVM_CAP_USER_MEMORY), 0) << "only guest_memfd's caps are hidden";
  vmm::UniqueFd fd;
  EXPECT_EQ(vm_->try_create_guest_memfd(2 << 20, 0, fd), -ENOTTY);
  auto why = vmm::guest_memfd_missing(*vm_);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("KVM_CAP_GUEST_MEMFD = 0"), std::string::npos) << *why;
  EXPECT_NE(why->find("CONFIG_KVM_GUEST_MEMFD"), std::string::npos) << *why;
  EXPECT_NE(why->find("VMM_HIDE_GUEST_MEMFD=1"), std::string::npos) << "the hiding must say it hides: " << *why;
}

TEST_F(GmemSupport, HiddenMmapNamesTheMissingFlag) {
  HideGuestMemfd hide("mmap");
  vmm::UniqueFd fd;
  EXPECT_EQ(vm_->try_create_guest_memfd(2 << 20, GUEST_MEMFD_FLAG_MMAP, fd), -EINVAL);
  auto why = vmm::guest_memfd_missing(*vm_);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("lacks GUEST_MEMFD_FLAG_MMAP"), std::string::npos) << *why;
  EXPECT_NE(why->find("KVM_CAP_GUEST_MEMFD_FLAGS = 0x0"), std::string::npos) << *why;
}

TEST_F(GmemSupport, CreatingHiddenGuestMemfdFailsNamingThePiece) {
  HideGuestMemfd hide("all");
  try {
    vmm::GuestMemory::create(vmm::Backend::Gmem, 2 << 20, &*vm_);
    FAIL() << "guest_memfd was created although it is hidden";
  } catch (const vmm::Error& e) {
    std::string what = e.what();
    EXPECT_EQ(e.err(), ENOTTY) << what;
    EXPECT_NE(what.find("this KVM has no guest_memfd"), std::string::npos) << what;
    EXPECT_NE(what.find("--memory shmem"), std::string::npos) << what;
  }
}

TEST_F(GmemSupport, AnUnknownSettingIsRefused) {
  HideGuestMemfd hide("yes");
  EXPECT_THROW(vmm::gmem_hiding(), vmm::Error);
}

TEST_F(GmemSupport, UnhiddenAnswerIsTheKernels) {
  HideGuestMemfd hide(nullptr);
  EXPECT_TRUE(vmm::gmem_hiding_setting().empty());
  vmm::UniqueFd fd;
  int rc = vm_->try_create_guest_memfd(2 << 20, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, fd);
  auto why = vmm::guest_memfd_missing(*vm_);
  EXPECT_EQ(rc == 0 && vm_->check_extension(KVM_CAP_GUEST_MEMFD) > 0, !why.has_value()) << why.value_or("usable");
  if (why) {
    EXPECT_EQ(why->find("VMM_HIDE_GUEST_MEMFD"), std::string::npos) << *why;
  }
}

}  // namespace
