#include "thread_priority.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include <spdlog/spdlog.h>

#include "error.h"

namespace vmm {

void make_current_thread_urgent(const char* name) {
  pthread_setname_np(pthread_self(), name);
  sched_param sp{};
  sp.sched_priority = 10;
  int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
  if (rc == 0) return;
  static std::atomic<bool> warned{false};
  auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  bool niced = ::setpriority(PRIO_PROCESS, tid, -10) == 0;
  if (!warned.exchange(true))
    spdlog::warn("threads: SCHED_FIFO refused ({}); fault-path threads run {}", describe_errno(rc),
                 niced ? "at nice -10 instead" : "at normal priority (nice -10 refused too)");
}

void make_current_thread_background(const char* name) {
  pthread_setname_np(pthread_self(), name);
  sched_param sp{};
  int rc = pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
  static std::atomic<bool> warned{false};
  if (rc != 0 && !warned.exchange(true))
    spdlog::warn("threads: SCHED_IDLE refused ({}); {} runs at normal priority", describe_errno(rc), name);
}

}  // namespace vmm
