#include "pagemap.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <array>
#include <cerrno>

#include <linux/fs.h>
#include <spdlog/spdlog.h>

#include "error.h"
#include "unique_fd.h"

// Debian 12's headers (Linux 6.1) predate PAGEMAP_SCAN (Linux 6.7's uapi/linux/fs.h).
#ifndef PAGEMAP_SCAN
#define PAGE_IS_PRESENT (1 << 3)
struct page_region {
  __u64 start, end, categories;
};
struct pm_scan_arg {
  __u64 size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
      category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

namespace vmm {

namespace {

constexpr uint64_t kSmall = 4096;

void add(std::vector<MappedRange>& out, uint64_t begin, uint64_t end) {
  if (!out.empty() && out.back().end == begin) out.back().end = end;
  else out.push_back({begin, end});
}

// false: the kernel has no PAGEMAP_SCAN.
bool scan(int fd, uint64_t start, uint64_t size, std::vector<MappedRange>& out) {
  std::array<page_region, 256> vec{};
  for (uint64_t at = start, end = start + size; at < end;) {
    pm_scan_arg arg{};
    arg.size = sizeof arg;
    arg.start = at;
    arg.end = end;
    arg.vec = reinterpret_cast<uintptr_t>(vec.data());
    arg.vec_len = vec.size();
    arg.category_mask = PAGE_IS_PRESENT;
    arg.return_mask = PAGE_IS_PRESENT;
    long n = ::ioctl(fd, PAGEMAP_SCAN, &arg);
    if (n < 0) {
      if ((errno == ENOTTY || errno == EINVAL) && out.empty() && at == start) return false;
      throw_errno("ioctl(PAGEMAP_SCAN)");
    }
    for (long i = 0; i < n; i++) add(out, vec[i].start - start, vec[i].end - start);
    if (arg.walk_end <= at) throw Error("ioctl(PAGEMAP_SCAN) made no progress");
    at = arg.walk_end;
  }
  return true;
}

// Bit 63 of each entry: the page is present.
void read_entries(int fd, uint64_t start, uint64_t size, std::vector<MappedRange>& out) {
  std::array<uint64_t, 4096> entries{};
  for (uint64_t page = 0, pages = size / kSmall; page < pages;) {
    uint64_t n = std::min<uint64_t>(entries.size(), pages - page);
    off_t off = static_cast<off_t>((start / kSmall + page) * sizeof(uint64_t));
    ssize_t got = ::pread(fd, entries.data(), n * sizeof(uint64_t), off);
    if (got < 0) throw_errno("pread(/proc/self/pagemap)");
    if (got == 0 || got % sizeof(uint64_t)) throw Error("/proc/self/pagemap: a short read");
    n = static_cast<uint64_t>(got) / sizeof(uint64_t);
    for (uint64_t i = 0; i < n; i++)
      if (entries[i] >> 63) add(out, (page + i) * kSmall, (page + i + 1) * kSmall);
    page += n;
  }
}

}  // namespace

const char* pagemap_method_name(PagemapMethod m) {
  return m == PagemapMethod::Scan ? "PAGEMAP_SCAN" : "pagemap entries";
}

std::vector<MappedRange> mapped_ranges(const void* base, size_t size, PagemapMethod how) {
  auto start = reinterpret_cast<uintptr_t>(base);
  if (start % kSmall || size % kSmall) throw Error("mapped_ranges: the range is not 4 KiB aligned");
  UniqueFd fd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open(/proc/self/pagemap)");
  std::vector<MappedRange> out;
  if (how == PagemapMethod::Scan) {
    if (scan(fd.get(), start, size, out)) return out;
    static bool said = [] {
      spdlog::info("pagemap: this kernel has no PAGEMAP_SCAN (Linux >= 6.7): reading one entry per page instead");
      return true;
    }();
    (void)said;
  }
  read_entries(fd.get(), start, size, out);
  return out;
}

}  // namespace vmm
