// Boots the real guest with the real `vmm` binary on every RAM backend.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "hugepages.h"
#include "process.h"

namespace {

using test::have_kvm;
using test::run_command;

std::string vmm_run(const std::string& args) {
  return fmt::format("{} run --kernel {} {}", VMM_BIN, GUEST_ELF, args);
}

// Reserves hugepages for one test and gives back exactly what it took.
class HugepageReservation {
 public:
  HugepageReservation(const char* size, int count) : size_(size), count_(count) {
    auto r = run_command(fmt::format("{} reserve {} {}", HUGEPAGES_SH, size, count), 120);
    ok_ = r.exit_code == 0;
    message_ = r.output;
  }
  ~HugepageReservation() {
    if (ok_) run_command(fmt::format("{} release {} {}", HUGEPAGES_SH, size_, count_), 60);
  }
  bool ok() const { return ok_; }
  const std::string& message() const { return message_; }

 private:
  const char* size_;
  int count_;
  bool ok_ = false;
  std::string message_;
};

class BootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  }
};

void expect_touch_ok(const std::string& args) {
  auto r = run_command(vmm_run(args + " --cmdline 'workload=touch size=16 seconds=1'"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("VERIFY OK pages=4096"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("HIST lo_us=0 hi_us=1"), std::string::npos) << r.output;
}

// Skips the guest_memfd runs of a test that also covers other backends, saying why.
bool skip_gmem_case(const std::string& args) {
  if (args.find("--memory gmem") == std::string::npos || test::gmem_missing().empty()) return false;
  std::printf("[ SKIPPED  ] %s: %s\n", args.c_str(), test::gmem_missing().c_str());
  return true;
}

TEST_F(BootTest, HelloExitsZeroOnEveryFourKibBackend) {
  for (const char* args : {"--memory gmem --gmem-bind fd", "--memory gmem --gmem-bind hva", "--memory shmem"}) {
    if (skip_gmem_case(args)) continue;
    auto r = run_command(vmm_run(args));
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.output;
    EXPECT_NE(r.output.find("guest: workload hello: all good"), std::string::npos) << r.output;
  }
}

TEST_F(BootTest, TouchVerifiesOnGuestMemfdBoundAsFd) {
  if (!test::gmem_missing().empty()) GTEST_SKIP() << test::gmem_missing();
  expect_touch_ok("--memory gmem --gmem-bind fd");
}
TEST_F(BootTest, TouchVerifiesOnGuestMemfdBoundAsHva) {
  if (!test::gmem_missing().empty()) GTEST_SKIP() << test::gmem_missing();
  expect_touch_ok("--memory gmem --gmem-bind hva");
}

// On a KVM without guest_memfd (here: as VMM_HIDE_GUEST_MEMFD makes it
// answer), asking for it fails at once naming the missing piece, and with no
// --memory the guest runs on shmem with a line that says why.
TEST_F(BootTest, WithoutGuestMemfdTheErrorNamesItAndTheDefaultIsShmem) {
  for (const char* hide : {"1", "mmap"}) {
    auto r = run_command(fmt::format("env VMM_HIDE_GUEST_MEMFD={} {}", hide, vmm_run("--memory gmem")), 20);
    EXPECT_EQ(r.exit_code, 125) << r.output;
    EXPECT_NE(r.output.find(std::string(hide) == "1" ? "this KVM has no guest_memfd (KVM_CAP_GUEST_MEMFD = 0"
                                                     : "lacks GUEST_MEMFD_FLAG_MMAP"),
              std::string::npos)
        << r.output;
    EXPECT_EQ(r.output.find("guest: PVH boot ok"), std::string::npos) << "the guest must not start: " << r.output;
  }
  auto r = run_command(fmt::format("env VMM_HIDE_GUEST_MEMFD=1 {}", vmm_run("")), 20);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("memory: shmem, since this KVM has no guest_memfd"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("guest: workload hello: all good"), std::string::npos) << r.output;
  auto check = run_command(fmt::format("env VMM_HIDE_GUEST_MEMFD=1 {} caps --check gmem", VMM_BIN), 20);
  EXPECT_EQ(check.exit_code, 1) << check.output;
  EXPECT_NE(check.output.find("gmem: not usable here: this KVM has no guest_memfd"), std::string::npos)
      << check.output;
}
TEST_F(BootTest, TouchVerifiesOnShmem) { expect_touch_ok("--memory shmem"); }

TEST_F(BootTest, TouchVerifiesOnHugetlb2M) {
  HugepageReservation pages("2m", 64);
  if (!pages.ok()) GTEST_SKIP() << "could not reserve 64 x 2 MiB hugepages: " << pages.message();
  expect_touch_ok("--memory hugetlb-2m --mem-size 128M");
  auto r = run_command(vmm_run("--memory hugetlb-2m --mem-size 128M"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(BootTest, TouchVerifiesOnHugetlb1GAndReleasesThePage) {
  vmm::HugepagePool before = vmm::read_hugepage_pool(1ULL << 30);
  if (!before.exists) GTEST_SKIP() << "this kernel offers no 1 GiB hugepages";
  {
    HugepageReservation pages("1g", 1);
    if (!pages.ok()) GTEST_SKIP() << "could not reserve one 1 GiB hugepage: " << pages.message();
    expect_touch_ok("--memory hugetlb-1g");
  }
  EXPECT_EQ(vmm::read_hugepage_pool(1ULL << 30).nr, before.nr) << "the test must give back the page it reserved";
}

// vCPU 0 finds the other in the MADT and starts it; both touch, and the
// guest verifies every page they wrote.
TEST_F(BootTest, TwoVcpusVerifyOnEveryBackend) {
  HugepageReservation two_mib("2m", 64), one_gib("1g", 1);
  struct {
    const char* args;
    const char* share;
    bool ok;
  } cases[] = {{"--memory gmem --gmem-bind fd", "shared", true},
               {"--memory gmem --gmem-bind hva", "disjoint", true},
               {"--memory shmem", "disjoint", true},
               {"--memory hugetlb-2m --mem-size 128M", "shared", two_mib.ok()},
               {"--memory hugetlb-1g --mem-size 1G", "disjoint", one_gib.ok()}};
  for (const auto& c : cases) {
    if (!c.ok) {
      std::printf("[ SKIPPED  ] %s: could not reserve its hugepages\n", c.args);
      continue;
    }
    if (skip_gmem_case(c.args)) continue;
    auto r = run_command(
        vmm_run(fmt::format("{} --vcpus 2 --cmdline 'workload=touch size=16 seconds=1 share={}'", c.args, c.share)));
    EXPECT_EQ(r.exit_code, 0) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("smp: 2 CPUs running (MADT at 9fc50 lists 2), apic ids 0 1"), std::string::npos)
        << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("VERIFY OK pages=4096 cpus=2"), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("HISTCPU cpu=1 "), std::string::npos) << c.args << "\n" << r.output;
  }
}

TEST_F(BootTest, OneVcpuSaysSo) {
  auto r = run_command(vmm_run("--memory shmem --cmdline 'workload=touch size=16 seconds=1'"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("smp: 1 CPU running (MADT at 9fc50 lists 1)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("VERIFY OK pages=4096 cpus=1"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("HISTCPU"), std::string::npos) << r.output;
}

TEST_F(BootTest, VcpusBeyondEightAreRefused) {
  auto r = run_command(vmm_run("--memory shmem --vcpus 9"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--vcpus"), std::string::npos) << r.output;
}

TEST_F(BootTest, SharedIsTheOnlyOtherShare) {
  auto r = run_command(vmm_run("--memory shmem --cmdline 'workload=touch size=16 seconds=1 share=some'"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("touch: share=some: expected disjoint or shared"), std::string::npos) << r.output;
}

TEST_F(BootTest, HugetlbWithoutFreePagesSaysHowManyToReserve) {
  vmm::HugepagePool pool = vmm::read_hugepage_pool(2ULL << 20);
  if (pool.free >= 4096) GTEST_SKIP() << "4096 free 2 MiB pages: cannot provoke the shortage";
  auto r = run_command(vmm_run("--memory hugetlb-2m --mem-size 8G"));
  EXPECT_EQ(r.exit_code, 125) << r.output;
  EXPECT_NE(r.output.find("needs 4096 free 2 MiB hugepage(s)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tools/hugepages.sh reserve 2m"), std::string::npos) << r.output;
}

TEST_F(BootTest, MemSizeNotAMultipleOfThePageIsRefused) {
  auto r = run_command(vmm_run("--memory hugetlb-1g --mem-size 300M"));
  EXPECT_EQ(r.exit_code, 125) << r.output;
  EXPECT_NE(r.output.find("multiple of its 1 GiB pages"), std::string::npos) << r.output;
}

TEST_F(BootTest, TruncatedKernelIsRefusedWithAClearError) {
  std::string path = ::testing::TempDir() + "truncated.elf";
  auto cut = run_command(fmt::format("head -c 100 {} > {}", GUEST_ELF, path));
  ASSERT_EQ(cut.exit_code, 0) << cut.output;
  auto r = run_command(fmt::format("{} run --kernel {} --memory shmem", VMM_BIN, path));
  EXPECT_EQ(r.exit_code, 125) << r.output;
  EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;
}

TEST_F(BootTest, GuestReportsUnknownWorkloadWithExitCodeTwo) {
  auto r = run_command(vmm_run("--memory shmem --cmdline workload=nope"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown workload=nope"), std::string::npos) << r.output;
}

TEST_F(BootTest, SerialLogReceivesTheGuestOutput) {
  std::string path = ::testing::TempDir() + "serial.log";
  auto r = run_command(vmm_run(fmt::format("--memory shmem --serial-log {}", path)));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto cat = run_command("cat " + path);
  EXPECT_NE(cat.output.find("guest: workload hello: all good"), std::string::npos) << cat.output;
  EXPECT_EQ(r.output.find("guest: workload hello"), std::string::npos) << "serial went to stdout too";
}

TEST(CapsCommand, JsonIsValidAndReportsEveryBackend) {
  auto r = run_command(fmt::format("{} caps --json 2>/dev/null | python3 -c "
                                   "'import json,sys; d=json.load(sys.stdin); "
                                   "print(sorted(d[\"minor_registration\"].keys()))'",
                                   VMM_BIN));
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm: caps has no registration matrix";
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("['gmem', 'hugetlb-1g', 'hugetlb-2m', 'shmem']"), std::string::npos) << r.output;
}

}  // namespace

namespace {

// With one page of each hugepage size reserved, caps probes MINOR registration
// on hugetlb for real (the probe itself never reserves pages).
TEST(CapsCommand, ProbesHugetlbMinorRegistrationWhenPagesAreFree) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm";
  HugepageReservation two("2m", 1);
  HugepageReservation one("1g", 1);
  if (!two.ok() || !one.ok()) GTEST_SKIP() << "could not reserve hugepages: " << two.message() << one.message();
  auto r = run_command(fmt::format("{} caps --json 2>/dev/null | python3 -c "
                                   "'import json,sys; d=json.load(sys.stdin); r=d[\"minor_registration\"]; "
                                   "f=d[\"userfaultfd\"][\"feature_names\"]; "
                                   "print(r[\"hugetlb-2m\"][\"minor\"], r[\"hugetlb-1g\"][\"minor\"], "
                                   "\"MINOR_HUGETLBFS\" in f)'",
                                   VMM_BIN));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("True True True"), std::string::npos) << r.output;
}

}  // namespace
