// The destination's side of the handshake: whether a Hello can be hosted
// here (size, vCPUs, backend), the guest built on this host's backend, and
// postcopy proven possible before the source stops its guest.
#include <sys/mman.h>

#include <cerrno>
#include <fstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "acpi.h"
#include "destination.h"
#include "error.h"
#include "hugepages.h"

namespace migration {

namespace {

std::string uffd_refusal(vmm::Backend b, vmm::UffdMode mode, int neg_errno) {
  std::string what = fmt::format("UFFDIO_REGISTER(MODE_{}) on the {} guest RAM failed with {}",
                                 mode == vmm::UffdMode::Minor ? "MINOR" : "MISSING", vmm::backend_name(b),
                                 vmm::errno_name(-neg_errno));
  if (b == vmm::Backend::Gmem)
    return what + ": this kernel cannot register guest_memfd with userfaultfd, so it cannot be a postcopy "
                  "destination on guest_memfd (`vmm caps` and `vmm conformance` show the missing piece). Use "
                  "--mode precopy, or receive on --memory shmem, hugetlb-2m or hugetlb-1g";
  return what;
}

// "20.5 GiB" for a size that is not a round one.
std::string approx_size(uint64_t bytes) {
  if (bytes < (1ULL << 30) || bytes % (1ULL << 30) == 0) return vmm::format_size(bytes);
  return fmt::format("{:.1f} GiB", static_cast<double>(bytes) / (1ULL << 30));
}

// What the backend could host if the Hello came now.
uint64_t hostable_now(vmm::Backend b, std::string* how) {
  if (b == vmm::Backend::Hugetlb2M || b == vmm::Backend::Hugetlb1G) {
    auto pool = vmm::read_hugepage_pool(vmm::backend_page_size(b));
    *how = fmt::format("{} free {} hugepages", pool.free, vmm::format_size(pool.page_size));
    return pool.free * pool.page_size;
  }
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  while (in >> key >> kib) {
    if (key == "MemAvailable:") break;
    in.ignore(256, '\n');
  }
  *how = fmt::format("MemAvailable {}", approx_size(kib * 1024));
  return kib * 1024;
}

}  // namespace

std::string Destination::check_first_hello(const Hello& hello) const {
  if (hello.role != Role::Main) return "the first connection must announce the Main role";
  if (hello.resume) return "this destination is not receiving a migration to resume";
  if (hello.vcpus > vmm::kMaxVcpus)
    return fmt::format("the guest has {} vCPUs; this VMM runs at most {}", hello.vcpus, vmm::kMaxVcpus);
  std::string how = fmt::format("--max-mem-size {}", vmm::format_size(options_.max_mem_size));
  uint64_t limit = options_.max_mem_size ? options_.max_mem_size : hostable_now(options_.backend, &how);
  if (hello.mem_size > limit)
    return fmt::format("{} of guest RAM is more than this destination takes ({} of {}: {})",
                       vmm::format_size(hello.mem_size), approx_size(limit), vmm::backend_name(options_.backend),
                       how);
  return "";
}

HelloReply Destination::reply_of_this_host() const {
  HelloReply reply;
  reply.dst_backend = std::string(vmm::backend_name(options_.backend));
  reply.dst_page_size = vmm::backend_page_size(options_.backend);
  return reply;
}

std::function<std::string(const Hello&)> Destination::urgent_of_this_migration(std::string refusal) const {
  return [this, refusal = std::move(refusal)](const Hello& h) {
    return h.role == Role::Urgent && h.session == guest_.hello.session ? std::string() : refusal;
  };
}

HelloReply Destination::accept_source(const Hello& hello) {
  HelloReply reply = reply_of_this_host();
  if (hello.role != Role::Main) {
    reply.reason = "the first connection must announce the Main role";
    return reply;
  }
  bool postcopy = hello.mode != Mode::Precopy;
  try {
    build_guest(hello, postcopy);
    if (postcopy) {
      reply.reason = prove_postcopy(hello.mem_size);
      if (!reply.reason.empty()) return reply;
      reply.uffd_minor = true;
    }
  } catch (const std::exception& e) {
    reply.reason = fmt::format("cannot host {} of guest RAM on {}: {}", vmm::format_size(hello.mem_size),
                               vmm::backend_name(options_.backend), e.what());
    return reply;
  }
  reply.accepted = true;
  return reply;
}

// The machine, its RAM on this host's backend, the alias view and (MISSING
// mode) the staging buffer, and the page states over them.
void Destination::build_guest(const Hello& hello, bool postcopy) {
  vmm::MachineConfig config{"", "", options_.backend, options_.gmem_bind, hello.mem_size, hello.vcpus};
  if (postcopy && options_.backend == vmm::Backend::Gmem && config.gmem_bind == vmm::GmemBind::Fd) {
    spdlog::info("receive: guest_memfd bound by hva for postcopy, so vCPU faults reach userfaultfd through the VMA");
    config.gmem_bind = vmm::GmemBind::Hva;
  }
  guest_.kvm = std::make_unique<vmm::KvmSystem>();
  guest_.machine = std::make_unique<vmm::Machine>(*guest_.kvm, config, [this](std::string_view line) {
    out_.guest_view.feed(line);
    if (options_.serial_sink) options_.serial_sink(line);
  });
  guest_.alias = guest_.machine->memory().map_alias();
  if (postcopy && options_.uffd_mode == vmm::UffdMode::Missing) {
    // MISSING mode: data waits here until UFFDIO_COPY places it.
    void* p = ::mmap(nullptr, hello.mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (p == MAP_FAILED) vmm::throw_errno("mmap(staging buffer)");
    guest_.staging = vmm::Mapping(p, hello.mem_size);
  }
  guest_.pages = std::make_unique<PageStates>(guest_.machine->memory().primary(), guest_.alias.data(), guest_.staging.data(), hello.mem_size,
                                        vmm::backend_page_size(options_.backend));
}

// Whether postcopy can resolve faults here, found out while the source's
// guest still runs: "" or why not. Leaves a userfaultfd ready, unregistered.
std::string Destination::prove_postcopy(uint64_t mem_size) {
  uint8_t* primary = guest_.machine->memory().primary();
  // Switchover drops the primary view's PTEs; a kernel without madvise()
  // must be found out now.
  if (::madvise(primary, mem_size, MADV_DONTNEED) < 0)
    vmm::throw_errno("madvise(MADV_DONTNEED, guest RAM)",
                     errno == ENOSYS ? "the kernel has no madvise() (CONFIG_ADVISE_SYSCALLS)" : "");
  vmm::UffdMode mode = options_.uffd_mode;
  // MINOR faults need every page in the page cache; MISSING faults need it empty.
  if (mode == vmm::UffdMode::Minor) guest_.machine->memory().populate();
  uint64_t want = UFFD_FEATURE_THREAD_ID | (mode == vmm::UffdMode::Minor
                                                 ? UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MINOR_HUGETLBFS
                                                 : UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MISSING_HUGETLBFS);
  postcopy_.uffd = std::make_unique<vmm::Userfaultfd>(want & vmm::Userfaultfd::supported_features());
  uint64_t ioctls = 0;
  int rc = postcopy_.uffd->try_register(primary, mem_size, vmm::uffd_register_mode(mode), &ioctls);
  if (rc < 0) return uffd_refusal(options_.backend, mode, rc);
  if (!(ioctls & vmm::uffd_resolve_ioctl_bit(mode)))
    return fmt::format("the registered {} range does not offer {}", vmm::backend_name(options_.backend),
                       mode == vmm::UffdMode::Minor ? "UFFDIO_CONTINUE" : "UFFDIO_COPY");
  // Proven possible; the real registration waits for switchover, because
  // restoring the vCPU makes KVM write guest RAM (kvmclock) from this thread.
  postcopy_.uffd->unregister(primary, mem_size);
  return "";
}

}  // namespace migration
