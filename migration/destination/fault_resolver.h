// The destination's fault thread (after the KVM selftests' uffd handler and
// Cloud Hypervisor's uffd_handler_loop): poll the userfaultfd and a stop
// eventfd; read faults several at a time; ask the source once per missing
// page on the urgent connection. Pages already present are mapped locally.
#pragma once

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "channel.h"
#include "fault_metrics.h"
#include "page_states.h"
#include "unique_fd.h"
#include "userfaultfd.h"

namespace migration {

class FaultResolver {
 public:
  // `request` asks the source for pages (the urgent connection). While the
  // link is lost it may drop them: they stay Requested, and are asked for
  // again once it is back (PageStates::outstanding()).
  using Request = std::function<void(const std::vector<uint64_t>& pages)>;
  FaultResolver(const vmm::Userfaultfd& uffd, PageStates& pages, Request request, FaultMetrics& metrics);
  ~FaultResolver();
  // Called from the resolver's thread with its error, the moment it stops:
  // faults go unresolved from then on, so the migration must fail now.
  void set_on_error(std::function<void(const std::string&)> f) { on_error_ = std::move(f); }
  void start();
  void stop();
  // The error that ended the thread early, if any.
  std::string error() const;
  uint64_t local_resolutions() const { return local_.load(); }

  // Whether one fault thread keeps up: how many events each read() brought
  // (several at once: faults waited in the queue) and how much of its time
  // the thread spent on a CPU rather than waiting in poll().
  struct Load {
    uint64_t reads = 0, events = 0, max_batch = 0;
    double cpu_ms = 0, wall_ms = 0;  // from start() to stop()
  };
  Load load() const;

 private:
  void loop();
  void handle(const uffd_msg& msg, std::vector<uint64_t>& batch);

  const vmm::Userfaultfd& uffd_;
  PageStates& pages_;
  Request request_;
  std::function<void(const std::string&)> on_error_;
  FaultMetrics& metrics_;
  vmm::UniqueFd stop_fd_;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::string error_;
  std::atomic<uint64_t> local_{0};
  std::atomic<uint64_t> reads_{0}, events_{0}, max_batch_{0};
  Clock::time_point t_start_{}, t_end_{};
  std::atomic<double> cpu_ms_{0};  // set as the thread ends; load() may read it before
};

}  // namespace migration
