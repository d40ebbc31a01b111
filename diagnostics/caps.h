// The host capability matrix, every entry probed live: KVM and the caps this
// VMM uses, guest_memfd, userfaultfd, MINOR registration per RAM backend,
// hugepage pools, and the migrations that follow from them.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace vmm {

// Never throws for a missing feature: each probe records what it found or why
// it could not run. Throws only for failures of the probe itself.
nlohmann::ordered_json probe_capabilities();

// The human-readable table `vmm caps` prints.
std::string render_capabilities(const nlohmann::ordered_json& caps);

}  // namespace vmm
