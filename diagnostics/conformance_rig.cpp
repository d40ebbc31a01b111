#include "conformance_rig.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "clock.h"
#include "error.h"
#include "vcpu_thread.h"

namespace vmm::conformance {

Rig::Rig(const KvmSystem& kvm, const ConformanceOptions& o)
    : vm_(kvm),
      mem_(GuestMemory::create(o.shmem_control ? Backend::Shmem : Backend::Gmem, kPages * kPage, &vm_)),
      alias_(mem_.map_alias()) {
  void* code = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (code == MAP_FAILED) throw_errno("mmap(code page)");
  code_ = Mapping(code, kPage);
  std::memcpy(code_.data(), kProgram, sizeof kProgram);
  vm_.set_memory_region(0, 0, 0, kPage, reinterpret_cast<uint64_t>(code_.data()));
  vm_.set_memory_region(1, 0, kGmemGpa, kPages * kPage, reinterpret_cast<uint64_t>(mem_.primary()));
}

int Rig::register_uffd(uint64_t mode, uint64_t* ioctls) {
  uint64_t want = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM;
  uffd_ = std::make_unique<Userfaultfd>(want & Userfaultfd::supported_features());
  return uffd_->try_register(mem_.primary(), kPages * kPage, mode, ioctls);
}

void Rig::start(uint64_t page) {
  vcpu_ = std::make_unique<Vcpu>(vm_, 0);
  kvm_sregs s = vcpu_->get_sregs();
  s.cs.base = 0;
  s.cs.selector = 0;
  vcpu_->set_sregs(s);
  kvm_regs r{};
  r.rip = 0;
  r.rflags = 2;
  r.rbx = page * kPage;
  vcpu_->set_regs(r);
  install_kick_handler();
  thread_ = std::thread([this] { run_vcpu(); });
}

std::optional<uffd_msg> Rig::wait_event(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline && !done_) {
    pollfd pfd{uffd_->fd(), POLLIN, 0};
    if (::poll(&pfd, 1, 20) <= 0) continue;
    uffd_msg msg{};
    ssize_t n = ::read(uffd_->fd(), &msg, sizeof msg);
    if (n == sizeof msg && msg.event == UFFD_EVENT_PAGEFAULT) return msg;
  }
  return std::nullopt;
}

bool Rig::wait_vcpu(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!done_ && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  if (!done_) return false;
  thread_.join();
  return true;
}

void Rig::abort() {
  if (!thread_.joinable()) return;
  uffd_.reset();
  stop_ = true;
  while (!done_) {
    vcpu_->request_immediate_exit();
    pthread_kill(thread_.native_handle(), SIGUSR1);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  thread_.join();
}

void Rig::run_vcpu() {
  try {
    while (!stop_) {
      if (!vcpu_->run()) continue;  // interrupted
      kvm_run* r = vcpu_->run_state();
      if (r->exit_reason == KVM_EXIT_IO && r->io.port == kReportPort && r->io.direction == KVM_EXIT_IO_OUT) {
        std::memcpy(&read_value_, reinterpret_cast<uint8_t*>(r) + r->io.data_offset, sizeof read_value_);
        reported_ = true;
        continue;
      }
      if (r->exit_reason == KVM_EXIT_HLT) {
        halted_ = true;
        break;
      }
      error_ = fmt::format("unexpected KVM exit reason {}", r->exit_reason);
      break;
    }
  } catch (const std::exception& e) {
    error_ = e.what();
  }
  done_ = true;
}

}  // namespace vmm::conformance
