// The KVM layer: objects come up, and failures name the ioctl and errno.
#include "kvm.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "error.h"
#include "kvm_uapi.h"

namespace {

class KvmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm on this host";
  }
};

TEST_F(KvmTest, SystemReportsTheStableApi) {
  vmm::KvmSystem kvm;
  EXPECT_EQ(kvm.api_version(), KVM_API_VERSION);
  EXPECT_GT(kvm.vcpu_mmap_size(), 0u);
}

// Goes through our own KVM_GET_SUPPORTED_CPUID number (see kvm_uapi.h): with
// the C++ sizeof of Debian's header this ioctl fails with EINVAL.
TEST_F(KvmTest, SupportedCpuidHasTheBasicLeaves) {
  vmm::KvmSystem kvm;
  auto table = kvm.supported_cpuid();
  bool leaf0 = false, leaf1 = false;
  for (const auto& e : table.entries) {
    leaf0 |= e.function == 0;
    leaf1 |= e.function == 1;
  }
  EXPECT_TRUE(leaf0 && leaf1) << table.entries.size() << " entries";
}

TEST_F(KvmTest, VcpuAcceptsCpuidAndRegisters) {
  vmm::KvmSystem kvm;
  vmm::Vm vm(kvm);
  vmm::Vcpu vcpu(vm, 0);
  vcpu.set_cpuid(kvm.supported_cpuid());
  kvm_regs r = vcpu.get_regs();
  r.rip = 0x1234;
  vcpu.set_regs(r);
  EXPECT_EQ(vcpu.get_regs().rip, 0x1234u);
}

TEST_F(KvmTest, FailedIoctlNamesTheIoctlAndErrno) {
  vmm::KvmSystem kvm;
  vmm::Vm vm(kvm);
  try {
    vm.set_memory_region(0, 0, 0, 4095, 0x1000);  // size not page aligned
    FAIL() << "KVM must refuse an unaligned memslot";
  } catch (const vmm::Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(e.call(), "KVM_SET_USER_MEMORY_REGION");
    EXPECT_NE(msg.find("KVM_SET_USER_MEMORY_REGION failed: Invalid argument (EINVAL)"), std::string::npos) << msg;
  }
}

}  // namespace
