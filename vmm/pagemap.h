// Which pages of a range this process has mapped in its own page tables:
// PAGEMAP_SCAN (Linux >= 6.7) on /proc/self/pagemap, which returns only the
// mapped runs, or else one pagemap entry per 4 KiB page. A postcopy
// destination uses it to prove that no missing guest page is mapped in the
// view userfaultfd watches (such a page would never fault).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vmm {

struct MappedRange {
  uint64_t begin, end;  // byte offsets from the range's start, [begin, end)
};

enum class PagemapMethod { Scan, Read };
const char* pagemap_method_name(PagemapMethod m);

// The mapped runs of [base, base + size), in order; 4 KiB granular (a huge
// page mapping shows as its 4 KiB parts, merged). `how` is the method to
// try first: Scan falls back to Read where the kernel lacks PAGEMAP_SCAN
// (and says so once). Throws vmm::Error on failure.
std::vector<MappedRange> mapped_ranges(const void* base, size_t size, PagemapMethod how = PagemapMethod::Scan);

}  // namespace vmm
