// The conformance checks' test rig: one VM with a code page at GPA 0 and
// kPages of guest_memfd (or shmem, the control) in an hva memslot, the
// memslot a postcopy destination on guest_memfd uses, and one vCPU running a
// real-mode program that reads one page, reports what it read and writes a
// marker back.
#pragma once

#include <linux/userfaultfd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "conformance.h"
#include "guest_memory.h"
#include "kvm.h"
#include "userfaultfd.h"

namespace vmm::conformance {

constexpr uint64_t kGmemGpa = 0x10000;  // real-mode segment 0x1000
constexpr uint64_t kPages = 4;
constexpr uint64_t kPage = 4096;
constexpr uint16_t kReportPort = 0x10;
constexpr uint32_t kPattern = 0xc0ffee01;  // what the VMM puts in a page
constexpr uint32_t kMarker = 0x12345678;   // what the vCPU writes back

// Real mode at GPA 0: DS = 0x1000 (the guest_memfd slot), read the dword at
// [BX] and report it on port 0x10, write kMarker there, HLT.
constexpr uint8_t kProgram[] = {
    0xb8, 0x00, 0x10,                          // mov ax, 0x1000
    0x8e, 0xd8,                                // mov ds, ax
    0x66, 0x8b, 0x07,                          // mov eax, [bx]
    0x66, 0xe7, 0x10,                          // out 0x10, eax
    0x66, 0xc7, 0x07, 0x78, 0x56, 0x34, 0x12,  // mov dword [bx], 0x12345678
    0xf4,                                      // hlt
};

class Rig {
 public:
  Rig(const KvmSystem& kvm, const ConformanceOptions& o);
  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;
  ~Rig() { abort(); }

  uint8_t* alias(uint64_t page) const { return alias_.data() + page * kPage; }
  uint64_t primary(uint64_t page) const { return reinterpret_cast<uint64_t>(mem_.primary()) + page * kPage; }
  int gmem_fd() const { return mem_.fd(); }
  int uffd() const { return uffd_->fd(); }

  // 0 or -errno; *ioctls gets the ioctls the registered range offers.
  int register_uffd(uint64_t mode, uint64_t* ioctls = nullptr);
  // Runs the program on a vCPU thread, reading `page` of the guest_memfd slot.
  void start(uint64_t page);
  // The next fault event, or nothing if the vCPU finished or `timeout` passed.
  std::optional<uffd_msg> wait_event(std::chrono::milliseconds timeout);
  // Whether the vCPU finished (halted, or failed) within `timeout`.
  bool wait_vcpu(std::chrono::milliseconds timeout);

  bool halted() const { return halted_; }
  bool reported() const { return reported_; }
  uint32_t read_value() const { return read_value_; }
  const std::string& vcpu_error() const { return error_; }

  // Releases a vCPU stuck in a fault (closing the userfaultfd wakes it) and
  // interrupts KVM_RUN until the thread ends.
  void abort();

 private:
  void run_vcpu();

  Vm vm_;
  GuestMemory mem_;
  Mapping alias_, code_;
  std::unique_ptr<Userfaultfd> uffd_;
  std::unique_ptr<Vcpu> vcpu_;
  std::thread thread_;
  std::atomic<bool> done_{false}, stop_{false};
  bool halted_ = false, reported_ = false;
  uint32_t read_value_ = 0;
  std::string error_;
};

}  // namespace vmm::conformance
