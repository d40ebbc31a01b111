// The migration destination (`vmm receive`): accepts one migration, builds
// guest RAM on its own backend, takes precopy pages through the alias view,
// restores state, and in postcopy resolves the guest's faults through
// userfaultfd MINOR + UFFDIO_CONTINUE (or MISSING + UFFDIO_COPY, --uffd-mode)
// until every page is present. Then the
// guest keeps running here until it exits.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "channel.h"
#include "fault_metrics.h"
#include "guest_memory.h"
#include "destination_link.h"
#include "link.h"
#include "guest_view.h"
#include "machine.h"
#include "messages.h"
#include "page_states.h"
#include "phase.h"
#include "userfaultfd.h"
#include "vcpu_thread.h"

namespace migration {

struct DestinationOptions {
  std::string listen;  // HOST:PORT
  vmm::Backend backend = vmm::Backend::Gmem;
  vmm::GmemBind gmem_bind = vmm::GmemBind::Fd;
  vmm::UffdMode uffd_mode = vmm::UffdMode::Minor;
  std::string report_path;
  // From a connection's arrival to its Hello, TLS included (the first
  // connection may come any time: `vmm receive` waits for a migration).
  std::chrono::milliseconds handshake_timeout{5000};
  // How long to wait for that first connection's handshake to complete;
  // 0: for ever (a destination that serves). Scripts and tests bound it.
  std::chrono::milliseconds accept_timeout{0};
  vmm::Serial::LineSink serial_sink;
  LinkOptions link;
  // The key every connection must prove (nullptr: plaintext).
  std::shared_ptr<TlsConfig> tls;
  // The largest guest RAM a Hello may ask for; 0: what the backend can host
  // when the Hello comes (free hugepages, or MemAvailable).
  uint64_t max_mem_size = 0;
};

class Destination {
 public:
  explicit Destination(DestinationOptions options);
  ~Destination();
  // Receives one migration, runs the guest to its end; returns its exit code.
  int run();
  // The phase machine's current phase (phase.h).
  DestinationPhase phase() const { return phases_.now(); }

 private:
  // "" or why a first Hello is refused before anything is allocated.
  int run_phases();
  std::string check_first_hello(const Hello& hello) const;
  HelloReply accept_source(const Hello& hello);
  // A HelloReply naming this host's backend and page size, not yet accepting.
  HelloReply reply_of_this_host() const;
  // The check of an urgent Hello: this migration's session, or `refusal`.
  std::function<std::string(const Hello&)> urgent_of_this_migration(std::string refusal) const;
  void build_guest(const Hello& hello, bool postcopy);
  std::string prove_postcopy(uint64_t mem_size);
  void receive_until_postcopy();
  void restore_state(std::span<const uint8_t> payload);
  void switch_over(const PostcopyBegin& begin, uint64_t stale_ranges, Clock::time_point t_state);
  void start_guest(const PostcopyBegin& begin);
  void go();
  // Every page is here and the source has let go of the guest.
  bool postcopy_done() const { return complete_ && started_acked_; }
  void register_postcopy();
  void check_primary_view() const;
  void receive_postcopy();
  void urgent_loop();
  // A lost link is replaced by the source's reconnection of the same migration.
  void recover(const std::string& why);
  bool take_reconnection(std::chrono::milliseconds left);
  bool await_reconnection(Clock::time_point deadline);
  void start_link_threads();
  void stop_link_threads();
  void finish_postcopy();
  void tell_source_complete();
  bool source_heard_complete();
  void write_report();
  nlohmann::ordered_json report_json(const FaultMetrics::Summary& s) const;
  void add_link_figures(nlohmann::ordered_json& j) const;
  void print_summary(const FaultMetrics::Summary& s, const nlohmann::ordered_json& j) const;
  void add_guest_view();
  void save_report() const;
  bool announce_if_complete();
  void progress();

  DestinationOptions options_;
  boost::asio::io_context io_;
  DestinationLink link_{io_, options_.tls};
  DestinationPhases phases_{"receive", DestinationPhase::Listening};
  std::atomic<bool> started_acked_{false};  // the source let go of the guest (StartedAck)
  struct Pause {
    double ms;
    uint64_t pages_missing, requests_outstanding;
  };
  std::vector<Pause> pauses_;
  Hello hello_;
  std::unique_ptr<vmm::KvmSystem> kvm_;
  std::unique_ptr<vmm::Machine> machine_;
  vmm::Mapping alias_, staging_;
  std::vector<uint64_t> kvm_pages_;  // guest pages KVM mapped when the vCPU was restored
  std::unique_ptr<PageStates> pages_;
  std::unique_ptr<vmm::Userfaultfd> uffd_;
  FaultMetrics metrics_;
  std::unique_ptr<class FaultResolver> resolver_;
  std::unique_ptr<vmm::VcpuThreads> vcpu_;
  std::thread urgent_thread_, premap_thread_;
  std::atomic<bool> complete_{false};
  std::atomic<bool> complete_sent_{false};  // Complete went into a live connection
  std::atomic<bool> complete_acked_{false};  // and the source's CompleteAck came back
  std::mutex error_mutex_;
  std::string error_;
  uint32_t rounds_ = 0;
  double source_stop_ms_ = 0, restore_ms_ = 0;
  double commit_ms_ = 0;  // Started sent -> StartedAck (or the reconnection) in: the guest waits for it
  // restore_ms_ in parts, each timed on its own: VmState into KVM, waiting
  // for PostcopyBegin (the StaleChunks), then registration, threads and the
  // vCPUs started.
  struct {
    double state_ms = 0, wait_begin_ms = 0, start_ms = 0;
  } restore_parts_;
  Clock::time_point t_hello_, t_complete_, last_progress_, t_postcopy_, t_started_sent_;
  uint64_t main_bytes_at_postcopy_ = 0;
  // What the guest saw (its serial lines), joined with metrics_ at its exit.
  GuestView guest_view_;
  nlohmann::ordered_json report_;
  std::vector<FaultMetrics::Summary::Record> fault_records_;
};

}  // namespace migration
