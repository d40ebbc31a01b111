// The migration source: handshake, precopy rounds over KVM's dirty log,
// switchover, then (postcopy, hybrid) the page server until the destination
// holds every page. A failure before switchover resumes the guest here.
#pragma once

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "channel.h"
#include "link.h"
#include "messages.h"
#include "migration_status.h"
#include "phase.h"
#include "page_server.h"

namespace vmm {
class Machine;
class VcpuThreads;
}  // namespace vmm

namespace migration {

struct SourceOptions {
  std::string to;  // HOST:PORT of `vmm receive`
  Mode mode = Mode::Hybrid;
  uint32_t precopy_rounds = 0;     // rounds after the first full pass; 0: 1 for hybrid, 30 for precopy
  uint64_t converge_chunks = 256;  // precopy stops once a round finds fewer dirty 4 KiB chunks
  uint64_t push_rate = 0;          // postcopy's background push cap in bytes/s; 0: none
  LinkOptions link;
  // How long the destination may take to answer Hello: it prepares guest RAM
  // first, and populating hugetlb pages takes seconds (docs/lab: figures from the code's comments).
  std::chrono::milliseconds handshake_timeout{60000};
  MigrationStatus* status = nullptr;  // kept up to date when given
  // The key both connections prove, also on every reconnection (nullptr: plaintext).
  std::shared_ptr<TlsConfig> tls;
};

enum class SourceResult {
  Completed,               // the destination runs the guest and holds every page
  FailedBeforeSwitchover,  // the guest kept running here, or runs here again
  FailedAfterSwitchover,   // the guest runs there, and the link stayed lost: pages only this side held are lost
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
  // Lost links recovered during postcopy: how many, and each pause (link
  // lost -> page server serving again) in ms.
  std::vector<double> pauses_ms;
  // Pages sent (or claimed by the push) before a loss that the destination
  // did not hold after it: in flight when the link broke, and sent again.
  uint64_t pages_resent = 0;
  bool resumed_here = false;  // a failure before the commit point resumed the guest here
};

// Refuses, before anything runs, a mode this source cannot do.
void check_source_mode(const vmm::Machine& m, Mode mode);

class Source {
 public:
  Source(vmm::Machine& machine, vmm::VcpuThreads& vcpu, SourceOptions options);
  SourceReport run();

 private:
  void connect();
  void with_retries(const char* what, const std::function<void()>& attempt);
  uint64_t send_stale(const vmm::Bitmap& final_dirty);
  // One connection to the destination, through TLS when there is a key.
  std::unique_ptr<Channel> dial();
  void precopy();
  uint64_t send_chunks(const vmm::Bitmap& bits, const vmm::Bitmap* allocated = nullptr);
  vmm::Bitmap missing_pages(const vmm::Bitmap& final_dirty) const;
  void map_guest_memory_for_reading();
  void switchover(SourceReport& report);
  // Moves the migration's phase (phase.h), and the API's status with it.
  void phase(SourcePhase p, const std::string& detail = "");
  void serve_postcopy(SourceReport& report, vmm::Bitmap missing, uint64_t page_size);
  vmm::Bitmap reconnect(const std::string& why, uint64_t npages);

  vmm::Machine& machine_;
  vmm::VcpuThreads& vcpu_;
  SourceOptions options_;
  boost::asio::io_context io_;
  std::unique_ptr<Channel> main_, urgent_;
  Hello hello_;
  HelloReply peer_;
  std::atomic<bool> committed_{false};  // the destination started the guest and was told we let go
  SourcePhases phases_{"migrate", SourcePhase::Idle};
  vmm::Bitmap sent_, dest_nonzero_, pending_dirty_;  // per 4 KiB chunk
  uint32_t rounds_ = 0;
  uint64_t precopy_chunks_ = 0;
};

}  // namespace migration
