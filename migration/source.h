// The migration source: handshake, precopy rounds over KVM's dirty log,
// switchover, then (postcopy, hybrid) the page server until the destination
// holds every page. A failure before switchover resumes the guest here.
#pragma once

#include <boost/asio/io_context.hpp>

#include <memory>
#include <string>
#include <vector>

#include "channel.h"
#include "messages.h"
#include "page_server.h"

namespace vmm {
class Machine;
class VcpuThread;
}  // namespace vmm

namespace migration {

struct SourceOptions {
  std::string to;  // HOST:PORT of `vmm receive`
  Mode mode = Mode::Hybrid;
  uint32_t precopy_rounds = 0;     // rounds after the first full pass; 0: 1 for hybrid, 30 for precopy
  uint64_t converge_chunks = 256;  // precopy stops once a round finds fewer dirty 4 KiB chunks
  uint64_t push_rate = 0;          // postcopy's background push cap in bytes/s; 0: none
};

enum class SourceResult {
  Completed,               // the destination runs the guest and holds every page
  FailedBeforeSwitchover,  // the guest kept running here
  FailedAfterSwitchover,   // the guest is stopped here and may be incomplete there
  GuestFinished,           // the guest exited before switchover; nothing to migrate
};

struct SourceReport {
  SourceResult result = SourceResult::FailedBeforeSwitchover;
  std::string error;
  uint32_t precopy_rounds = 0;
  uint64_t precopy_chunks = 0;
  double downtime_source_ms = 0;  // vCPU stop -> PostcopyBegin sent
  double total_ms = 0;
  PageServerStats postcopy;
};

// Refuses, before anything runs, a mode this source cannot do.
void check_source_mode(const vmm::Machine& m, Mode mode);

class Source {
 public:
  Source(vmm::Machine& machine, vmm::VcpuThread& vcpu, SourceOptions options);
  SourceReport run();

 private:
  void connect();
  void precopy();
  uint64_t send_chunks(const std::vector<uint64_t>& bits, const std::vector<uint64_t>* allocated = nullptr);
  std::vector<uint64_t> missing_pages(const std::vector<uint64_t>& final_dirty) const;
  void map_guest_memory_for_reading();
  void switchover(SourceReport& report);

  vmm::Machine& machine_;
  vmm::VcpuThread& vcpu_;
  SourceOptions options_;
  boost::asio::io_context io_;
  std::unique_ptr<Channel> main_, urgent_;
  HelloReply peer_;
  std::vector<uint64_t> sent_, dest_nonzero_, pending_dirty_;  // per 4 KiB chunk
  uint32_t rounds_ = 0;
  uint64_t precopy_chunks_ = 0;
};

}  // namespace migration
