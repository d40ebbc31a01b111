#include "hugepages.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

namespace vmm {

namespace {

uint64_t read_u64(const std::string& path) {
  std::ifstream in(path);
  uint64_t v = 0;
  in >> v;
  return v;
}

}  // namespace

std::string hugepage_sysfs_dir(uint64_t page_size) {
  return fmt::format("/sys/kernel/mm/hugepages/hugepages-{}kB", page_size / 1024);
}

HugepagePool read_hugepage_pool(uint64_t page_size) {
  HugepagePool pool;
  pool.page_size = page_size;
  std::string dir = hugepage_sysfs_dir(page_size);
  pool.exists = std::filesystem::exists(dir);
  if (!pool.exists) return pool;
  pool.nr = read_u64(dir + "/nr_hugepages");
  pool.free = read_u64(dir + "/free_hugepages");
  return pool;
}

std::string format_size(uint64_t bytes) {
  constexpr uint64_t kKiB = 1024, kMiB = kKiB * 1024, kGiB = kMiB * 1024;
  if (bytes >= kGiB && bytes % kGiB == 0) return fmt::format("{} GiB", bytes / kGiB);
  if (bytes >= kMiB && bytes % kMiB == 0) return fmt::format("{} MiB", bytes / kMiB);
  if (bytes >= kKiB && bytes % kKiB == 0) return fmt::format("{} KiB", bytes / kKiB);
  return fmt::format("{} bytes", bytes);
}

}  // namespace vmm
