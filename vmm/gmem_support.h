// Whether this host's KVM offers guest_memfd as this VMM uses it (created with
// GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, mapped like shared
// memory), what is missing where it does not, and the switch that hides it.
//
// VMM_HIDE_GUEST_MEMFD=1 (or =all) makes this process answer as a KVM built
// without guest_memfd does: KVM_CAP_GUEST_MEMFD and KVM_CAP_GUEST_MEMFD_FLAGS
// read 0 and KVM_CREATE_GUEST_MEMFD fails with ENOTTY. =mmap hides only the
// flags, as a KVM older than 6.18 answers: the capabilities read 1 and 0, and a
// create with GUEST_MEMFD_FLAG_MMAP fails with EINVAL. It exists so that the
// tests and scripts can be run as on such a host; it is announced once per
// process (a warning) and in `vmm caps`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace vmm {

class Vm;

enum class GmemHiding { None, All, Mmap };

// What VMM_HIDE_GUEST_MEMFD asks for (read at each call; a probe is no hot
// path), warning once per process when it hides anything. Throws vmm::Error for a value
// it does not know, so a typo never runs a test on the wrong host.
GmemHiding gmem_hiding();
// "VMM_HIDE_GUEST_MEMFD=1" as set, or "" when nothing is hidden.
std::string gmem_hiding_setting();

// What KVM_CHECK_EXTENSION(cap) and KVM_CREATE_GUEST_MEMFD(flags) answer once
// the hiding is applied: `kernel` is the kernel's own answer.
int gmem_visible_cap(long cap, int kernel);
// 0, or the -errno a KVM without the hidden piece answers.
int gmem_hidden_create_error(uint64_t flags);

// nullopt where guest RAM can live in guest_memfd here; otherwise the missing
// piece, e.g. "this KVM has no guest_memfd (KVM_CAP_GUEST_MEMFD = 0: the kernel
// was built without CONFIG_KVM_GUEST_MEMFD)".
std::optional<std::string> guest_memfd_missing(const Vm& vm);
// The same with a scratch VM of its own; also says so when /dev/kvm cannot be
// used at all.
std::optional<std::string> guest_memfd_missing();

}  // namespace vmm
