// The parts a Destination sequences, each one lifetime: the guest this host
// builds from the Hello, the postcopy session that resolves its faults, how
// the migration is ending (the commit and completion flags, the first
// error), its timeline, and what it reports. Destination (destination.h)
// owns one of each and tears them down in one place, in order: the threads
// that use the session, the mapper, the vCPUs, then the userfaultfd.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "clock.h"
#include "fault_metrics.h"
#include "guest_view.h"
#include "kvm.h"
#include "machine.h"
#include "mapping.h"
#include "messages.h"
#include "page_states.h"
#include "userfaultfd.h"
#include "vcpu_thread.h"

namespace migration {

class FaultResolver;

// Built by the handshake (build_guest), restored at switchover: the machine
// on this host's backend, its views, the page states over them, and its
// vCPU threads (held until the commit).
struct IncomingGuest {
  Hello hello;  // what the source announced
  std::unique_ptr<vmm::KvmSystem> kvm;
  std::unique_ptr<vmm::Machine> machine;
  vmm::Mapping alias, staging;
  std::vector<uint64_t> kvm_pages;  // guest pages KVM mapped when the vCPU was restored
  std::unique_ptr<PageStates> pages;
  std::unique_ptr<vmm::VcpuThreads> vcpus;
};

// From the proof that postcopy can work here (prove_postcopy) to its end: the
// userfaultfd, the fault resolver, and the threads beside the guest (the
// urgent connection's receiver, the mapping of what precopy left).
struct PostcopySession {
  std::unique_ptr<vmm::Userfaultfd> uffd;
  std::unique_ptr<FaultResolver> resolver;
  std::thread urgent_thread, premap_thread;
};

// How the migration is ending, read and written by several threads.
struct Ending {
  std::atomic<bool> started_acked{false};  // the source let go of the guest (StartedAck)
  std::atomic<bool> complete{false};       // every page is here
  std::atomic<bool> complete_sent{false};  // Complete went into a live connection
  std::atomic<bool> complete_acked{false};  // and the source's CompleteAck came back
  std::mutex error_mutex;
  std::string error;  // the first failure no reconnection mends
};

// When things happened, for the downtime and the report.
struct Times {
  uint32_t rounds = 0;
  double source_stop_ms = 0, restore_ms = 0;
  double commit_ms = 0;  // Started sent -> StartedAck (or the reconnection) in: the guest waits for it
  // restore_ms in parts, each timed on its own: VmState into KVM, waiting for
  // PostcopyBegin (the StaleChunks), then registration, threads and the
  // vCPUs started.
  struct {
    double state_ms = 0, wait_begin_ms = 0, start_ms = 0;
  } restore_parts;
  Clock::time_point t_hello, t_complete, last_progress, t_postcopy, t_started_sent;
  uint64_t main_bytes_at_postcopy = 0;
  struct Pause {
    double ms;
    uint64_t pages_missing, requests_outstanding;
  };
  std::vector<Pause> pauses;  // each lost link, once recovered
};

// What the migration reports: the per-fault metrics, what the guest saw (its
// serial lines, joined with the metrics at its exit), and the report itself.
struct Outputs {
  FaultMetrics metrics;
  GuestView guest_view;
  nlohmann::ordered_json json;
  std::vector<FaultMetrics::Summary::Record> fault_records;
};

}  // namespace migration
