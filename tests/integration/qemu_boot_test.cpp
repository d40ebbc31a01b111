// The same guest.elf boots under QEMU (-kernel, PVH) and prints the same
// results: the basis of every comparison with QEMU's own postcopy.
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "process.h"

namespace {

std::string qemu(const std::string& cmdline, const std::string& extra = "") {
  return fmt::format(
      "qemu-system-x86_64 -accel kvm -m 256 -kernel {} -append '{}' -device isa-debug-exit,iobase=0x501 "
      "-display none -serial stdio -monitor none -nodefaults -no-reboot {}",
      GUEST_ELF, cmdline, extra);
}

class QemuBootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::have_program("qemu-system-x86_64"))
      GTEST_SKIP() << "qemu-system-x86_64 is not installed (tools/install-deps.sh installs it)";
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm for qemu -accel kvm";
  }
};

// isa-debug-exit makes QEMU exit with (code << 1) | 1.
TEST_F(QemuBootTest, HelloExitsWithQemuCodeOne) {
  auto r = test::run_command(qemu("workload=hello"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("guest: workload hello: all good"), std::string::npos) << r.output;
}

TEST_F(QemuBootTest, TouchVerifiesUnderQemu) {
  auto r = test::run_command(qemu("workload=touch size=16 seconds=1"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("VERIFY OK pages=4096"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("touch: tsc "), std::string::npos) << r.output;
}

// The same guest finds QEMU's second CPU in QEMU's MADT and starts it.
TEST_F(QemuBootTest, TwoCpusUnderQemuSmp2) {
  for (const char* share : {"shared", "disjoint"}) {
    auto r = test::run_command(qemu(fmt::format("workload=touch size=16 seconds=1 share={}", share), "-smp 2"));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("smp: 2 CPUs running"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("VERIFY OK pages=4096 cpus=2"), std::string::npos) << r.output;
  }
}

}  // namespace
