// `vmm conformance`: the guest_memfd + userfaultfd behaviours a postcopy
// destination on guest_memfd relies on, each exercised with a real vCPU
// access (a tiny real-mode program reading and then writing one page of an
// hva memslot over a guest_memfd mapping) and judged ok / wrong /
// unsupported. Kernel engineers run it against their tree (tools/kernel-lab).
#pragma once

#include <chrono>

#include <nlohmann/json.hpp>

namespace vmm {

struct ConformanceOptions {
  // guest_memfd is what is checked; shmem runs the same checks as a control
  // (a kernel's shmem passes them all).
  bool shmem_control = false;
  // Bound on each wait for a userfaultfd event or for the vCPU to finish.
  // Generous by default: under TCG-emulated nested KVM one access takes ms.
  std::chrono::milliseconds step_timeout{10000};
};

// {"kernel": ..., "checks": [{"name", "expect", "result", "detail"}...],
//  "passed": bool, "verdict": text}
nlohmann::ordered_json run_conformance(const ConformanceOptions& options);
std::string render_conformance(const nlohmann::ordered_json& report);

}  // namespace vmm
