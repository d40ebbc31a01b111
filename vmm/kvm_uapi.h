// The guest_memfd UAPI that Debian bookworm's linux-libc-dev (6.1) lacks.
// Numbers and layouts are the kernel ABI (include/uapi/linux/kvm.h); each
// definition is used only where the system header does not provide it.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#ifndef KVM_CAP_USER_MEMORY2
#define KVM_CAP_USER_MEMORY2 231
#endif
#ifndef KVM_CAP_MEMORY_ATTRIBUTES
#define KVM_CAP_MEMORY_ATTRIBUTES 233
#endif
#ifndef KVM_CAP_GUEST_MEMFD
#define KVM_CAP_GUEST_MEMFD 234
#endif
#ifndef KVM_CAP_VM_TYPES
#define KVM_CAP_VM_TYPES 235
#endif
#ifndef KVM_CAP_GUEST_MEMFD_FLAGS
#define KVM_CAP_GUEST_MEMFD_FLAGS 244
#endif

#ifndef KVM_MEM_GUEST_MEMFD
#define KVM_MEM_GUEST_MEMFD (1UL << 2)
#endif

#ifndef GUEST_MEMFD_FLAG_MMAP
#define GUEST_MEMFD_FLAG_MMAP (1ULL << 0)
#endif
#ifndef GUEST_MEMFD_FLAG_INIT_SHARED
#define GUEST_MEMFD_FLAG_INIT_SHARED (1ULL << 1)
#endif

#ifndef KVM_CREATE_GUEST_MEMFD
struct kvm_create_guest_memfd {
  __u64 size;
  __u64 flags;
  __u64 reserved[6];
};
#define KVM_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
#endif

#ifndef KVM_SET_USER_MEMORY_REGION2
struct kvm_userspace_memory_region2 {
  __u32 slot;
  __u32 flags;
  __u64 guest_phys_addr;
  __u64 memory_size;
  __u64 userspace_addr;
  __u64 guest_memfd_offset;
  __u32 guest_memfd;
  __u32 pad1;
  __u64 pad2[14];
};
#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
#endif

static_assert(sizeof(kvm_create_guest_memfd) == 64, "kvm_create_guest_memfd ABI");
static_assert(sizeof(kvm_userspace_memory_region2) == 160, "kvm_userspace_memory_region2 ABI");

// Linux 6.1's uapi __DECLARE_FLEX_ARRAY gives the flexible-array structs an
// extra byte-sized member in C++ (fixed upstream later), so sizeof() and with
// it the ioctl numbers below come out wrong in C++ (measured: 0xc instead of
// 0x8 in KVM_GET_SUPPORTED_CPUID, which KVM rejects with EINVAL). These are the
// kernel's numbers, computed from the 8-byte headers the kernel sees.
namespace vmm::uapi {
struct FlexHeader8 {
  __u32 count;
  __u32 padding;
};
struct FlexHeader4 {
  __u32 count;
};
static_assert(sizeof(FlexHeader8) == 8 && sizeof(FlexHeader4) == 4);
inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, FlexHeader8);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, FlexHeader8);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, FlexHeader8);
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, FlexHeader4);  // struct kvm_msr_list
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, FlexHeader8);          // struct kvm_msrs
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, FlexHeader8);
struct XsaveRegion {
  __u32 region[1024];
};
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, XsaveRegion);  // struct kvm_xsave
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, XsaveRegion);
}  // namespace vmm::uapi
