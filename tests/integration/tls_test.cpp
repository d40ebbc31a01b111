// Who gets into `vmm receive`: TLS 1.3 with a pre-shared key (--psk-file),
// the bound on guest RAM a source may ask for (--max-mem-size), and a
// destination that keeps listening through connections that fail their
// handshake. A refused source keeps running its guest to VERIFY OK.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "process.h"

namespace {

using test::have_kvm;
using test::run_command;
using test::slurp;

#define NEEDS_KVM() \
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"


std::string dir() { return ::testing::TempDir() + "tls/"; }

std::string make_key(const std::string& name) {
  std::string path = dir() + name;
  run_command(fmt::format("mkdir -p {} && openssl rand -hex 32 >{} && chmod 600 {}", dir(), path, path));
  return path;
}

struct Result {
  int src_rc = -1, dst_rc = -1;
  std::string src, dst;
};

// `vmm receive DST`, waited for by its listening line; then `before` (shell,
// with $PORT); then `vmm run SRC --migrate-to` (none when SRC is "-"). With `dst_stays`, the
// destination is expected to still listen once the source ended: it is
// stopped then, and DST is its exit status (143 for SIGTERM).
Result migrate(const std::string& dst, const std::string& src, const std::string& guest, bool dst_stays = false,
            const std::string& before = "") {
  run_command("mkdir -p " + dir());
  uint16_t port = test::free_port();
  std::string d = dir();
  std::string script = fmt::format(
      "PORT={port}\n"
      "rm -f {d}src.log {d}dst.log\n"
      "{wait_for}"
      "{vmm} receive --listen 127.0.0.1:{port} {dst} {accept} >{d}dst.log 2>&1 & D=$!\n"
      "wait_for {d}dst.log listening || echo 'no listening line from vmm receive'\n"
      "{before}\n"
      "if [ '{src}' != - ]; then\n"
      "  {vmm} run --kernel {elf} --cmdline '{guest}' {src} --migrate-to 127.0.0.1:{port} --migrate-after 0.5 "
      ">{d}src.log 2>&1; SRC=$?; echo SRC=$SRC\n"
      // A source that failed leaves the destination nothing to wait for.
      "  [ $SRC -eq 0 ] || kill $D 2>/dev/null\n"
      "fi\n"
      "if [ {stays} = 1 ]; then sleep 0.5; kill -0 $D && echo STILL_LISTENING; kill $D; fi\n"
      "wait $D; echo DST=$?\n",
      fmt::arg("port", port), fmt::arg("vmm", VMM_BIN), fmt::arg("wait_for", test::kShellWaitFor), fmt::arg("elf", GUEST_ELF), fmt::arg("d", d),
      fmt::arg("dst", dst), fmt::arg("src", test::on_this_host(src)), fmt::arg("guest", guest), fmt::arg("before", before),
      fmt::arg("accept", test::kAcceptTimeout),
      fmt::arg("stays", dst_stays ? 1 : 0));
  std::ofstream(d + "run.sh") << script;
  auto r = run_command("bash " + d + "run.sh", 120);
  Result m;
  auto grab = [&](const char* key, int& v) {
    auto at = r.output.find(key);
    if (at != std::string::npos) v = std::stoi(r.output.substr(at + std::string(key).size()));
  };
  grab("SRC=", m.src_rc);
  grab("DST=", m.dst_rc);
  m.src = r.output + slurp(d + "src.log");
  m.dst = slurp(d + "dst.log");
  if (dst_stays) {
    EXPECT_NE(r.output.find("STILL_LISTENING"), std::string::npos) << r.output << m.dst;
  }
  return m;
}

const char* kGuest = "workload=touch size=16 seconds=3";

TEST(Tls, MatchingKeysMigrateWithPostcopyAndHybrid) {
  NEEDS_KVM();
  std::string key = make_key("a.key");
  for (const char* mode : {"postcopy", "hybrid"}) {
    SCOPED_TRACE(mode);
    Result r = migrate("--memory shmem --psk-file " + key,
                    fmt::format("--memory gmem --gmem-bind hva --mem-size 128M --mode {} --psk-file {}", mode, key),
                    kGuest);
    EXPECT_EQ(r.src_rc, 0) << r.src << r.dst;
    EXPECT_EQ(r.dst_rc, 0) << r.src << r.dst;
    EXPECT_NE(r.dst.find("VERIFY OK pages=4096"), std::string::npos) << r.dst;
    EXPECT_NE(r.dst.find("TLS 1.3 with the pre-shared key"), std::string::npos) << r.dst;
    // The kernel's TLS offload was probed, and what was found is said.
    EXPECT_NE(r.src.find("TLS offload"), std::string::npos) << r.src;
  }
}

// Another key, no key at the source, no key at the destination: refused on
// both sides with a line that says why; the source's guest verifies there,
// and the destination goes on listening.
TEST(Tls, AnotherKeyOrNoneIsRefusedOnBothSides) {
  NEEDS_KVM();
  std::string a = make_key("a.key"), b = make_key("b.key");
  struct Want {
    std::string dst, src, src_says, dst_says;
  };
  for (const Want& w : {Want{"--psk-file " + a, "--psk-file " + b, "--psk-file differs", "--psk-file differs"},
                        Want{"--psk-file " + a, "", "takes only TLS connections", "plaintext migration frame"},
                        Want{"", "--psk-file " + a, "does it run without --psk-file", "speaks TLS"}}) {
    SCOPED_TRACE(w.dst + " / " + w.src);
    Result r = migrate("--memory shmem " + w.dst, "--memory gmem --mem-size 64M --mode postcopy " + w.src, kGuest, true);
    EXPECT_EQ(r.src_rc, 0) << r.src;
    EXPECT_NE(r.src.find("failed before switchover"), std::string::npos) << r.src;
    EXPECT_NE(r.src.find(w.src_says), std::string::npos) << r.src;
    EXPECT_NE(r.src.find("VERIFY OK pages=4096"), std::string::npos) << r.src;
    EXPECT_NE(r.dst.find(w.dst_says), std::string::npos) << r.dst;
    EXPECT_NE(r.dst.find("still listening"), std::string::npos) << r.dst;
  }
}

// A self-signed certificate and its key, for the impostors below.
std::string make_certificate() {
  std::string d = dir();
  run_command(fmt::format("mkdir -p {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                          "-subj /CN=impostor -days 1 -keyout {d}impostor.key -out {d}impostor.pem 2>&1",
                          fmt::arg("d", d)));
  return d + "impostor";
}

// A stock TLS 1.3 server that holds a certificate and no pre-shared key is
// given as the destination: the source refuses its certificate, says why,
// sends it not one frame byte, and runs its guest on to VERIFY OK.
TEST(Tls, ADestinationWithACertificateAndNoKeyGetsNothing) {
  NEEDS_KVM();
  if (!test::have_program("openssl")) GTEST_SKIP() << "the openssl command is not installed";
  std::string key = make_key("a.key"), cert = make_certificate(), d = dir();
  uint16_t port = test::free_port();
  // s_server ends when its input does: the sleep holds it open for the run.
  std::string script = fmt::format(
      "(sleep 8 | timeout 10 openssl s_server -accept 127.0.0.1:{port} -cert {cert}.pem -key {cert}.key -tls1_3 "
      "-naccept 1 >{d}impostor.out 2>&1) & I=$!\n"
      "for i in $(seq 100); do grep -q ACCEPT {d}impostor.out 2>/dev/null && break; sleep 0.05; done\n"
      "{vmm} run --kernel {elf} --cmdline '{guest}' {src} --mem-size 64M --mode postcopy --migrate-to "
      "127.0.0.1:{port} --migrate-after 0.5 --psk-file {key} >{d}src.log 2>&1; echo SRC=$?\n"
      "kill $I 2>/dev/null; wait $I 2>/dev/null; true\n",
      fmt::arg("port", port), fmt::arg("cert", cert), fmt::arg("d", d), fmt::arg("vmm", VMM_BIN),
      fmt::arg("elf", GUEST_ELF), fmt::arg("guest", kGuest), fmt::arg("src", test::on_this_host("--memory gmem")),
      fmt::arg("key", key));
  std::ofstream(d + "impostor.sh") << script;
  auto r = run_command("bash " + d + "impostor.sh", 60);
  std::string src = slurp(d + "src.log"), impostor = slurp(d + "impostor.out");
  EXPECT_NE(r.output.find("SRC=0"), std::string::npos) << r.output << src;
  EXPECT_NE(src.find("answered with a certificate instead of the pre-shared key"), std::string::npos) << src;
  EXPECT_NE(src.find("the guest keeps running here"), std::string::npos) << src;
  EXPECT_NE(src.find("VERIFY OK pages=4096"), std::string::npos) << src;
  EXPECT_NE(impostor.find("ACCEPT"), std::string::npos) << "the impostor never listened: " << impostor;
  EXPECT_EQ(impostor.find("GPCM"), std::string::npos) << "a frame reached the impostor:\n" << impostor;
  EXPECT_EQ(impostor.find("CIPHER is"), std::string::npos) << "its handshake completed:\n" << impostor;
}

// A stock TLS 1.3 client that holds a certificate and no pre-shared key is
// dropped by the destination with a line saying why; the real source then
// migrates.
TEST(Tls, ASourceWithACertificateAndNoKeyIsRefused) {
  NEEDS_KVM();
  if (!test::have_program("openssl")) GTEST_SKIP() << "the openssl command is not installed";
  std::string key = make_key("a.key"), cert = make_certificate();
  std::string before = fmt::format(
      "printf 'GPCM' | timeout 5 openssl s_client -connect 127.0.0.1:$PORT -tls1_3 -cert {cert}.pem -key {cert}.key "
      ">{d}impostor-client.out 2>&1; echo IMPOSTOR=$?",
      fmt::arg("cert", cert), fmt::arg("d", dir()));
  Result r = migrate("--memory shmem --psk-file " + key, "--memory gmem --mem-size 64M --mode postcopy --psk-file " + key,
                     kGuest, false, before);
  EXPECT_NE(r.src.find("IMPOSTOR=1"), std::string::npos) << r.src << slurp(dir() + "impostor-client.out");
  EXPECT_NE(r.dst.find("TLS handshake with 127.0.0.1:"), std::string::npos) << r.dst;
  EXPECT_NE(r.dst.find("still listening"), std::string::npos) << r.dst;
  EXPECT_EQ(r.src_rc, 0) << r.src << r.dst;
  EXPECT_EQ(r.dst_rc, 0) << r.src << r.dst;
  EXPECT_NE(r.dst.find("VERIFY OK pages=4096"), std::string::npos) << r.dst;
}

TEST(Tls, AKeyFileIsReadWithABound) {
  auto r = run_command(fmt::format("{} receive --listen 127.0.0.1:1 --memory shmem --psk-file /dev/zero 2>&1", VMM_BIN),
                       20);
  EXPECT_EQ(r.exit_code, 125) << r.output;
  EXPECT_NE(r.output.find("/dev/zero: more than 4096 bytes: not a key file"), std::string::npos) << r.output;
}

// `vmm migrate --psk-file` hands its key to the running VMM, which had none.
TEST(Tls, MigrateOnTheApiSocketTakesItsOwnKeyFile) {
  NEEDS_KVM();
  std::string key = make_key("a.key"), sock = dir() + "vm.sock";
  std::string before = fmt::format(
      "{vmm} run --kernel {elf} --cmdline '{guest}' {src} --mem-size 64M --api-socket {sock} "
      ">{d}api-src.log 2>&1 & S=$!\n"
      "wait_for {d}api-src.log 'api: listening' || sleep 1\n"
      "{vmm} migrate --api-socket {sock} --to 127.0.0.1:$PORT --mode postcopy --psk-file {key}; echo MIGRATE=$?\n"
      "wait $S; echo API_SRC=$?\n",
      fmt::arg("vmm", VMM_BIN), fmt::arg("elf", GUEST_ELF), fmt::arg("guest", kGuest), fmt::arg("sock", sock),
      fmt::arg("d", dir()), fmt::arg("key", key), fmt::arg("src", test::on_this_host("--memory gmem")));
  Result r = migrate("--memory shmem --psk-file " + key, "-", kGuest, false, before);
  EXPECT_NE(r.src.find("MIGRATE=0"), std::string::npos) << r.src << r.dst;
  EXPECT_NE(r.src.find("API_SRC=0"), std::string::npos) << r.src << slurp(dir() + "api-src.log");
  EXPECT_NE(r.dst.find("VERIFY OK pages=4096"), std::string::npos) << r.dst;
  EXPECT_NE(slurp(dir() + "api-src.log").find("TLS 1.3 with the pre-shared key"), std::string::npos)
      << slurp(dir() + "api-src.log");
}

// Without a key, listening beyond loopback is said to be open to anyone. (A
// documentation address: the bind fails, nothing is ever sent.)
TEST(Tls, ListeningBeyondLoopbackWithoutAKeyWarns) {
  auto r = run_command(fmt::format("{} receive --listen 192.0.2.1:4444 --memory shmem 2>&1", VMM_BIN));
  EXPECT_NE(r.output.find("anyone who can reach it can start a VM on this host"), std::string::npos) << r.output;
  EXPECT_EQ(r.exit_code, 125) << r.output;
}

TEST(Tls, AKeyFileThatHoldsNoKeyIsAClearError) {
  std::string bad = dir() + "bad.key";
  run_command(fmt::format("mkdir -p {} && echo 'not a key' >{}", dir(), bad));
  auto r = run_command(fmt::format("{} receive --listen 127.0.0.1:1 --psk-file {} 2>&1", VMM_BIN, bad));
  EXPECT_EQ(r.exit_code, 125) << r.output;
  EXPECT_NE(r.output.find("the key must be hex digits"), std::string::npos) << r.output;
}

// A Hello over --max-mem-size is refused before anything is allocated; by
// default the bound is what the backend can host now (MemAvailable here).
TEST(Bounds, AGuestLargerThanTheDestinationTakesIsRefusedInTheHandshake) {
  NEEDS_KVM();
  Result r = migrate("--memory shmem --max-mem-size 64M", "--memory gmem --mem-size 128M --mode postcopy", kGuest, true);
  EXPECT_EQ(r.src_rc, 0) << r.src;
  EXPECT_NE(r.src.find("128 MiB of guest RAM is more than this destination takes (64 MiB of shmem: --max-mem-size"),
            std::string::npos) << r.src;
  EXPECT_NE(r.src.find("VERIFY OK pages=4096"), std::string::npos) << r.src;
  EXPECT_NE(r.dst.find("refused: 128 MiB"), std::string::npos) << r.dst;

  // 1 TiB is more than this host has: the source's RAM is sparse until touched.
  r = migrate("--memory shmem", "--memory shmem --mem-size 1024G --mode postcopy", kGuest, true);
  EXPECT_EQ(r.src_rc, 0) << r.src;
  EXPECT_NE(r.src.find("1024 GiB of guest RAM is more than this destination takes"), std::string::npos) << r.src;
  EXPECT_NE(r.src.find("MemAvailable"), std::string::npos) << r.src;
}

// Strangers hold the door for the whole run: twelve addresses keep three
// silent connections each open, each reopened as soon as it is closed, one
// more trickles a byte every 0.3 s, one sends garbage, one the first byte of a
// frame header and nothing more. Each address holds at
// most two places, the oldest make way for newer ones, the silent and the
// trickling are dropped at the handshake deadline, and the real source gets
// in and migrates.
TEST(Bounds, StrayConnectionsHeldForTheWholeRunDoNotKeepTheSourceOut) {
  NEEDS_KVM();
  std::string strays = dir() + "strays.log";
  std::string before = fmt::format(
      "python3 - $PORT >{log} 2>&1 <<'EOF' &\n"
      "import socket, sys, time\n"
      "port = int(sys.argv[1])\n"
      "def dial(addr):\n"
      "    s = socket.socket(); s.bind((addr, 0)); s.settimeout(1); s.connect(('127.0.0.1', port)); s.setblocking(False)\n"
      "    return s\n"
      "bad = dial('127.0.0.21'); bad.sendall(b'\\x01' * 64)\n"
      "part = dial('127.0.0.22'); part.sendall(b'G')  # a frame header's first byte, then nothing\n"
      "held = [[addr, None, 0] for i in range(2, 14) for addr in ['127.0.0.%d' % i] * 3]\n"
      "slow = dial('127.0.0.20')\n"
      "opened, t0, last_drip, said = 0, time.time(), 0, 0\n"
      "# Bounded: at most 45 s and 3000 connections, and it ends once the destination is gone.\n"
      "while time.time() - t0 < 45 and opened < 3000:\n"
      "    try:\n"
      "        for h in held:\n"
      "            if h[1] is not None:\n"
      "                try:\n"
      "                    if h[1].recv(1, socket.MSG_PEEK) == b'': h[1].close(); h[1] = None; h[2] = time.time()\n"
      "                except BlockingIOError: pass\n"
      "                except OSError: h[1].close(); h[1] = None; h[2] = time.time()\n"
      "            # Renewed 0.2 s after it was closed.\n"
      "            if h[1] is None and time.time() - h[2] > 0.2: h[1] = dial(h[0]); opened += 1\n"
      "        if time.time() - last_drip > 0.3:\n"
      "            last_drip = time.time()\n"
      "            try: slow.send(b'\\x16')\n"
      "            except OSError: pass\n"
      "    except OSError as e:\n"
      "        break\n"
      "    if opened == len(held) and not said: said = print('strays: holding %d connections from 12 addresses' % opened, flush=True) or 1\n"
      "    time.sleep(0.01)\n"
      "print('strays: opened %d connections in %.1f s' % (opened, time.time() - t0), flush=True)\n"
      "EOF\n"
      "sleep 1.5",
      fmt::arg("log", strays));
  Result r = migrate("--memory shmem --handshake-timeout 1", "--memory gmem --mem-size 64M --mode postcopy", kGuest,
                     false, before);
  std::string why = r.src + r.dst + slurp(strays);
  EXPECT_EQ(r.src_rc, 0) << why;
  EXPECT_EQ(r.dst_rc, 0) << why;
  EXPECT_NE(r.dst.find("VERIFY OK pages=4096"), std::string::npos) << why;
  EXPECT_NE(r.dst.find("others from 127.0.0.2 are in their handshake"), std::string::npos) << why;
  EXPECT_NE(r.dst.find("ended for a newer connection: 16 handshakes at once is the bound"), std::string::npos) << why;
  EXPECT_NE(r.dst.find("127.0.0.20:"), std::string::npos) << why;
  EXPECT_NE(r.dst.find("no Hello within the handshake deadline (1 s, --handshake-timeout)"), std::string::npos) << why;
  EXPECT_NE(r.dst.find("bad frame magic"), std::string::npos) << why;
  EXPECT_NE(r.dst.find("127.0.0.22:"), std::string::npos) << "the partial header was never dropped\n" << why;
  EXPECT_NE(slurp(strays).find("strays: holding 36 connections"), std::string::npos) << why;
}

// A source started before its destination listens tries again with backoff
// and migrates once it is there; with nobody there, it gives up at
// --connect-timeout and its guest runs on.
TEST(Bounds, TheSourceRetriesUntilTheDestinationListens) {
  NEEDS_KVM();
  uint16_t port = test::free_port();
  std::string d = dir();
  std::string script = fmt::format(
      "mkdir -p {d}; {wait_for}"
      "{vmm} run --kernel {elf} --cmdline '{guest}' {src} --mode postcopy --migrate-to 127.0.0.1:{port} "
      "--migrate-after 0.5 >{d}early-src.log 2>&1 & S=$!\n"
      "wait_for {d}early-src.log 'attempt 3' || echo 'the source did not retry'\n"
      "{vmm} receive --listen 127.0.0.1:{port} --memory shmem {accept} >{d}late-dst.log 2>&1 & D=$!\n"
      "wait $S; echo SRC=$?; wait $D; echo DST=$?\n"
      "{vmm} run --kernel {elf} --cmdline '{guest}' {src} --mode postcopy --migrate-to 127.0.0.1:{port} "
      "--migrate-after 0.5 --connect-timeout 1 >{d}alone-src.log 2>&1; echo ALONE=$?\n",
      fmt::arg("d", d), fmt::arg("wait_for", test::kShellWaitFor), fmt::arg("vmm", VMM_BIN), fmt::arg("elf", GUEST_ELF),
      fmt::arg("guest", kGuest), fmt::arg("src", test::on_this_host("--memory gmem --mem-size 64M")),
      fmt::arg("port", port), fmt::arg("accept", test::kAcceptTimeout));
  std::ofstream(d + "retry.sh") << script;
  auto r = run_command("bash " + d + "retry.sh", 120);
  std::string src = slurp(d + "early-src.log"), dst = slurp(d + "late-dst.log"), alone = slurp(d + "alone-src.log");
  EXPECT_NE(r.output.find("SRC=0"), std::string::npos) << r.output << src << dst;
  EXPECT_NE(r.output.find("DST=0"), std::string::npos) << r.output << dst;
  EXPECT_NE(src.find("Connection refused; attempt 2 in 100 ms"), std::string::npos) << src;
  EXPECT_NE(src.find("the main connection got through on attempt"), std::string::npos) << src;
  EXPECT_NE(dst.find("VERIFY OK pages="), std::string::npos) << dst;
  EXPECT_NE(r.output.find("ALONE=0"), std::string::npos) << r.output << alone;
  EXPECT_NE(alone.find("gave up 1.0 s after the first, --connect-timeout"), std::string::npos) << alone;
  EXPECT_NE(alone.find("VERIFY OK pages="), std::string::npos) << alone;
}

}  // namespace
