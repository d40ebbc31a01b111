// --memory and its default: guest_memfd where this host's KVM offers it.
#include <spdlog/spdlog.h>

#include "commands.h"
#include "gmem_support.h"

namespace vmm::cli {

void add_memory_option(CLI::App* cmd, std::string& memory, const char* what) {
  cmd->add_option("--memory", memory,
                  fmt::format("{} (default: gmem where this KVM offers guest_memfd, else shmem, saying why)", what))
      ->check(CLI::IsMember({"gmem", "shmem", "hugetlb-2m", "hugetlb-1g"}));
}

Backend chosen_backend(const std::string& memory) {
  if (!memory.empty()) return *parse_backend(memory);
  auto missing = guest_memfd_missing();
  if (!missing) {
    spdlog::info("memory: gmem (the default; --memory chooses another)");
    return Backend::Gmem;
  }
  spdlog::warn("memory: shmem, since {} (--memory chooses)", *missing);
  return Backend::Shmem;
}

}  // namespace vmm::cli
