// The lab tools, the guest's view and the two-namespace script, each run
// small: what they print and write must hold together.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "process.h"

namespace {

using test::have_kvm;
using test::run_command;
using test::slurp;

}  // namespace

namespace {

// tools/guest-view.py without a peer: a control and a migration, and our
// faults joined with the guest's own record of its touches.
TEST(GuestView, JoinsOurFaultsWithTheGuestsTouches) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  std::string out = ::testing::TempDir() + "guest-view";
  auto r = run_command(fmt::format("python3 {}/guest-view.py --runs 1 --qemu '' --size 8 --seconds 2 --mem 64 "
                                   "--out {} 2>&1",
                                   TOOLS_DIR, out),
                       120);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ours "), std::string::npos) << r.output;
  // The destination's join, from its report: faults joined in the one round.
  int joined = 0;
  auto at = r.output.find("with the guest's touch of the page (");
  ASSERT_NE(at, std::string::npos) << r.output;
  ASSERT_EQ(sscanf(r.output.c_str() + at, "with the guest's touch of the page (%d faults joined", &joined), 1)
      << r.output;
  EXPECT_GT(joined, 0) << r.output;
  // Judged against floors measured in the same run.
  EXPECT_NE(r.output.find("floors per round: tcp 4 KiB "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("guest-observed fault latency / floor: p50 "), std::string::npos) << r.output;
}

// Two "hosts" in network namespaces joined by veth, with an added round trip
// (netem where the kernel has it, else the delay relay); nothing may be left behind.
TEST(TwoHosts, MigratesBetweenNamespacesAndCleansUp) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for ip netns and tc";
  if (!test::have_program("ip")) GTEST_SKIP() << "iproute2 (ip) is not installed";
  auto r = run_command(fmt::format("{}/two-hosts.sh --size 8 --seconds 3 --mem-size 64M --rtt 2 --rate 2000",
                                   TOOLS_DIR),
                       120);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("VERIFY OK pages=2048"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("added delay: "), std::string::npos) << r.output;
  if (!test::gmem_missing().empty()) {
    EXPECT_NE(r.output.find("two-hosts: the source runs on shmem: " + test::gmem_missing()), std::string::npos)
        << r.output;
  }
  auto ns = run_command("ip netns list");
  EXPECT_EQ(ns.output.find("vmm-"), std::string::npos) << ns.output;
}

}  // namespace

namespace {

// The lab's one command: floors, a migration, the table and the plots.
// tools/lab.py --quick --no-qemu with `args` into `out`: its exit and results.md.
std::pair<test::ProcessResult, std::string> quick_lab(const std::string& args, const std::string& out) {
  auto r = run_command(fmt::format("python3 {}/lab.py --quick --no-qemu {} --out {}", TOOLS_DIR, args, out), 240);
  return {r, slurp(out + "/results.md")};
}

TEST(Lab, QuickRunWritesTableAndPlots) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  if (!test::have_program("gnuplot")) GTEST_SKIP() << "gnuplot is not installed (tools/install-deps.sh installs it)";
  std::string out = ::testing::TempDir() + "lab";
  auto [r, md] = quick_lab("", out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string src = test::source_memory();
  EXPECT_NE(md.find("| " + src + "-to-shmem-postcopy-16M | 4 KiB |"), std::string::npos) << md;
  if (src == "shmem") {
    EXPECT_NE(r.output.find("lab: the source runs on shmem: " + test::gmem_missing()), std::string::npos)
        << r.output;
  }
  EXPECT_NE(md.find("VERIFY OK"), std::string::npos) << md;
  EXPECT_NE(md.find("tcp_rtt_4k p50"), std::string::npos) << md;
  for (const char* png : {"cdf.png", "timeline.png", "histograms.png"})
    EXPECT_FALSE(slurp(out + "/" + png).empty()) << png << " was not drawn";
  // The TLS twin of the 4 KiB case, beside it.
  EXPECT_NE(md.find("| " + src + "-to-shmem-postcopy-16M-tls | 4 KiB |"), std::string::npos) << md;
  EXPECT_NE(md.find("What TLS costs"), std::string::npos) << md;
}

// tools/size-curve.py at two small sizes: a row per size, each VERIFY OK, and
// the targets judged against the smaller one.
TEST(Lab, SizeCurveComparesGuestSizesInOneRun) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  std::string out = ::testing::TempDir() + "size-curve";
  auto r = run_command(fmt::format("python3 {}/size-curve.py --runs 1 --sizes 512M,1G --dsts shmem --modes postcopy "
                                   "--working-set 32 --out {} 2>&1",
                                   TOOLS_DIR, out),
                       280);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| 512 MiB | shmem | postcopy |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| 1 GiB | shmem | postcopy |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| 1/1 |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("- shmem postcopy: downtime "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("VMM memory beyond guest RAM at 1 GiB"), std::string::npos) << r.output;
}

TEST(Lab, ShapedLinkMeasuresFloorsAcrossTheSameLink) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for ip netns and tc";
  if (!test::have_program("ip")) GTEST_SKIP() << "iproute2 (ip) is not installed";
  if (!test::have_program("gnuplot")) GTEST_SKIP() << "gnuplot is not installed (tools/install-deps.sh installs it)";
  auto [r, md] = quick_lab("--links veth:rate=2000:rtt=2", ::testing::TempDir() + "lab-veth");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(md.find("| " + test::source_memory() + "-to-shmem-postcopy-16M-veth-rate2000-rtt2 | 4 KiB |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("VERIFY OK"), std::string::npos) << md;
  // The floors crossed the link: a 4 KiB round trip cannot beat its 2 ms RTT.
  auto at = md.find("veth:rate=2000:rtt=2: tcp_rtt_4k p50 ");
  ASSERT_NE(at, std::string::npos) << md;
  double rtt_us = std::stod(md.substr(at + std::string("veth:rate=2000:rtt=2: tcp_rtt_4k p50 ").size()));
  EXPECT_GE(rtt_us, 1900) << md;
  auto ns = run_command("ip netns list");
  EXPECT_EQ(ns.output.find("vmmlab-"), std::string::npos) << ns.output;
}

}  // namespace

// One vCPU against two (disjoint, shared) beside QEMU -smp on the same guest:
// every row, both VMMs, each migration verified.
TEST(Lab, SmpComparesOneAndTwoVcpusBesideQemu) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  bool qemu = test::have_program("qemu-system-x86_64");
  if (!qemu) std::printf("[   NOTE   ] qemu-system-x86_64 is not installed: Lab.SmpComparesOneAndTwoVcpusBesideQemu has our rows only\n");
  std::string out = ::testing::TempDir() + "smp";
  auto r = run_command(fmt::format("python3 {}/smp.py --runs 1 --qemu '{}' --size 16 --seconds 2 --mem 256 --out {} 2>&1",
                                   TOOLS_DIR, qemu ? "7.2" : "", out),
                       400);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* row : {"| ours | 1 disjoint |", "| ours | 2 disjoint |", "| ours | 2 shared |"})
    EXPECT_NE(r.output.find(row), std::string::npos) << row << "\n" << r.output;
  if (qemu) {
    EXPECT_NE(r.output.find("| qemu7.2 | 2 shared |"), std::string::npos) << r.output;
  }
  EXPECT_EQ(r.output.find("migrations verified"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("%, "), std::string::npos) << "no fault-thread figures\n" << r.output;
}
