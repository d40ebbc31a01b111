// `vmm conformance` on this host, and tools/kernel-lab inside lab kernels
// (each kernel named by VMM_KERNEL_LAB_KERNEL or found in the lab's cache).
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "process.h"

namespace {

namespace fs = std::filesystem;
using test::have_kvm;
using test::run_command;
using test::slurp;

nlohmann::json parse_json_output(const std::string& out) {
  auto begin = out.find('{');
  if (begin == std::string::npos) return {};
  return nlohmann::json::parse(out.substr(begin), nullptr, false);
}

TEST(Conformance, ShmemControlPassesEveryCheckWithARealVcpu) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  auto r = run_command(fmt::format("{} conformance --memory shmem --json 2>&1", VMM_BIN), 60);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = parse_json_output(r.output);
  ASSERT_TRUE(j.is_object()) << r.output;
  ASSERT_EQ(j["checks"].size(), 5u) << r.output;
  for (const auto& c : j["checks"]) EXPECT_EQ(c["result"], "ok") << c.dump();
}

TEST(Conformance, AgreesWithCapsAboutGuestMemfd) {
  if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
  auto caps = parse_json_output(run_command(fmt::format("{} caps --json 2>/dev/null", VMM_BIN), 60).output);
  ASSERT_TRUE(caps.is_object());
  if (!caps["guest_memfd"]["usable"].get<bool>()) GTEST_SKIP() << caps["guest_memfd"]["missing"].get<std::string>();
  bool minor = caps["minor_registration"]["gmem"]["minor"].get<bool>();
  auto r = run_command(fmt::format("{} conformance --json 2>&1", VMM_BIN), 120);
  auto j = parse_json_output(r.output);
  ASSERT_TRUE(j.is_object()) << r.output;
  const auto& reg = j["checks"][0];
  EXPECT_EQ(reg["name"], "register_guest_memfd");
  if (!minor) {
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(reg["result"], "unsupported") << r.output;
    EXPECT_NE(reg["detail"].get<std::string>().find("MINOR: EINVAL"), std::string::npos) << r.output;
    for (const auto& c : j["checks"]) EXPECT_EQ(c["result"], "unsupported") << c.dump();
  } else {
    EXPECT_EQ(reg["result"], "ok") << r.output;
    for (const auto& c : j["checks"]) EXPECT_NE(c["result"], "error") << c.dump();
  }
}

TEST(KernelLab, RejectsImpossibleArgumentsBeforeBooting) {
  auto r = run_command(fmt::format("{}/kernel-lab --cpus 1 2>&1", TOOLS_DIR), 30);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--cpus must be at least 2"), std::string::npos) << r.output;
  r = run_command(fmt::format("{}/kernel-lab --kernel /nonexistent/bzImage 2>&1", TOOLS_DIR), 30);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("not found"), std::string::npos) << r.output;
}

TEST(KernelLab, SaysTheLabDidNotBootWhenQemuCannotStartTheKernel) {
  if (!test::have_program("qemu-system-x86_64")) GTEST_SKIP() << "qemu-system-x86 is not installed";
  // A file that is not a bzImage: QEMU refuses it before the lab's init runs.
  std::string bogus = ::testing::TempDir() + "not-a-kernel.bzImage";
  std::ofstream(bogus) << "this is not a kernel\n";
  std::string out = ::testing::TempDir() + "kernel-lab-bogus";
  auto r = run_command(fmt::format("{}/kernel-lab --kernel {} --out {} --timeout 60 2>&1", TOOLS_DIR, bogus, out),
                       90);
  EXPECT_EQ(r.exit_code, 5) << r.output;
  EXPECT_NE(r.output.find("no step ran"), std::string::npos) << r.output;
  EXPECT_NE(slurp(out + "/summary.txt").find("exit: 5"), std::string::npos) << r.output;
}

// Every *.bzImage in dir, sorted.
std::vector<std::string> bzimages_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".bzImage") out.push_back(fs::canonical(e.path(), ec).string());
  std::sort(out.begin(), out.end());
  return out;
}

// The lab kernels to run: $VMM_KERNEL_LAB_KERNEL, the shared lab kernels
// beside the project (../shared/lab-kernels, as CI has them), and up to two
// from the lab's cache; each once.
std::vector<std::string> lab_kernels() {
  std::vector<std::string> out;
  auto add = [&out](const std::string& k) {
    std::error_code ec;
    std::string c = fs::canonical(k, ec).string();
    if (ec) c = k;  // the lab itself says a missing kernel is not found
    if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
  };
  if (const char* k = std::getenv("VMM_KERNEL_LAB_KERNEL"); k && *k) add(k);
  for (const auto& k : bzimages_in(SHARED_LAB_KERNELS)) add(k);
  std::string cache;
  if (const char* c = std::getenv("VMM_KERNEL_LAB_CACHE"); c && *c) cache = c;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) cache = std::string(x) + "/vmm-kernel-lab";
  else if (const char* h = std::getenv("HOME")) cache = std::string(h) + "/.cache/vmm-kernel-lab";
  auto cached = bzimages_in(cache + "/kernels");
  if (cached.size() > 2) cached.resize(2);
  for (const auto& k : cached) add(k);
  return out;
}

// step -> {result, detail} from the lab's steps.tsv
std::map<std::string, std::pair<std::string, std::string>> read_steps(const std::string& path) {
  std::map<std::string, std::pair<std::string, std::string>> steps;
  std::istringstream in(slurp(path));
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::istringstream ls(line);
    for (std::string x; std::getline(ls, x, '\t');) f.push_back(x);
    if (f.size() >= 4) steps[f[0]] = {f[1], f[3]};
  }
  return steps;
}

TEST(KernelLab, PostcopyOnGuestMemfdInsideALabKernel) {
  auto kernels = lab_kernels();
  if (kernels.empty())
    GTEST_SKIP() << "no lab kernel: none in " << SHARED_LAB_KERNELS
                 << "; set VMM_KERNEL_LAB_KERNEL to a bzImage, or build one with "
                    "tools/kernel-lab --kernel-tree DIR --build-only";
  if (!test::have_program("qemu-system-x86_64")) GTEST_SKIP() << "qemu-system-x86 is not installed";
  for (const std::string& kernel : kernels) {
    SCOPED_TRACE(kernel);
    // Under the build tree, so that tools/test.sh can print each lab's summary.
    std::string out = std::string(KERNEL_LAB_RUNS) + "/" + fs::path(kernel).stem().string();
    auto r = run_command(fmt::format("{}/kernel-lab --kernel {} --out {} --guest-mib 4 --guest-seconds 4 "
                                     "--timeout 120 2>&1",
                                     TOOLS_DIR, kernel, out),
                         140);
    auto steps = read_steps(out + "/share/steps.tsv");
    for (const char* s : {"caps", "conformance", "minor", "missing", "shmem"})
      ASSERT_TRUE(steps.count(s)) << "step " << s << " did not run\n" << r.output;
    auto conf = nlohmann::json::parse(slurp(out + "/share/conformance.json"), nullptr, false);
    ASSERT_TRUE(conf.is_object()) << r.output;
    // The control works on any kernel with KVM and userfaultfd.
    EXPECT_EQ(steps["shmem"].first, "ok") << steps["shmem"].second;
    if (conf["checks"][0]["result"] == "unsupported") {
      // A kernel without userfaultfd on guest_memfd: refused, named, its own exit status.
      EXPECT_EQ(r.exit_code, 4) << r.output;
      for (const char* s : {"minor", "missing"}) {
        EXPECT_EQ(steps[s].first, "FAIL");
        EXPECT_NE(steps[s].second.find("refused"), std::string::npos) << steps[s].second;
        EXPECT_NE(steps[s].second.find("EINVAL"), std::string::npos) << steps[s].second;
      }
      continue;
    }
    for (const char* s : {"minor", "missing"}) {
      EXPECT_EQ(steps[s].first, "ok") << steps[s].second << "\n" << r.output;
      auto report = nlohmann::json::parse(slurp(out + "/share/" + s + ".json"), nullptr, false);
      ASSERT_TRUE(report.is_object()) << s;
      EXPECT_EQ(report["dst_backend"], "gmem");
      EXPECT_EQ(report["uffd_mode"], s);
      EXPECT_EQ(report["by_vcpu"].size(), 1u);
      EXPECT_GT(report["faults"].get<int>(), 0);
      EXPECT_NE(slurp(out + "/share/" + s + "-guest.log").find("VERIFY OK"), std::string::npos);
    }
    bool all_ok = true;
    for (const auto& c : conf["checks"]) {
      EXPECT_NE(c["result"], "error") << c.dump();
      all_ok = all_ok && c["result"] == "ok";
    }
    // Postcopy worked in both modes: 0, or 3 when a conformance check found the kernel wrong.
    EXPECT_EQ(r.exit_code, all_ok ? 0 : 3) << r.output;
    EXPECT_NE(r.output.find(all_ok ? "all conformance checks ok" : "conformance found the kernel wrong"),
              std::string::npos)
        << r.output;
  }
}

}  // namespace
