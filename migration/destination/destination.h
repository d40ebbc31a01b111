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
#include "destination_parts.h"
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
  int run_phases();
  // "" or why a first Hello is refused before anything is allocated.
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
  bool postcopy_done() const { return end_.complete && end_.started_acked; }
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

  // Nine parts, each one lifetime (destination_parts.h); the destructor
  // takes them down in order.
  DestinationOptions options_;
  boost::asio::io_context io_;
  DestinationLink link_{io_, options_.tls};
  DestinationPhases phases_{"receive", DestinationPhase::Listening};
  IncomingGuest guest_;
  PostcopySession postcopy_;
  Ending end_;
  Times times_;
  Outputs out_;
};

}  // namespace migration
