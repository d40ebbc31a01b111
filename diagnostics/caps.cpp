#include "caps.h"

#include <sys/utsname.h>

#include <optional>

#include <fmt/format.h>

#include "error.h"
#include "gmem_support.h"
#include "guest_memory.h"
#include "hugepages.h"
#include "kvm.h"
#include "kvm_uapi.h"
#include "userfaultfd.h"

namespace vmm {

namespace {

using json = nlohmann::ordered_json;

struct CapName {
  long cap;
  const char* name;
};

// The capabilities this VMM and its migration use (numbers: include/uapi/linux/kvm.h).
constexpr CapName kCaps[] = {
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_USER_MEMORY2, "KVM_CAP_USER_MEMORY2"},
    {KVM_CAP_GUEST_MEMFD, "KVM_CAP_GUEST_MEMFD"},
    {KVM_CAP_GUEST_MEMFD_FLAGS, "KVM_CAP_GUEST_MEMFD_FLAGS"},
    {KVM_CAP_NR_MEMSLOTS, "KVM_CAP_NR_MEMSLOTS"},
    {KVM_CAP_MAX_VCPUS, "KVM_CAP_MAX_VCPUS"},
    {KVM_CAP_NR_VCPUS, "KVM_CAP_NR_VCPUS"},  // recommended vCPUs
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_X2APIC_API, "KVM_CAP_X2APIC_API"},
    {KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2"},
    {KVM_CAP_DIRTY_LOG_RING, "KVM_CAP_DIRTY_LOG_RING"},
    {KVM_CAP_XSAVE, "KVM_CAP_XSAVE"},
    {KVM_CAP_XCRS, "KVM_CAP_XCRS"},
    {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS"},
    {KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS"},
    {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
    {KVM_CAP_TSC_CONTROL, "KVM_CAP_TSC_CONTROL"},
    {KVM_CAP_GET_TSC_KHZ, "KVM_CAP_GET_TSC_KHZ"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
};

std::string errno_text(int neg_errno) { return neg_errno == 0 ? "ok" : errno_name(-neg_errno); }

json probe_kvm(const KvmSystem& kvm, const Vm& vm) {
  json caps = json::object();
  for (const auto& c : kCaps) caps[c.name] = vm.check_extension(c.cap);
  return {{"available", true}, {"api_version", kvm.api_version()}, {"caps", caps}};
}

json probe_gmem(const Vm& vm) {
  int flags = vm.check_extension(KVM_CAP_GUEST_MEMFD_FLAGS);
  json j = {{"supported", vm.check_extension(KVM_CAP_GUEST_MEMFD) > 0},
            {"flags", flags},
            {"flag_mmap", (flags & GUEST_MEMFD_FLAG_MMAP) != 0},
            {"flag_init_shared", (flags & GUEST_MEMFD_FLAG_INIT_SHARED) != 0}};
  UniqueFd fd;
  int rc = vm.try_create_guest_memfd(2 << 20, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, fd);
  j["create_mmap_init_shared"] = errno_text(rc);
  auto missing = guest_memfd_missing(vm);
  j["usable"] = !missing.has_value();
  if (missing) j["missing"] = *missing;
  if (std::string hidden = gmem_hiding_setting(); !hidden.empty()) j["hidden_by"] = hidden;
  return j;
}

// KVM refuses dirty logging on a KVM_MEM_GUEST_MEMFD slot; the migration
// source must know before it starts a precopy.
json probe_dirty_log(const KvmSystem& kvm) {
  json j;
  Vm vm(kvm);
  GuestMemory mem = GuestMemory::create(Backend::Gmem, 2 << 20, &vm);
  auto hva = reinterpret_cast<uint64_t>(mem.primary());
  j["gmem_fd_slot"] = errno_text(
      vm.try_set_memory_region2(0, KVM_MEM_GUEST_MEMFD | KVM_MEM_LOG_DIRTY_PAGES, 0, mem.size(), hva, mem.fd(), 0));
  j["gmem_hva_slot"] =
      errno_text(vm.try_set_memory_region2(1, KVM_MEM_LOG_DIRTY_PAGES, 1 << 30, mem.size(), hva, -1, 0));
  return j;
}

json probe_uffd() {
  json j;
  try {
    uint64_t features = Userfaultfd::supported_features();
    json names = json::array();
    for (auto [bit, name] : uffd_feature_names())
      if (features & bit) names.push_back(name);
    j = {{"available", true}, {"api", UFFD_API}, {"features", features}, {"feature_names", names}};
  } catch (const Error& e) {
    j = {{"available", false}, {"error", e.what()}};
  }
  return j;
}

std::optional<std::string> skip_reason(Backend b) {
  if (b != Backend::Hugetlb2M && b != Backend::Hugetlb1G) return std::nullopt;
  HugepagePool pool = read_hugepage_pool(backend_page_size(b));
  if (!pool.exists) return fmt::format("this kernel has no {} hugepages", format_size(pool.page_size));
  if (pool.free > 0) return std::nullopt;
  return fmt::format("no free {} hugepage to probe with (reserve one: tools/hugepages.sh reserve {} 1)",
                     format_size(pool.page_size), b == Backend::Hugetlb2M ? "2m" : "1g");
}

// Registers one page of the backend with MINOR and with MISSING mode.
json probe_registration(Backend b, const Vm& vm) {
  if (auto why = skip_reason(b)) return {{"probed", false}, {"reason", *why}};
  GuestMemory mem = GuestMemory::create(b, backend_page_size(b), &vm);
  json j = {{"probed", true}};
  constexpr uint64_t kMinorFeatures = UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MINOR_HUGETLBFS;
  Userfaultfd uffd(Userfaultfd::supported_features() & kMinorFeatures);
  uint64_t ioctls = 0;
  int minor = uffd.try_register(mem.primary(), mem.size(), UFFDIO_REGISTER_MODE_MINOR, &ioctls);
  j["minor"] = minor == 0;
  j["minor_result"] = errno_text(minor);
  j["continue_ioctl"] = minor == 0 && (ioctls & (1ULL << _UFFDIO_CONTINUE)) != 0;
  if (minor == 0) uffd.unregister(mem.primary(), mem.size());
  int missing = uffd.try_register(mem.primary(), mem.size(), UFFDIO_REGISTER_MODE_MISSING);
  j["missing"] = missing == 0;
  j["missing_result"] = errno_text(missing);
  return j;
}

json probe_hugepages() {
  json j = json::object();
  for (Backend b : {Backend::Hugetlb2M, Backend::Hugetlb1G}) {
    HugepagePool p = read_hugepage_pool(backend_page_size(b));
    j[std::string(backend_name(b))] = {
        {"page_size", p.page_size}, {"exists", p.exists}, {"reserved", p.nr}, {"free", p.free}};
  }
  return j;
}

std::string kernel_release() {
  utsname u{};
  ::uname(&u);
  return fmt::format("{} {} {}", u.sysname, u.release, u.machine);
}

json summarize(const json& caps) {
  json dests = json::array();
  for (const auto& [name, r] : caps["minor_registration"].items())
    if (r.value("minor", false) && r.value("continue_ioctl", false)) dests.push_back(name);
  json precopy = json::array();
  for (const auto& [name, p] : caps["hugepages"].items())
    if (p.value("exists", false)) precopy.push_back(name);
  precopy.insert(precopy.begin(), "shmem");
  if (caps["guest_memfd"].value("usable", false)) precopy.insert(precopy.begin(), "gmem");
  return {{"postcopy_destination_backends", dests},
          {"precopy_destination_backends", precopy},
          {"dirty_log_on_gmem_fd_slot", caps["dirty_log"].value("gmem_fd_slot", "?") == "ok"}};
}

}  // namespace

nlohmann::ordered_json probe_capabilities() {
  json caps = {{"host", kernel_release()}};
  std::optional<KvmSystem> kvm;
  try {
    kvm.emplace();
  } catch (const Error& e) {
    caps["kvm"] = {{"available", false}, {"error", e.what()}};
  }
  caps["userfaultfd"] = probe_uffd();
  caps["hugepages"] = probe_hugepages();
  if (!kvm) return caps;
  Vm vm(*kvm);
  caps["kvm"] = probe_kvm(*kvm, vm);
  caps["guest_memfd"] = probe_gmem(vm);
  bool gmem_ok = caps["guest_memfd"]["usable"].get<bool>();
  caps["dirty_log"] = gmem_ok ? probe_dirty_log(*kvm) : json{{"gmem_fd_slot", "no guest_memfd"}, {"gmem_hva_slot", "no guest_memfd"}};
  json reg = json::object();
  for (Backend b : {Backend::Gmem, Backend::Shmem, Backend::Hugetlb2M, Backend::Hugetlb1G}) {
    std::string name(backend_name(b));
    if (b == Backend::Gmem && !gmem_ok) {
      reg[name] = {{"probed", false}, {"reason", caps["guest_memfd"]["missing"]}};
      continue;
    }
    if (!caps["userfaultfd"]["available"]) {
      reg[name] = {{"probed", false}, {"reason", "userfaultfd is unavailable"}};
      continue;
    }
    reg[name] = probe_registration(b, vm);
  }
  caps["minor_registration"] = reg;
  caps["migration"] = summarize(caps);
  return caps;
}

std::optional<std::string> backend_unusable(const std::string& backend) {
  auto b = parse_backend(backend);
  if (!b) return fmt::format("{} is not a backend (gmem, shmem, hugetlb-2m or hugetlb-1g)", backend);
  if (*b == Backend::Gmem) return guest_memfd_missing();
  try {
    KvmSystem kvm;
    Vm vm(kvm);
  } catch (const Error& e) {
    return fmt::format("no usable KVM: {}", e.what());
  }
  if (*b == Backend::Hugetlb2M || *b == Backend::Hugetlb1G) {
    HugepagePool pool = read_hugepage_pool(backend_page_size(*b));
    if (!pool.exists)
      return fmt::format("this kernel has no {} hugepages ({} is missing)", format_size(pool.page_size),
                         hugepage_sysfs_dir(pool.page_size));
  }
  return std::nullopt;
}

}  // namespace vmm
