#include "guest_memory.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <functional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "error.h"
#include "hugepages.h"
#include "kvm.h"
#include "kvm_uapi.h"

namespace vmm {

namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB, kGiB = 1024 * kMiB;

UniqueFd create_memfd(Backend b) {
  unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
  if (b == Backend::Hugetlb2M) flags |= MFD_HUGETLB | MFD_HUGE_2MB;
  if (b == Backend::Hugetlb1G) flags |= MFD_HUGETLB | MFD_HUGE_1GB;
  UniqueFd fd(::memfd_create(fmt::format("guest-ram-{}", backend_name(b)).c_str(), flags));
  if (!fd) throw_errno(fmt::format("memfd_create({})", backend_name(b)), "the kernel needs CONFIG_MEMFD_CREATE");
  return fd;
}

Mapping map_shared(int fd, uint64_t size, Backend b, const char* what) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    std::string hint = b == Backend::Gmem ? "guest_memfd needs GUEST_MEMFD_FLAG_MMAP support to be mapped"
                                          : "the host may lack free memory or hugepages (see `vmm caps`)";
    throw_errno(fmt::format("mmap({} view of {} {})", what, format_size(size), backend_name(b)), hint);
  }
  return Mapping(p, size);
}

}  // namespace

std::string_view backend_name(Backend b) {
  switch (b) {
    case Backend::Gmem: return "gmem";
    case Backend::Shmem: return "shmem";
    case Backend::Hugetlb2M: return "hugetlb-2m";
    case Backend::Hugetlb1G: return "hugetlb-1g";
  }
  return "?";
}

std::optional<Backend> parse_backend(std::string_view name) {
  for (Backend b : {Backend::Gmem, Backend::Shmem, Backend::Hugetlb2M, Backend::Hugetlb1G})
    if (backend_name(b) == name) return b;
  return std::nullopt;
}

uint64_t backend_page_size(Backend b) {
  switch (b) {
    case Backend::Hugetlb2M: return 2 * kMiB;
    case Backend::Hugetlb1G: return kGiB;
    default: return 4 * kKiB;
  }
}

std::string_view gmem_bind_name(GmemBind b) { return b == GmemBind::Fd ? "fd" : "hva"; }

std::optional<uint64_t> parse_size(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  uint64_t mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KiB" || unit == "k") mult = kKiB;
  else if (unit == "M" || unit == "MiB" || unit == "m") mult = kMiB;
  else if (unit == "G" || unit == "GiB" || unit == "g") mult = kGiB;
  else return std::nullopt;
  if (value > UINT64_MAX / mult) return std::nullopt;
  return value * mult;
}

void check_backend_size(Backend b, uint64_t size) {
  uint64_t page = backend_page_size(b);
  if (size == 0 || size % page != 0) {
    throw Error(fmt::format("--memory {} needs a size that is a multiple of its {} pages; {} is not (use {})",
                            backend_name(b), format_size(page), format_size(size),
                            format_size((size / page + 1) * page)));
  }
  if (b != Backend::Hugetlb2M && b != Backend::Hugetlb1G) return;
  HugepagePool pool = read_hugepage_pool(page);
  uint64_t need = size / page;
  if (!pool.exists) {
    throw Error(fmt::format("--memory {}: this kernel offers no {} hugepages ({} is missing)", backend_name(b),
                            format_size(page), hugepage_sysfs_dir(page)));
  }
  if (pool.free >= need) return;
  throw Error(fmt::format(
      "--memory {} with {} needs {} free {} hugepage(s), but {} of {} reserved are free. Reserve them with "
      "`tools/hugepages.sh reserve {} {}` or `echo {} > {}/nr_hugepages` (as root)",
      backend_name(b), format_size(size), need, format_size(page), pool.free, pool.nr,
      b == Backend::Hugetlb2M ? "2m" : "1g", need - pool.free + pool.nr, need - pool.free + pool.nr,
      hugepage_sysfs_dir(page)));
}

GuestMemory GuestMemory::create(Backend backend, uint64_t size, const Vm* vm) {
  check_backend_size(backend, size);
  UniqueFd fd;
  if (backend == Backend::Gmem) {
    if (!vm) throw Error("guest_memfd backing needs a VM to belong to");
    fd = vm->create_guest_memfd(size, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
  } else {
    fd = create_memfd(backend);
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) < 0)
      throw_errno(fmt::format("ftruncate(memfd, {})", format_size(size)));
    // Guest RAM never changes size: seal it so no later mistake can shrink it under KVM.
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
      throw_errno("fcntl(F_ADD_SEALS)");
  }
  Mapping primary = map_shared(fd.get(), size, backend, "primary");
  spdlog::debug("memory: {} {} at {}", format_size(size), backend_name(backend), fmt::ptr(primary.data()));
  return GuestMemory(backend, size, std::move(fd), std::move(primary));
}

Mapping GuestMemory::map_alias() const { return map_shared(fd(), size_, backend_, "alias"); }

namespace {

// cachestat(2) (Linux 6.5): how many pages of [off, off + len) of `fd` are in
// the page cache, or -1 where the kernel lacks it. Debian's 6.1 headers do not
// declare it.
struct CachestatRange {
  uint64_t off, len;
};
struct Cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
constexpr long kSysCachestat = 451;  // x86-64

int64_t cached_pages(int fd, uint64_t off, uint64_t len) {
  static std::atomic<bool> missing{false};
  if (missing) return -1;
  CachestatRange range{off, len};
  Cachestat cs{};
  if (::syscall(kSysCachestat, fd, &range, &cs, 0) == 0) return static_cast<int64_t>(cs.nr_cache);
  if (errno == ENOSYS || errno == EOPNOTSUPP) missing = true;
  return -1;
}

}  // namespace

Bitmap GuestMemory::allocated_chunks() const {
  constexpr uint64_t kChunk = 4096;
  uint64_t chunks = size_ / kChunk;
  Bitmap bits(chunks);
  auto mark = [&](uint64_t from, uint64_t to) {
    bits.set(from / kChunk, std::min(chunks, (to + kChunk - 1) / kChunk));
  };
  if (backend_ == Backend::Shmem) {
    auto end = static_cast<off_t>(size_);
    for (off_t pos = 0; pos < end;) {
      off_t data = ::lseek(fd(), pos, SEEK_DATA);
      if (data < 0) break;  // ENXIO: no data past pos
      off_t hole = ::lseek(fd(), data, SEEK_HOLE);
      if (hole < 0) hole = end;
      mark(static_cast<uint64_t>(data), static_cast<uint64_t>(hole));
      pos = hole;
    }
    return bits;
  }
  // mincore() looks each 4 KiB page up in the page cache, which was most of a
  // mostly-zero 1 GiB page's postcopy fault (docs/lab: figures from the
  // code's comments). For
  // guest_memfd, cachestat() counts a whole range at once: empty and full
  // ranges are settled in one call, and only mixed ones down to 2 MiB are
  // handed to mincore().
  bool ok = true;
  auto by_mincore = [&](uint64_t from, uint64_t len) {
    std::vector<unsigned char> vec(len / kChunk);
    if (::mincore(primary() + from, len, vec.data()) < 0) return false;
    for (uint64_t i = 0; i < vec.size(); i++)
      if (vec[i] & 1) mark(from + i * kChunk, from + (i + 1) * kChunk);
    return true;
  };
  std::function<void(uint64_t, uint64_t)> walk = [&](uint64_t from, uint64_t len) {
    if (!ok) return;
    int64_t cached = backend_ == Backend::Gmem ? cached_pages(fd(), from, len) : -1;
    if (cached == 0) return;
    if (cached == static_cast<int64_t>(len / kChunk)) return mark(from, from + len);
    if (cached < 0 || len <= (2ULL << 20)) {
      ok = by_mincore(from, len);
      return;
    }
    walk(from, len / 2);
    walk(from + len / 2, len - len / 2);
  };
  walk(0, size_);
  if (!ok) {
    spdlog::warn("memory: mincore on {} failed ({}); every page will be read", backend_name(backend_),
                 describe_errno(errno));
    bits = Bitmap(chunks, true);
  }
  return bits;
}

uint64_t GuestMemory::map_for_reading(const Bitmap& allocated) const {
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
  constexpr uint64_t kChunk = 4096;
  uint64_t mapped = 0;
  for (uint64_t c = allocated.find_next(0); c < allocated.size();) {
    uint64_t run = allocated.find_next_clear(c);
    uint64_t len = (run - c) * kChunk;
    if (::madvise(primary() + c * kChunk, len, MADV_POPULATE_READ) != 0) {
      const int err = errno;
      throw_errno(fmt::format("madvise(MADV_POPULATE_READ, {} of {})", format_size(len), backend_name(backend_)),
                  err == ENOSYS   ? "the kernel has no madvise() (CONFIG_ADVISE_SYSCALLS)"
                  : err == EINVAL ? "the kernel predates MADV_POPULATE_READ (5.14)"
                                    : "");
    }
    mapped += len;
    c = allocated.find_next(run);
  }
  return mapped;
}

void GuestMemory::populate() const {
  if (backend_ == Backend::Gmem) {
    // A guest_memfd folio that fallocate() created is not marked up to date:
    // once userfaultfd maps it into the guest, the next touch through a
    // mapping of ours zeroes it and the guest's writes are lost (measured on
    // kernels carrying the guest_memfd userfaultfd patches). A write fault
    // through the alias allocates, clears and marks each folio instead.
    Mapping alias = map_alias();
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
    if (::madvise(alias.data(), size_, MADV_POPULATE_WRITE) == 0) return;
    const int err = errno;
    throw_errno(fmt::format("madvise(MADV_POPULATE_WRITE, {} guest_memfd)", format_size(size_)),
                err == ENOSYS   ? "the kernel has no madvise() (CONFIG_ADVISE_SYSCALLS)"
                : err == EINVAL ? "the kernel predates MADV_POPULATE_WRITE (5.14)"
                                  : "the host may be short of memory");
  }
  // The size is already set for every backend, so KEEP_SIZE suits them all.
  if (::fallocate(fd(), FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(size_)) == 0) return;
  throw_errno(fmt::format("fallocate({} {})", format_size(size_), backend_name(backend_)),
              "the host may be short of memory or hugepages");
}

}  // namespace vmm
