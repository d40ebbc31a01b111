// The destination's fault thread (after the KVM selftests' uffd handler and
// Cloud Hypervisor's uffd_handler_loop): poll the userfaultfd and a stop
// eventfd; read faults several at a time; ask the source once per missing
// page on the urgent connection. Pages already present are mapped locally.
#pragma once

#include <atomic>
#include <thread>

#include "channel.h"
#include "fault_metrics.h"
#include "page_states.h"
#include "unique_fd.h"
#include "userfaultfd.h"

namespace migration {

class FaultResolver {
 public:
  FaultResolver(const vmm::Userfaultfd& uffd, PageStates& pages, Channel& urgent, FaultMetrics& metrics);
  ~FaultResolver();
  void start();
  void stop();
  // The error that ended the thread early, if any.
  std::string error() const;
  uint64_t local_resolutions() const { return local_.load(); }

 private:
  void loop();
  void handle(const uffd_msg& msg, std::vector<uint64_t>& batch);

  const vmm::Userfaultfd& uffd_;
  PageStates& pages_;
  Channel& urgent_;
  FaultMetrics& metrics_;
  vmm::UniqueFd stop_fd_;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::string error_;
  std::atomic<uint64_t> local_{0};
};

}  // namespace migration
