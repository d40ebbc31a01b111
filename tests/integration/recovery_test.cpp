// Postcopy across a lost link: tools/fault_proxy sits between source and
// destination and resets or blackholes the link at chosen byte counts of a
// chosen connection (1: the first main connection, 2: its urgent one, 3 and
// 4: the first reconnection's, ...). The guest verifies every page.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "process.h"

namespace {

using test::have_kvm;
using test::run_command;
using test::slurp;


struct Outcome {
  int src_rc = -1, dst_rc = -1;
  double seconds_after_kill = -1;
  std::string src, dst, proxy, dst_serial, src_serial;
  nlohmann::json report;
};

struct Case {
  explicit Case(std::string f) : faults(std::move(f)) {}
  std::string faults;      // fault_proxy --fault arguments
  std::string dst = "--memory shmem";
  std::string src = "--memory gmem --mem-size 512M";
  // --postcopy-push-rate: a cut at 8 MiB of the main connection must fall
  // after the destination's Started, the commit point. Uncapped, a shmem
  // source had sent 8 MiB before Started arrived: the cut came before the
  // commit and the source took its guest back. Capped, 8 MiB take 62 ms.
  double push_rate = 128;
  std::string guest = "workload=touch size=64 seconds=4";
  std::string kill;        // "src" or "dst": kill -9 that side 1 s into postcopy instead
  std::string mode = "postcopy";
  double link_timeout = 1, recovery_timeout = 20;
  std::string both;   // more options for both `vmm run` and `vmm receive` (e.g. --psk-file)
  std::string proxy;  // more fault_proxy options (e.g. --record FILE)
};

// Destination, then the proxy in front of it, each waited for by its
// listening line (a probe connection would count as a migration), then the source.
Outcome run(const Case& s) {
  std::string d = ::testing::TempDir() + "recovery/";
  run_command("rm -rf " + d + " && mkdir -p " + d);
  uint16_t dport = test::free_port(), pport = test::free_port();
  std::string link = fmt::format("--link-timeout {} --recovery-timeout {} {}", s.link_timeout, s.recovery_timeout,
                                 s.both);
  std::string script = fmt::format(
      "{wait_for}"
      "{vmm} receive --listen 127.0.0.1:{dp} {dst} {link} {accept} --report {d}report.json --serial-log {d}dst.serial "
      ">{d}dst.log 2>&1 & D=$!\n"
      "wait_for {d}dst.log listening || echo 'no listening line from vmm receive'\n"
      "{proxy} --listen 127.0.0.1:{pp} --to 127.0.0.1:{dp} {faults} {proxy_args} >{d}proxy.log 2>&1 & P=$!\n"
      "wait_for {d}proxy.log armed || echo 'no line from fault_proxy'\n"
      "{vmm} run --kernel {elf} --cmdline '{guest}' {src} {link} --mode {mode} --migrate-after 0.3 "
      "--migrate-after-line 'touch: filled' --migrate-to 127.0.0.1:{pp} --serial-log {d}src.serial >{d}src.log 2>&1 & S=$!\n"
      "if [ -n '{kill}' ]; then\n"
      "  wait_for {d}dst.log 'guest running here'; sleep 1\n"
      "  T0=$(date +%s%N); if [ '{kill}' = src ]; then kill -9 $S; else kill -9 $D; fi\n"
      "fi\n"
      // A source that failed leaves the destination nothing to wait for,
      // unless the test killed it to see what the destination does then.
      "wait $S; SRC=$?; echo SRC=$SRC; [ $SRC -eq 0 ] || [ '{kill}' = src ] || kill $D 2>/dev/null\n"
      "wait $D; echo DST=$?\n"
      "[ -n '{kill}' ] && echo AFTER_MS=$(( ($(date +%s%N) - T0) / 1000000 ))\n"
      "kill $P 2>/dev/null; wait $P 2>/dev/null; true\n",
      fmt::arg("vmm", VMM_BIN), fmt::arg("wait_for", test::kShellWaitFor), fmt::arg("proxy", FAULT_PROXY), fmt::arg("dp", dport), fmt::arg("pp", pport),
      fmt::arg("dst", s.dst), fmt::arg("src", test::on_this_host(s.src) + fmt::format(" --postcopy-push-rate {}", s.push_rate)), fmt::arg("link", link), fmt::arg("d", d),
      fmt::arg("accept", test::kAcceptTimeout),
      fmt::arg("faults", s.faults), fmt::arg("elf", GUEST_ELF), fmt::arg("guest", s.guest), fmt::arg("kill", s.kill), fmt::arg("mode", s.mode),
      fmt::arg("proxy_args", s.proxy));
  std::ofstream(d + "run.sh") << script;
  auto r = run_command("bash " + d + "run.sh", 240);
  Outcome m;
  auto grab = [&](const char* key, int& v) {
    auto at = r.output.find(key);
    if (at != std::string::npos) v = std::stoi(r.output.substr(at + std::string(key).size()));
  };
  grab("SRC=", m.src_rc);
  grab("DST=", m.dst_rc);
  int after_ms = -1;
  grab("AFTER_MS=", after_ms);
  m.seconds_after_kill = after_ms / 1000.0;
  m.src = r.output + slurp(d + "src.log");
  m.dst = slurp(d + "dst.log");
  m.proxy = slurp(d + "proxy.log");
  m.dst_serial = slurp(d + "dst.serial");
  m.src_serial = slurp(d + "src.serial");
  std::string rep = slurp(d + "report.json");
  if (!rep.empty()) m.report = nlohmann::json::parse(rep, nullptr, false);
  return m;
}

size_t fired(const Outcome& r) {
  size_t n = 0;
  for (size_t at = r.proxy.find(" at "); at != std::string::npos; at = r.proxy.find(" at ", at + 1)) n++;
  return n;
}

std::string all(const Outcome& r) {
  return "--- source:\n" + r.src + "\n--- destination:\n" + r.dst + "\n--- proxy:\n" + r.proxy;
}

// `faults` fired, and the destination paused `pauses` times (a fault during
// a recovery belongs to that pause).
void expect_recovered(const Outcome& r, size_t pauses, size_t faults = 0) {
  EXPECT_EQ(fired(r), faults ? faults : pauses) << all(r);
  EXPECT_EQ(r.src_rc, 0) << all(r);
  EXPECT_EQ(r.dst_rc, 0) << all(r);
  EXPECT_NE(r.dst_serial.find("VERIFY OK pages="), std::string::npos) << r.dst_serial << all(r);
  ASSERT_TRUE(r.report.is_object()) << all(r);
  EXPECT_EQ(r.report["link_pauses"].size(), pauses) << r.report["link_pauses"].dump();
}

#define NEEDS_KVM() \
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"

TEST(LinkRecovery, ResetTwiceDuringFourKibPostcopy) {
  NEEDS_KVM();
  expect_recovered(run(Case("--fault reset@1:8M --fault reset@3:8M")), 2);
}

TEST(LinkRecovery, ResetTwiceInMissingMode) {
  NEEDS_KVM();
  Case s("--fault reset@1:8M --fault reset@3:8M");
  s.dst += " --uffd-mode missing";
  expect_recovered(run(s), 2);
}

TEST(LinkRecovery, ResetDuringHybridsPostcopyPhase) {
  NEEDS_KVM();
  // Connection 2 carries only the Hello and answers to faults: past 5000
  // bytes toward the destination, postcopy has begun. With the push held to
  // 1 MiB/s the few hundred pages left after precopy are not all pushed
  // before the guest faults on some (uncapped, none was requested once).
  Case s("--fault reset@2:5000");
  s.src = "--memory gmem --gmem-bind hva --mem-size 512M";
  s.push_rate = 1;
  s.mode = "hybrid";
  expect_recovered(run(s), 1);
}

TEST(LinkRecovery, SilentLinkOnceIsNoticedAndRecovered) {
  NEEDS_KVM();
  Outcome r = run(Case("--fault blackhole@1:8M"));
  expect_recovered(r, 1);
  // Neither side saw a close: each noticed the silence itself.
  EXPECT_NE(r.dst.find("within 1000 ms"), std::string::npos) << r.dst;
  EXPECT_NE(r.src.find("within the receive timeout (1000 ms)"), std::string::npos) << r.src;
}

TEST(LinkRecovery, ResetDuringTheRecoveryItself) {
  NEEDS_KVM();
  // Connection 3 is the first reconnection's main one: cut inside its Hello.
  // The source dials again, within the same pause.
  Outcome r = run(Case("--fault reset@1:8M --fault reset@3:20"));
  expect_recovered(r, 1, 2);
  EXPECT_NE(r.src.find("(attempt 2,"), std::string::npos) << r.src;
}

TEST(LinkRecovery, ResetTwiceInTheMiddleOfAOneGibPage) {
  NEEDS_KVM();
  auto res = run_command(fmt::format("{} reserve 1g 1", HUGEPAGES_SH));
  if (res.exit_code != 0) GTEST_SKIP() << "cannot reserve a 1 GiB page: " << res.output;
  // The page goes on the main connection when the push claims it first, on
  // the urgent one when the fault's request does: each cut is on whichever
  // of the two carries it.
  Case s("--fault reset@1+2:30M --fault reset@3+4:20M");
  s.dst = "--memory hugetlb-1g";
  s.src = "--memory gmem --mem-size 1G";
  s.push_rate = 0;
  s.guest = "workload=touch size=64 seconds=14";  // 64 MiB of data in the page: both cuts fall inside it
  Outcome r = run(s);
  run_command(fmt::format("{} release 1g 1", HUGEPAGES_SH));
  expect_recovered(r, 2);
}

// With a key, every reconnection runs its own TLS handshake.
TEST(LinkRecovery, ResetTwiceOverTls) {
  NEEDS_KVM();
  std::string key = ::testing::TempDir() + "recovery.key";
  run_command("openssl rand -hex 32 >" + key);
  Case s("--fault reset@1:8M --fault reset@3:8M");
  s.both = "--psk-file " + key;
  Outcome r = run(s);
  expect_recovered(r, 2);
  EXPECT_NE(r.src.find("TLS 1.3 with the pre-shared key"), std::string::npos) << r.src;
}

// What crosses the wire toward the destination: with TLS, not one frame
// header (magic and version) in the clear; without, one per frame.
TEST(LinkRecovery, TlsLeavesNoFrameHeaderOnTheWire) {
  NEEDS_KVM();
  std::string key = ::testing::TempDir() + "wire.key", wire = ::testing::TempDir() + "wire.bin";
  run_command("openssl rand -hex 32 >" + key);
  auto headers = [&] {
    std::string bytes = slurp(wire);
    const std::string header("GPCM\x04\x00", 6);  // kMagic, then kVersion (4), little-endian
    size_t n = 0;
    for (size_t at = bytes.find(header); at != std::string::npos; at = bytes.find(header, at + 1)) n++;
    return std::make_pair(n, bytes.size());
  };
  for (bool tls : {false, true}) {
    SCOPED_TRACE(tls ? "TLS" : "plaintext");
    Case s("");
    s.guest = "workload=touch size=16 seconds=2";
    s.src = "--memory gmem --mem-size 64M";
    s.push_rate = 0;
    s.proxy = "--record " + wire;
    if (tls) s.both = "--psk-file " + key;
    Outcome r = run(s);
    expect_recovered(r, 0);
    auto [n, size] = headers();
    EXPECT_GT(size, 16u << 20) << "the recording missed the migration";
    if (tls) EXPECT_EQ(n, 0u) << size << " bytes recorded";
    else EXPECT_GT(n, 20u) << size << " bytes recorded";
  }
}

// Every page is in, and the link goes just before the destination's Complete
// would reach the source: the source redials, the destination answers with a
// full Received bitmap, and both end well with the guest running on there.
TEST(LinkRecovery, CompleteLostWithTheLinkEndsWellOnBothSides) {
  NEEDS_KVM();
  Case s("--fault reset@1:back:Complete");
  s.guest = "workload=touch size=16 seconds=4";  // all pages in long before the guest ends
  Outcome r = run(s);
  expect_recovered(r, 0, 1);
  EXPECT_NE(r.proxy.find("before a Complete frame toward the source"), std::string::npos) << r.proxy;
  EXPECT_NE(r.dst.find("took the full Received bitmap for completion"), std::string::npos) << all(r);
  EXPECT_NE(r.src.find("the destination holds every page: complete"), std::string::npos) << all(r);
  EXPECT_EQ(r.src_serial.find("VERIFY"), std::string::npos) << "the guest ran on the source too:\n" << r.src_serial;
}

// The link goes at the frame boundary before Started reaches the source: the
// source never commits and resumes its guest; the destination, which holds
// its restored vCPUs until the source lets go, never runs it. One copy ran.
TEST(LinkRecovery, StartedLostLeavesTheGuestOnTheSourceAlone) {
  NEEDS_KVM();
  Case s("--fault reset@1:back:Started");
  s.recovery_timeout = 3;
  Outcome r = run(s);
  EXPECT_EQ(fired(r), 1u) << all(r);
  EXPECT_EQ(r.src_rc, 0) << all(r);
  EXPECT_NE(r.src.find("the guest runs here again"), std::string::npos) << all(r);
  EXPECT_NE(r.src_serial.find("VERIFY OK pages="), std::string::npos) << r.src_serial;
  EXPECT_EQ(r.dst_rc, 125) << all(r);
  EXPECT_NE(r.dst.find("never said it let go of the guest: it runs there, and never ran here"), std::string::npos)
      << all(r);
  EXPECT_EQ(r.dst.find("guest running here"), std::string::npos) << all(r);
  EXPECT_TRUE(r.dst_serial.empty()) << "the guest printed on the destination too:\n" << r.dst_serial;
}

// The source committed and said StartedAck, and the link goes just before it
// reaches the destination (the urgent connection, toward it): the
// destination, still holding its vCPUs, waits; the committed source redials,
// and its reconnection is the verdict. One copy runs, at the destination.
TEST(LinkRecovery, StartedAckLostWithTheLinkCommitsOnTheReconnection) {
  NEEDS_KVM();
  Outcome r = run(Case("--fault reset@2:fwd:StartedAck"));
  expect_recovered(r, 1);
  EXPECT_NE(r.proxy.find("before a StartedAck frame toward the destination"), std::string::npos) << r.proxy;
  EXPECT_NE(r.dst.find("the guest has not run here and waits until the source confirms it let go"), std::string::npos)
      << all(r);
  EXPECT_EQ(r.src_serial.find("VERIFY"), std::string::npos) << "the guest ran on the source too:\n" << r.src_serial;
  ASSERT_TRUE(r.report.is_object()) << all(r);
  std::string phases;
  for (const auto& p : r.report["phases"]) phases += p["phase"].get<std::string>() + " ";
  EXPECT_EQ(phases, "listening handshake precopy restoring held paused postcopy completed ") << r.report["phases"].dump();
}

// Every page is in, the source heard Complete and answers CompleteAck, and the
// link goes just before that reaches the destination: the source is done and
// gone; the destination, which cannot know the source heard, waits for a
// reconnection that does not come, then runs on with every page.
TEST(LinkRecovery, CompleteAckLostLeavesTheGuestRunningAtTheDestination) {
  NEEDS_KVM();
  Case s("--fault reset@1:fwd:CompleteAck");
  s.guest = "workload=touch size=16 seconds=6";  // all pages in, and the wait over, long before the guest ends
  s.recovery_timeout = 2;
  Outcome r = run(s);
  expect_recovered(r, 0, 1);
  EXPECT_NE(r.proxy.find("before a CompleteAck frame toward the destination"), std::string::npos) << r.proxy;
  EXPECT_NE(r.dst.find("no CompleteAck from the source"), std::string::npos) << all(r);
  EXPECT_NE(r.dst.find("the source did not reconnect; the guest holds every page and runs on here"), std::string::npos)
      << all(r);
  EXPECT_EQ(r.src_serial.find("VERIFY"), std::string::npos) << "the guest ran on the source too:\n" << r.src_serial;
}

TEST(LinkRecovery, ResetDuringTheVmStateResumesTheGuestOnTheSource) {
  NEEDS_KVM();
  // The first bytes after the Hello are the VM state: before the commit point.
  Outcome r = run(Case("--fault reset@1:2000"));
  EXPECT_EQ(fired(r), 1u) << all(r);
  EXPECT_EQ(r.src_rc, 0) << all(r);  // the guest finished on the source
  EXPECT_NE(r.src_serial.find("VERIFY OK pages="), std::string::npos) << r.src_serial;
  EXPECT_NE(r.src.find("the guest runs here again"), std::string::npos) << r.src;
  EXPECT_NE(r.dst_rc, 0) << all(r);
}

TEST(LinkRecovery, KilledSourceGivesTheDestinationAClearErrorWithinTheRecoveryTimeout) {
  NEEDS_KVM();
  Case s("");
  s.kill = "src";
  s.recovery_timeout = 3;
  s.push_rate = 16;  // still in postcopy 1 s in
  s.guest = "workload=touch size=64 seconds=8";
  Outcome r = run(s);
  EXPECT_EQ(r.dst_rc, 125) << all(r);
  EXPECT_NE(r.dst.find("did not reconnect within 3 s"), std::string::npos) << r.dst;
  EXPECT_NE(r.dst.find("pages never came"), std::string::npos) << r.dst;
  EXPECT_GT(r.seconds_after_kill, 0);
  EXPECT_LT(r.seconds_after_kill, 3 + 1 + 5) << "link timeout 1 s, recovery 3 s, and a margin";
}

TEST(LinkRecovery, KilledDestinationGivesTheSourceAClearErrorWithinTheRecoveryTimeout) {
  NEEDS_KVM();
  Case s("");
  s.kill = "dst";
  s.recovery_timeout = 3;
  s.push_rate = 16;
  s.guest = "workload=touch size=64 seconds=8";
  Outcome r = run(s);
  EXPECT_EQ(r.src_rc, 125) << all(r);
  EXPECT_NE(r.src.find("stayed lost for 3 s"), std::string::npos) << r.src;
  EXPECT_GT(r.seconds_after_kill, 0);
  EXPECT_LT(r.seconds_after_kill, 3 + 1 + 5);
}

// A cut at each frame boundary of the commit and the end, on either
// connection and in either direction: every one ends with exactly one guest
// that verifies every page, at the destination (and both sides exit 0) or
// still at the source (and the destination never ran it). Never both, never
// neither.
struct Boundary {
  const char* name;
  const char* fault;
  const char* mode;
};

class EveryBoundary : public ::testing::TestWithParam<Boundary> {};

TEST_P(EveryBoundary, EndsWithOneGuestThatVerifies) {
  NEEDS_KVM();
  Case s(std::string("--fault ") + GetParam().fault);
  s.mode = GetParam().mode;
  if (s.mode != "postcopy") s.src = "--memory gmem --gmem-bind hva --mem-size 512M";  // dirty logging needs the hva
  s.guest = "workload=touch size=16 seconds=4";
  s.recovery_timeout = 3;
  Outcome r = run(s);
  EXPECT_EQ(fired(r), 1u) << all(r);
  bool there = r.dst_serial.find("VERIFY OK pages=") != std::string::npos;
  bool here = r.src_serial.find("VERIFY OK pages=") != std::string::npos;
  EXPECT_NE(there, here) << (there ? "the guest ran on both hosts" : "no guest verified: one was lost") << all(r);
  EXPECT_EQ((r.dst_serial + r.src_serial).find("VERIFY FAIL"), std::string::npos) << r.dst_serial << r.src_serial;
  EXPECT_EQ(r.src_rc, 0) << all(r);
  if (there) {
    EXPECT_EQ(r.dst_rc, 0) << all(r);
  } else {
    EXPECT_EQ(r.dst.find("guest running here"), std::string::npos) << all(r);
    EXPECT_TRUE(r.dst_serial.empty()) << "the guest printed on the destination too:\n" << r.dst_serial;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cuts, EveryBoundary,
    ::testing::Values(Boundary{"HelloReplyBack", "reset@1:back:HelloReply", "postcopy"},
                      Boundary{"VmStateFwd", "reset@1:fwd:VmState", "postcopy"},
                      Boundary{"StaleChunksFwd", "reset@1:fwd:StaleChunks", "hybrid"},
                      Boundary{"PostcopyBeginFwd", "reset@1:fwd:PostcopyBegin", "postcopy"},
                      Boundary{"FirstPushFwd", "reset@1:fwd:Pages", "postcopy"},
                      Boundary{"StartedBack", "reset@1:back:Started", "postcopy"},
                      Boundary{"StartedAckFwd", "reset@2:fwd:StartedAck", "hybrid"},
                      // Every page came in precopy: Complete must wait for the commit.
                      Boundary{"StartedAckFwdEveryPageHere", "reset@2:fwd:StartedAck", "precopy"},
                      Boundary{"FirstRequestBack", "reset@2:back:PageRequest", "postcopy"},
                      Boundary{"FirstAnswerFwd", "reset@2:fwd:Pages", "postcopy"},
                      Boundary{"CompleteBack", "reset@1:back:Complete", "hybrid"},
                      Boundary{"CompleteAckFwd", "reset@1:fwd:CompleteAck", "postcopy"}),
    [](const ::testing::TestParamInfo<Boundary>& p) { return std::string(p.param.name); });

// `vmm status` answers while a migration runs, and shows the pause.
TEST(LinkRecovery, StatusOnTheApiSocketShowsThePauseWhileItLasts) {
  NEEDS_KVM();
  std::string d = ::testing::TempDir() + "recovery-api/";
  run_command("rm -rf " + d + " && mkdir -p " + d);
  uint16_t dport = test::free_port(), pport = test::free_port();
  std::string script = fmt::format(
      "{wait_for}"
      "{vmm} receive --listen 127.0.0.1:{dp} --memory shmem --link-timeout 3 {accept} --serial-log {d}dst.serial "
      ">{d}dst.log 2>&1 & D=$!\n"
      "wait_for {d}dst.log listening\n"
      "{proxy} --listen 127.0.0.1:{pp} --to 127.0.0.1:{dp} --fault blackhole@1:8M:4 >{d}proxy.log 2>&1 & P=$!\n"
      "wait_for {d}proxy.log armed\n"
      "{vmm} run --kernel {elf} --cmdline 'workload=touch size=64 seconds=8' {src} --mem-size 512M "
      "--api-socket {d}vm.sock >{d}src.log 2>&1 & S=$!\n"
      "wait_for {d}src.log 'api: listening'\n"
      "{vmm} status --api-socket {d}vm.sock; echo BEFORE_DONE\n"
      "{vmm} migrate --api-socket {d}vm.sock --to 127.0.0.1:{pp} --mode postcopy --link-timeout 3 --postcopy-push-rate 128 >{d}migrate.out 2>&1 & M=$!\n"
      "for i in $(seq 100); do {vmm} status --api-socket {d}vm.sock | tr -d ' \\n'; echo; sleep 0.1; done > {d}status.log\n"
      "wait $M; echo MIGRATE=$?\n{reap}"
      "kill $P 2>/dev/null; true\n",
      fmt::arg("vmm", VMM_BIN), fmt::arg("wait_for", test::kShellWaitFor), fmt::arg("proxy", FAULT_PROXY), fmt::arg("dp", dport), fmt::arg("pp", pport),
      fmt::arg("d", d), fmt::arg("elf", GUEST_ELF), fmt::arg("src", test::on_this_host("--memory gmem")),
      fmt::arg("accept", test::kAcceptTimeout), fmt::arg("reap", test::kShellReap));
  std::ofstream(d + "run.sh") << script;
  auto r = run_command("bash " + d + "run.sh", 240);
  std::string status = slurp(d + "status.log"), dst = slurp(d + "dst.serial");
  EXPECT_NE(r.output.find("\"phase\": \"idle\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("MIGRATE=0"), std::string::npos) << r.output << slurp(d + "migrate.out");
  EXPECT_NE(r.output.find("DST=0"), std::string::npos) << r.output << slurp(d + "dst.log");
  EXPECT_NE(dst.find("VERIFY OK pages="), std::string::npos) << dst;
  // The 3 s of silence before the source gives the link up, then the pause
  // (the partition holds its first redial silent: 4 s in all), seen from
  // outside while they happened; then the result counts the one pause. (The
  // resumed postcopy ends, and `vmm run` with it, within a few status polls.)
  EXPECT_NE(status.find("\"phase\":\"postcopy\""), std::string::npos) << status;
  EXPECT_NE(status.find("\"link_pauses\":1,\"link_resumes\":0,\"ok\":true,\"paused_ms\":"), std::string::npos)
      << status;
  std::string out = slurp(d + "migrate.out");
  auto result = nlohmann::json::parse(out.substr(std::min(out.find('{'), out.size())), nullptr, false);
  ASSERT_TRUE(result.is_object()) << out;
  EXPECT_EQ(result["result"], "completed") << out;
  EXPECT_EQ(result["link_pauses_ms"].size(), 1u) << out;
  EXPECT_GT(result["link_pauses_ms"][0].get<double>(), 3000) << "the partition held the first redial" << out;
}

}  // namespace
