// The host capability matrix, every entry probed live: KVM and the caps this
// VMM uses, guest_memfd, userfaultfd, MINOR registration per RAM backend,
// hugepage pools, and the migrations that follow from them.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace vmm {

// Never throws for a missing feature: each probe records what it found or why
// it could not run. Throws only for failures of the probe itself.
nlohmann::ordered_json probe_capabilities();

// nullopt when a guest can run here with its RAM on `backend` (gmem,
// shmem, hugetlb-2m or hugetlb-1g), else what is missing: no usable /dev/kvm,
// no guest_memfd as this VMM uses it, no hugepages of that size in this kernel.
// Free hugepages are not asked for: they can be reserved.
std::optional<std::string> backend_unusable(const std::string& backend);

// The human-readable table `vmm caps` prints.
std::string render_capabilities(const nlohmann::ordered_json& caps);

}  // namespace vmm
