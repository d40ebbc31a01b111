#include "conformance.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "conformance_rig.h"
#include "error.h"
#include "gmem_support.h"
#include "kvm_uapi.h"

namespace vmm {

namespace {

using json = nlohmann::ordered_json;
using namespace conformance;

json check(const char* name, const char* expect) {
  json j;
  j["name"] = name;
  j["expect"] = expect;
  j["result"] = "error";
  j["detail"] = "";
  return j;
}

void verdict(json& j, const char* result, std::string detail) {
  j["result"] = result;
  j["detail"] = std::move(detail);
}

std::string hex(uint32_t v) { return fmt::format("{:#010x}", v); }

uint32_t read_alias(const Rig& rig, uint64_t page) {
  uint32_t v;
  std::memcpy(&v, rig.alias(page), sizeof v);
  return v;
}

std::string describe(const uffd_msg& m, const Rig& rig, uint64_t page) {
  bool minor = m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR;
  std::string at = m.arg.pagefault.address / kPage * kPage == rig.primary(page)
                       ? "on the page"
                       : fmt::format("at {:#x}, not on the page", m.arg.pagefault.address);
  return fmt::format("{} fault {}", minor ? "MINOR" : "MISSING", at);
}

bool is_event(const uffd_msg& m, const Rig& rig, uint64_t page, bool minor) {
  return (m.arg.pagefault.address / kPage * kPage == rig.primary(page)) &&
         (((m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) != 0) == minor);
}

int uffd_continue(const Rig& rig, uint64_t page) {
  uffdio_continue c{};
  c.range = {rig.primary(page), kPage};
  return ::ioctl(rig.uffd(), UFFDIO_CONTINUE, &c) < 0 ? -errno : 0;
}

// After the fault was resolved: the vCPU must finish, report `want_read`, and
// its write must be visible through the alias. Empty string: all held.
std::string finish(Rig& rig, uint64_t page, uint32_t want_read, const ConformanceOptions& o) {
  if (!rig.wait_vcpu(o.step_timeout)) return fmt::format("the vCPU did not finish within {} ms", o.step_timeout.count());
  if (!rig.vcpu_error().empty()) return "vCPU: " + rig.vcpu_error();
  if (!rig.reported()) return "the vCPU halted without reporting its read";
  if (rig.read_value() != want_read)
    return fmt::format("the vCPU read {}, expected {}", hex(rig.read_value()), hex(want_read));
  uint32_t seen = read_alias(rig, page);
  if (seen != kMarker)
    return fmt::format("the vCPU's write of {} is lost: the alias mapping reads {} afterwards", hex(kMarker), hex(seen));
  return {};
}

// Registers the rig's range; on failure the check is "unsupported", named by errno.
bool register_or_unsupported(json& j, Rig& rig, uint64_t mode, uint64_t* ioctls = nullptr) {
  int rc = rig.register_uffd(mode, ioctls);
  if (rc == 0) return true;
  std::string modes = (mode & UFFDIO_REGISTER_MODE_MISSING) ? "MODE_MISSING" : "";
  if (mode & UFFDIO_REGISTER_MODE_MINOR) modes += modes.empty() ? "MODE_MINOR" : "|MODE_MINOR";
  verdict(j, "unsupported", fmt::format("UFFDIO_REGISTER({}) on a guest_memfd mapping: {}", modes, errno_name(-rc)));
  return false;
}

// Waits for a MINOR (or MISSING) fault on `page`; anything else makes the check "wrong".
bool expect_event(json& j, Rig& rig, uint64_t page, bool minor, const ConformanceOptions& o) {
  auto ev = rig.wait_event(o.step_timeout);
  const char* kind = minor ? "MINOR" : "MISSING";
  if (!ev) {
    verdict(j, "wrong", rig.halted() ? fmt::format("no {} event: the vCPU accessed the page without one", kind)
                                     : fmt::format("no event and no vCPU progress within {} ms", o.step_timeout.count()));
    return false;
  }
  if (!is_event(*ev, rig, page, minor)) {
    verdict(j, "wrong", fmt::format("expected a {} fault on the page, got a {}", kind, describe(*ev, rig, page)));
    return false;
  }
  return true;
}

// The fault is resolved: the vCPU must finish as finish() expects.
void conclude(json& j, Rig& rig, uint64_t page, uint32_t want_read, const ConformanceOptions& o, const char* ok,
              const char* if_lost = "") {
  std::string bad = finish(rig, page, want_read, o);
  if (bad.find("is lost") != std::string::npos) bad += if_lost;
  verdict(j, bad.empty() ? "ok" : "wrong", bad.empty() ? std::string(ok) : bad);
}

bool continue_or_wrong(json& j, const Rig& rig, uint64_t page) {
  int rc = uffd_continue(rig, page);
  if (rc < 0) verdict(j, "wrong", fmt::format("UFFDIO_CONTINUE failed: {}", errno_name(-rc)));
  return rc == 0;
}

json check_written_page(const KvmSystem& kvm, const ConformanceOptions& o) {
  json j = check("minor_fault_on_written_page",
                 "a page written through a second mapping raises MINOR on the vCPU's first access; UFFDIO_CONTINUE "
                 "maps it with that content");
  Rig rig(kvm, o);
  const uint64_t page = 0;
  std::memcpy(rig.alias(page), &kPattern, sizeof kPattern);
  if (!register_or_unsupported(j, rig, UFFDIO_REGISTER_MODE_MINOR)) return j;
  rig.start(page);
  if (!expect_event(j, rig, page, true, o) || !continue_or_wrong(j, rig, page)) return j;
  conclude(j, rig, page, kPattern, o, "MINOR event, CONTINUE, the vCPU read the data");
  return j;
}

json check_fallocated_page(const KvmSystem& kvm, const ConformanceOptions& o) {
  json j = check("fallocate_only_page_keeps_guest_writes",
                 "a page only fallocate()d raises MINOR; after UFFDIO_CONTINUE the vCPU's write survives the next "
                 "access through a second mapping");
  Rig rig(kvm, o);
  const uint64_t page = 1;
  if (::fallocate(rig.gmem_fd(), FALLOC_FL_KEEP_SIZE, static_cast<off_t>(page * kPage), kPage) < 0) {
    verdict(j, "error", fmt::format("fallocate(guest_memfd, KEEP_SIZE): {}", errno_name(errno)));
    return j;
  }
  if (!register_or_unsupported(j, rig, UFFDIO_REGISTER_MODE_MINOR)) return j;
  rig.start(page);
  if (!expect_event(j, rig, page, true, o) || !continue_or_wrong(j, rig, page)) return j;
  conclude(j, rig, page, 0, o, "MINOR event, CONTINUE, the vCPU's write survived",
           " (the fallocated folio was not marked up to date, so the first access through the second mapping "
           "cleared it after the guest had written it; a destination must populate guest_memfd by writing through "
           "a mapping, never by fallocate alone)");
  return j;
}

json check_unpopulated_minor(const KvmSystem& kvm, const ConformanceOptions& o) {
  json j = check("minor_only_unpopulated_page_zero_fills",
                 "with MINOR-only registration a page not in the page cache raises no event and reads as zero "
                 "(so a MINOR destination populates every page first)");
  Rig rig(kvm, o);
  const uint64_t page = 2;
  if (!register_or_unsupported(j, rig, UFFDIO_REGISTER_MODE_MINOR)) return j;
  rig.start(page);
  if (auto ev = rig.wait_event(o.step_timeout)) {
    verdict(j, "wrong", "a page not in the page cache raised a " + describe(*ev, rig, page));
    return j;
  }
  conclude(j, rig, page, 0, o, "no event; the page read as zero and took the write");
  return j;
}

json check_missing_copy(const KvmSystem& kvm, const ConformanceOptions& o) {
  json j = check("missing_fault_and_copy",
                 "with MISSING | MINOR registration an unpopulated page raises MISSING; UFFDIO_COPY places the data");
  Rig rig(kvm, o);
  const uint64_t page = 3;
  uint64_t ioctls = 0;
  if (!register_or_unsupported(j, rig, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR, &ioctls)) return j;
  if (!(ioctls & (1ULL << _UFFDIO_COPY))) {
    verdict(j, "unsupported", "the registered guest_memfd range does not offer UFFDIO_COPY");
    return j;
  }
  rig.start(page);
  if (!expect_event(j, rig, page, false, o)) return j;
  alignas(4096) static uint8_t src[kPage];
  std::memset(src, 0, sizeof src);
  std::memcpy(src, &kPattern, sizeof kPattern);
  uffdio_copy c{};
  c.dst = rig.primary(page);
  c.src = reinterpret_cast<uint64_t>(src);
  c.len = kPage;
  if (::ioctl(rig.uffd(), UFFDIO_COPY, &c) < 0) {
    verdict(j, "wrong", fmt::format("UFFDIO_COPY failed: {}", errno_name(errno)));
    return j;
  }
  conclude(j, rig, page, kPattern, o, "MISSING event, COPY, the vCPU read the data");
  return j;
}

json check_registration(const KvmSystem& kvm, const ConformanceOptions& o) {
  json j = check("register_guest_memfd",
                 "UFFDIO_REGISTER accepts a guest_memfd mapping in MINOR mode (offering UFFDIO_CONTINUE) and in "
                 "MISSING mode (offering UFFDIO_COPY)");
  Rig rig(kvm, o);
  uint64_t minor_ioctls = 0, missing_ioctls = 0;
  int minor = rig.register_uffd(UFFDIO_REGISTER_MODE_MINOR, &minor_ioctls);
  int missing = rig.register_uffd(UFFDIO_REGISTER_MODE_MISSING, &missing_ioctls);
  std::string detail = fmt::format("MINOR: {}, MISSING: {}", minor < 0 ? errno_name(-minor) : "ok",
                                   missing < 0 ? errno_name(-missing) : "ok");
  if (minor < 0 || missing < 0) {
    verdict(j, "unsupported",
            detail + ": this kernel's guest_memfd does not implement userfaultfd operations (vm_uffd_ops)");
    return j;
  }
  bool cont = minor_ioctls & (1ULL << _UFFDIO_CONTINUE), copy = missing_ioctls & (1ULL << _UFFDIO_COPY);
  if (!cont || !copy) {
    verdict(j, "wrong", fmt::format("{}; UFFDIO_CONTINUE offered: {}, UFFDIO_COPY offered: {}", detail,
                                    cont ? "yes" : "no", copy ? "yes" : "no"));
    return j;
  }
  verdict(j, "ok", detail);
  return j;
}

}  // namespace

json run_conformance(const ConformanceOptions& options) {
  json report;
  utsname u{};
  ::uname(&u);
  report["kernel"] = fmt::format("{} {}", u.release, u.version);
  report["memory"] = options.shmem_control ? "shmem (control)" : "guest_memfd";
  json checks = json::array();
  KvmSystem kvm;
  {
    Vm vm(kvm);
    if (auto missing = options.shmem_control ? std::nullopt : guest_memfd_missing(vm)) {
      json j = check("mmap_guest_memfd", "KVM offers guest_memfd with GUEST_MEMFD_FLAG_MMAP | INIT_SHARED");
      verdict(j, "unsupported", *missing);
      checks.push_back(j);
    }
  }
  if (checks.empty()) {
    using Check = json (*)(const KvmSystem&, const ConformanceOptions&);
    checks.push_back(check_registration(kvm, options));
    for (Check c : {check_written_page, check_fallocated_page, check_unpopulated_minor, check_missing_copy}) {
      try {
        checks.push_back(c(kvm, options));
      } catch (const std::exception& e) {
        json j = check("?", "");
        verdict(j, "error", e.what());
        checks.push_back(j);
      }
    }
  }
  int ok = 0, unsupported = 0;
  std::string wrong;
  for (const auto& c : checks) {
    std::string r = c["result"];
    ok += r == "ok";
    unsupported += r == "unsupported";
    if (r != "ok" && r != "unsupported") wrong += (wrong.empty() ? "" : ", ") + c["name"].get<std::string>();
  }
  report["checks"] = checks;
  report["passed"] = ok == static_cast<int>(checks.size());
  if (ok == static_cast<int>(checks.size()) && options.shmem_control)
    report["verdict"] = fmt::format("all {} checks ok on the shmem control", checks.size());
  else if (ok == static_cast<int>(checks.size()))
    report["verdict"] = fmt::format("all {} checks ok: this kernel can host a guest_memfd postcopy destination in "
                                    "--uffd-mode minor and missing",
                                    checks.size());
  else if (unsupported)
    report["verdict"] = fmt::format("this kernel lacks userfaultfd on guest_memfd: {}",
                                    checks[0]["result"] == "unsupported" ? checks[0]["detail"].get<std::string>()
                                                                         : std::string("see the checks"));
  else
    report["verdict"] = fmt::format("{} of {} checks ok; wrong: {}", ok, checks.size(), wrong);
  return report;
}

std::string render_conformance(const json& report) {
  std::string out = fmt::format("{} + userfaultfd conformance on {}\n", report["memory"].get<std::string>(),
                                report["kernel"].get<std::string>());
  for (const auto& c : report["checks"]) {
    out += fmt::format("  {:<12} {}\n", c["result"].get<std::string>(), c["name"].get<std::string>());
    out += fmt::format("               expect: {}\n", c["expect"].get<std::string>());
    out += fmt::format("               saw:    {}\n", c["detail"].get<std::string>());
  }
  out += fmt::format("verdict: {}\n", report["verdict"].get<std::string>());
  return out;
}

}  // namespace vmm
