#include "fault_resolver.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <ctime>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "error.h"
#include "thread_priority.h"

namespace migration {

FaultResolver::FaultResolver(const vmm::Userfaultfd& uffd, PageStates& pages, Request request, FaultMetrics& metrics)
    : uffd_(uffd), pages_(pages), request_(std::move(request)), metrics_(metrics), stop_fd_(::eventfd(0, EFD_CLOEXEC)) {
  if (!stop_fd_) vmm::throw_errno("eventfd");
}

FaultResolver::~FaultResolver() { stop(); }

void FaultResolver::start() {
  t_start_ = Clock::now();
  thread_ = std::thread([this] {
    vmm::make_current_thread_urgent("uffd-resolver");
    struct CpuTime {
      std::atomic<double>& out;
      ~CpuTime() {
        timespec ts{};
        ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        out = static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
      }
    } cpu{cpu_ms_};
    try {
      loop();
    } catch (const std::exception& e) {
      {
        std::lock_guard lock(mutex_);
        error_ = e.what();
      }
      spdlog::error("fault resolver: {}", e.what());
      if (on_error_) on_error_(e.what());
    }
  });
}

void FaultResolver::stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
  thread_.join();
  t_end_ = Clock::now();
}

FaultResolver::Load FaultResolver::load() const {
  Load l{reads_.load(), events_.load(), max_batch_.load(), cpu_ms_.load(), 0};
  if (t_end_ != Clock::time_point{}) l.wall_ms = vmm::ms_between(t_start_, t_end_);
  return l;
}

std::string FaultResolver::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

void FaultResolver::handle(const uffd_msg& msg, std::vector<uint64_t>& batch) {
  if (msg.event != UFFD_EVENT_PAGEFAULT) return;
  auto t = Clock::now();
  uint64_t addr = msg.arg.pagefault.address - reinterpret_cast<uint64_t>(pages_.primary());
  uint64_t page = addr / pages_.page_size();
  if (page >= pages_.npages())
    throw vmm::Error(fmt::format("userfaultfd reported a fault at offset {:#x}, outside guest RAM", addr));
  metrics_.fault_read(page, t, msg.arg.pagefault.feat.ptid);
  // Whatever frame completes this page maps it at once, also a push frame
  // that had it in flight when the fault came (mapping waits no queue).
  bool present = pages_.mark_wanted(page);
  if (!present && pages_.try_mark_requested(page)) {
    batch.push_back(page);
    return;
  }
  if (pages_.state(page) != PageState::Present) return;  // requested or in flight: its arrival wakes us all
  // Present but not yet mapped for this thread (a completion is racing us): map it here.
  pages_.install_pages(page, 1);
  metrics_.page_done(page, t, Clock::now());
  local_++;
}

void FaultResolver::loop() {
  std::array<uffd_msg, 64> msgs;
  std::vector<uint64_t> batch;
  std::array<pollfd, 2> fds = {pollfd{uffd_.fd(), POLLIN, 0}, pollfd{stop_fd_.get(), POLLIN, 0}};
  for (;;) {
    int rc = ::poll(fds.data(), fds.size(), -1);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) vmm::throw_errno("poll(userfaultfd)");
    if (fds[1].revents) return;
    ssize_t n = ::read(uffd_.fd(), msgs.data(), sizeof msgs);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) vmm::throw_errno("read(userfaultfd)");
    batch.clear();
    auto events = static_cast<uint64_t>(n) / sizeof(uffd_msg);
    reads_++;
    events_ += events;
    if (events > max_batch_) max_batch_ = events;
    for (size_t i = 0; i < events; i++) handle(msgs[i], batch);
    if (batch.empty()) continue;
    auto t = Clock::now();  // recorded first: the answer may complete the page before send() returns
    for (uint64_t p : batch) metrics_.request_sent(p, t);
    request_(batch);
  }
}

}  // namespace migration
