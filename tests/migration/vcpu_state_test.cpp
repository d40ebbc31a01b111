// Which vCPU state the source captures at switchover.
#include "vcpu_state.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "kvm.h"
#include "kvm_uapi.h"

namespace {

// The definition: every listed MSR that KVM_GET_MSRS reads on its own.
std::vector<uint32_t> readable_one_by_one(const vmm::KvmSystem& kvm, const vmm::Vcpu& vcpu) {
  std::vector<uint32_t> list(1 + 1024);
  list[0] = 1024;
  if (::ioctl(kvm.fd(), vmm::uapi::kGetMsrIndexList, list.data()) < 0) return {};
  std::vector<uint32_t> readable;
  for (uint32_t i = 0; i < list[0]; i++) {
    std::vector<uint8_t> one(sizeof(kvm_msrs) + sizeof(kvm_msr_entry), 0);
    auto* head = reinterpret_cast<kvm_msrs*>(one.data());
    head->nmsrs = 1;
    head->entries[0].index = list[1 + i];
    if (::ioctl(vcpu.fd(), vmm::uapi::kGetMsrs, one.data()) == 1) readable.push_back(list[1 + i]);
  }
  return readable;
}

TEST(VcpuState, MigratableMsrsAreExactlyTheReadableOnes) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm on this host";
  vmm::KvmSystem kvm;
  vmm::Vm vm(kvm);
  vmm::Vcpu vcpu(vm, 0);
  vcpu.set_cpuid(kvm.supported_cpuid());
  auto expected = readable_one_by_one(kvm, vcpu);
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(migration::migratable_msrs(kvm, vcpu), expected);
}

}  // namespace
