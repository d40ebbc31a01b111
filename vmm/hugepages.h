// The host's hugetlb pools, read from /sys/kernel/mm/hugepages.
#pragma once

#include <cstdint>
#include <string>

namespace vmm {

struct HugepagePool {
  uint64_t page_size = 0;  // bytes
  bool exists = false;     // the kernel offers this size
  uint64_t nr = 0;         // reserved (nr_hugepages)
  uint64_t free = 0;       // free_hugepages
};

HugepagePool read_hugepage_pool(uint64_t page_size);

// "/sys/kernel/mm/hugepages/hugepages-2048kB"
std::string hugepage_sysfs_dir(uint64_t page_size);

// "2 MiB", "1 GiB", "4 KiB", "300 MiB"
std::string format_size(uint64_t bytes);

}  // namespace vmm
