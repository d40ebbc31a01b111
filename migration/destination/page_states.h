// The destination's view of guest RAM during an incoming migration: page data
// lands through the alias view (MINOR mode) or in a staging buffer (MISSING
// mode); in postcopy each destination page moves Missing -> (Requested) ->
// Present, and becomes visible to the guest only once all its bytes are there:
// UFFDIO_CONTINUE on the primary view, or UFFDIO_COPY from the staging buffer.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "channel.h"
#include "fault_metrics.h"
#include "messages.h"

namespace vmm {
class Userfaultfd;
}

namespace migration {

enum class PageState : uint8_t { Missing = 0, Requested = 1, Filling = 2, Present = 3 };

class PageStates {
 public:
  // `staging` null: data is written through `alias` (precopy, MINOR mode).
  // Otherwise data lands in `staging` and UFFDIO_COPY installs it.
  PageStates(uint8_t* primary, uint8_t* alias, uint8_t* staging, uint64_t mem_size, uint64_t page_size);

  uint64_t page_size() const { return page_size_; }
  uint64_t npages() const { return npages_; }
  uint8_t* primary() const { return primary_; }

  // Reads the rest of a Pages frame from `ch` straight into guest memory
  // (page_receive.cpp). Precopy: the guest is not running; every chunk lands,
  // and the frame's chunks count as covered (data, zero marker, or left out
  // because this side holds zeros already): a page whose every chunk is
  // covered is Present at once, so that switchover has nothing to compute
  // over all of guest RAM. Postcopy: see below.
  // Switchover: chunks the guest wrote after they were sent; their pages are
  // Missing again.
  void mark_stale(uint64_t first_chunk, uint64_t nchunks);
  // From here on faults are resolved: every page not Present is Missing.
  // Without a userfaultfd (tests, fuzzing) pages are tracked and never mapped.
  void begin_postcopy(const vmm::Userfaultfd* uffd, FaultMetrics* metrics);
  // Pushed pages are mapped by a mapper thread, so the receiving thread goes
  // back to the socket at once (mapping in line halved the push rate). A
  // fault on a page that is present but not mapped yet is resolved locally.
  // Stop, in MISSING mode, drains the queue (the data is only in staging
  // until UFFDIO_COPY places it); in MINOR mode it drops the queue: the page
  // cache already holds every queued page, and once the range is unregistered
  // the kernel maps each on first touch. Call it before unregistering, with
  // the fault resolver still running: a vCPU that faults meanwhile on a
  // queued page is mapped by the resolver, not left waiting for the queue.
  // `on_error` is called from the mapper's thread on its first failure.
  void start_mapper(std::function<void(const std::string&)> on_error = {});
  void stop_mapper();
  ~PageStates();
  // Postcopy: a frame that holds whole pages fills only the pages it can claim
  // (the same page may come twice: pushed, and resent on the urgent channel
  // because the push had it in flight); a frame that is part of a larger page
  // must find that page not present. Completed pages are mapped
  // (UFFDIO_CONTINUE). Returns the pages this frame completed.
  uint64_t receive_pages(Channel& ch, const std::array<uint8_t, kHeaderSize>& raw, const FrameHeader& h,
                         bool postcopy);

  PageState state(uint64_t page) const { return static_cast<PageState>(state_[page].load()); }
  // After a lost link: the pages a vCPU waits for or that were requested,
  // none of them present, each marked Requested (to be asked for again).
  std::vector<uint64_t> outstanding();
  // Which pages are present, as a bitmap (bit set: present).
  vmm::Bitmap present_bitmap() const;
  bool try_mark_requested(uint64_t page);
  // A vCPU waits on `page`: whichever frame completes it maps it in line, not
  // through the mapper's queue. Returns whether the page is present already
  // (then the caller maps it: the completion may have missed the mark).
  bool mark_wanted(uint64_t page);
  // Maps [first, first + count) pages into the guest: UFFDIO_CONTINUE, or
  // UFFDIO_COPY from staging. EEXIST (mapped already) counts as done.
  void install_pages(uint64_t first, uint64_t count) const;
  // Maps the pages that are Present (and not yet mapped), in runs. `stop`
  // ends it early only in MINOR mode (as with the mapper's queue).
  void install_present_ranges(const std::atomic<bool>& stop) const;


  uint64_t present() const { return present_.load(); }
  bool complete() const { return present_.load() == npages_; }
  uint64_t pages_pushed() const { return pushed_.load(); }
  // Pages completed by an answer on the urgent connection: with pages_pushed,
  // every page that came during postcopy, each counted once.
  uint64_t pages_answered() const { return answered_.load(); }
  uint64_t chunks_skipped() const { return skipped_.load(); }
  uint64_t chunks_received() const { return received_.load(); }

 private:
  bool try_claim(uint64_t page);
  void mark_covered(const PagesView& v);
  // Whether frame `v`, which holds all of `page`, carried data or a zero marker for it.
  bool has_content(const PagesView& v, uint64_t page) const;
  bool page_covered(uint64_t page) const;
  // A frame that failed half-way gives back the pages it claimed: they are
  // missing again, to come with the next copy.
  void release_claims(const PagesView& v, const std::vector<bool>& mine);
  std::vector<bool> claim_for_frame(const PagesView& v, uint32_t flags, bool& whole);
  uint64_t complete_pages(const PagesView& v, uint32_t flags, bool whole, const std::vector<bool>& mine);

  template <typename Attempt>
  void map_range(uint64_t first, uint64_t count, const char* ioctl_name, Attempt attempt) const;
  void continue_pages(uint64_t first, uint64_t count) const;
  void copy_pages(uint64_t first, uint64_t count) const;
  void map_loop();

  struct MapRun {
    uint64_t first, count;
    Clock::time_point t_received;
  };
  std::mutex map_mutex_;
  std::condition_variable map_cv_;
  std::deque<MapRun> map_queue_;
  bool map_stop_ = false;
  std::thread mapper_;
  std::string map_error_;
  std::function<void(const std::string&)> on_map_error_;

  uint8_t* primary_;
  uint8_t* alias_;
  // MINOR mode: every present page is in the page cache already, so mapping
  // it ahead is only a saving: what is left, the kernel maps after unregister.
  bool mapping_is_optional() const { return staging_ == nullptr; }
  uint8_t* staging_;
  uint8_t* write_base_;  // where received data goes: staging_ or alias_
  uint64_t mem_size_, page_size_, npages_;
  std::unique_ptr<std::atomic<uint8_t>[]> state_;
  std::unique_ptr<std::atomic<uint8_t>[]> wanted_;
  vmm::Bitmap covered_;  // precopy: bit per 4 KiB chunk some frame covered
  vmm::Bitmap content_;  // precopy: bit per page some frame gave data or a zero marker
  std::atomic<uint64_t> present_{0}, pushed_{0}, answered_{0}, skipped_{0}, received_{0};
  const vmm::Userfaultfd* uffd_ = nullptr;
  FaultMetrics* metrics_ = nullptr;
};

}  // namespace migration
