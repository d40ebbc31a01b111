// PVH boot structures written into guest RAM and the boot vCPU state.
#include "pvh.h"

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "error.h"
#include "layout.h"

namespace {

TEST(Pvh, StartInfoCarriesMagicCmdlineAndMemoryMap) {
  std::vector<uint8_t> ram(64 << 20);
  vmm::write_pvh_boot_info(ram, "workload=hello", 0);
  vmm::HvmStartInfo si;
  std::memcpy(&si, ram.data() + vmm::layout::kStartInfo, sizeof si);
  EXPECT_EQ(si.magic, vmm::kHvmStartMagic);
  EXPECT_GE(si.version, 1u) << "version 1 is needed for the memmap fields";
  EXPECT_STREQ(reinterpret_cast<const char*>(ram.data() + si.cmdline_paddr), "workload=hello");
  ASSERT_EQ(si.memmap_entries, 3u);
  vmm::HvmMemmapEntry last;
  std::memcpy(&last, ram.data() + si.memmap_paddr + 2 * sizeof last, sizeof last);
  EXPECT_EQ(last.type, vmm::kMemmapRam);
  EXPECT_EQ(last.addr + last.size, ram.size()) << "the map must end where RAM ends";
}

TEST(Pvh, CommandLineTooLongIsRefused) {
  std::vector<uint8_t> ram(64 << 20);
  EXPECT_THROW(vmm::write_pvh_boot_info(ram, std::string(vmm::layout::kCmdlineMax, 'x'), 0), vmm::Error);
  EXPECT_NO_THROW(vmm::write_pvh_boot_info(ram, std::string(vmm::layout::kCmdlineMax - 1, 'x'), 0));
}

TEST(Pvh, BootVcpuIsInProtectedModeWithPagingOffAndEbxAtStartInfo) {
  kvm_regs r = vmm::pvh_initial_regs(0x100000);
  EXPECT_EQ(r.rip, 0x100000u);
  EXPECT_EQ(r.rbx, vmm::layout::kStartInfo);
  kvm_sregs s{};
  vmm::pvh_initial_sregs(s);
  EXPECT_EQ(s.cr0 & 0x1, 1u) << "PE";
  EXPECT_EQ(s.cr0 & 0x80000000u, 0u) << "paging must be off";
  EXPECT_EQ(s.cs.db, 1) << "32-bit code segment";
  EXPECT_EQ(s.cs.limit, 0xffffffffu);
  EXPECT_EQ(s.efer, 0u);
}

}  // namespace
