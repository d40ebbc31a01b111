// FaultResolver, the destination's fault thread, against a real userfaultfd
// on memfd shmem: threads of this test touch registered pages and block in
// the kernel as a vCPU would; the test plays the source, answering the
// resolver's requests with Pages frames over a loopback connection.
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "fault_resolver.h"
#include "loopback.h"
#include "userfaultfd.h"

namespace {

using namespace migration;
using namespace migration::test;
using namespace std::chrono_literals;

constexpr uint64_t kPage = 4096, kPages = 16, kRam = kPage * kPages;

// What the resolver asked the source for, in order.
struct Requests {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::vector<uint64_t>> batches;
  FaultResolver::Request callback() {
    return [this](const std::vector<uint64_t>& pages) {
      std::lock_guard lock(mutex);
      batches.push_back(pages);
      cv.notify_all();
    };
  }
  // Waits (at most 5 s) for `n` requests in all.
  bool wait_for(size_t n) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, 5s, [&] { return batches.size() >= n; });
  }
  std::vector<uint64_t> all() {
    std::lock_guard lock(mutex);
    std::vector<uint64_t> out;
    for (auto& b : batches) out.insert(out.end(), b.begin(), b.end());
    return out;
  }
};

struct Destination {
  SharedRam ram{kRam};
  std::unique_ptr<vmm::Userfaultfd> uffd;
  std::string why_not;
  std::unique_ptr<PageStates> pages;
  FaultMetrics metrics;
  Requests requests;
  std::unique_ptr<FaultResolver> resolver;

  Destination() {
    uffd = register_minor(ram, UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_THREAD_ID, why_not);
    if (!uffd) return;
    pages = std::make_unique<PageStates>(ram.primary, ram.alias, nullptr, kRam, kPage);
  }
  void start() {
    pages->begin_postcopy(uffd.get(), &metrics);
    resolver = std::make_unique<FaultResolver>(*uffd, *pages, requests.callback(), metrics);
    resolver->start();
  }
  // Whatever still waits is released: the resolver first, then the range.
  ~Destination() {
    if (resolver) resolver->stop();
    if (uffd) uffd->unregister(ram.primary, ram.size);
  }
  // A thread touching `page` as a vCPU would; it blocks until the page is mapped.
  std::thread touch(uint64_t page, std::atomic<uint64_t>& seen) {
    return std::thread([this, page, &seen] { seen = tag_at(ram.primary + page * kPage); });
  }
};

#define SKIP_WITHOUT_MINOR(d) \
  if (!(d).uffd) GTEST_SKIP() << (d).why_not

// A fault on a missing page is one request; the answer maps the page and
// the blocked thread reads the source's data.
TEST(FaultResolver, AFaultIsOneRequestAndItsAnswerWakesTheThread) {
  Destination d;
  SKIP_WITHOUT_MINOR(d);
  auto src = numbered_ram(kRam);
  ChannelPair link;
  d.start();
  std::atomic<uint64_t> seen{0};
  std::thread vcpu = d.touch(6, seen);
  ASSERT_TRUE(d.requests.wait_for(1)) << "no request within 5 s of the fault";
  EXPECT_EQ(d.requests.all(), (std::vector<uint64_t>{6}));
  EXPECT_EQ(d.pages->state(6), PageState::Requested);
  send_pages(*link.a, src.data(), kPage, 6, 1, kPagesUrgent | kPagesLastOfPage);
  EXPECT_EQ(receive_pages(*link.b, *d.pages, true), 1u);
  vcpu.join();
  EXPECT_EQ(seen.load(), 6u + 1);
  auto s = d.metrics.summarize();
  EXPECT_EQ(s.faults, 1u);
  EXPECT_EQ(s.pages_requested, 1u);
  EXPECT_EQ(d.resolver->local_resolutions(), 0u);
}

// Two threads fault on one page: one request, one answer wakes both, and
// the second fault is counted as joining the first's wait.
TEST(FaultResolver, TwoThreadsOnOnePageAreOneRequestAndOneAnswerWakesBoth) {
  Destination d;
  SKIP_WITHOUT_MINOR(d);
  auto src = numbered_ram(kRam);
  ChannelPair link;
  d.start();
  std::atomic<uint64_t> seen1{0}, seen2{0};
  std::thread a = d.touch(9, seen1);
  ASSERT_TRUE(d.requests.wait_for(1));
  std::thread b = d.touch(9, seen2);
  // The second fault reaches the resolver and asks for nothing: wait until it was read.
  for (int i = 0; i < 500 && d.resolver->load().events < 2; i++) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(d.resolver->load().events, 2u) << "the second thread's fault never reached the resolver";
  send_pages(*link.a, src.data(), kPage, 9, 1, kPagesUrgent | kPagesLastOfPage);
  receive_pages(*link.b, *d.pages, true);
  a.join();
  b.join();
  EXPECT_EQ(seen1.load(), 9u + 1);
  EXPECT_EQ(seen2.load(), 9u + 1);
  EXPECT_EQ(d.requests.all(), (std::vector<uint64_t>{9})) << "a page in flight was asked for again";
  auto s = d.metrics.summarize();
  EXPECT_EQ(s.faults, 2u);
  EXPECT_EQ(s.faults_joined, 1u);
}

// A page that is present but not mapped (precopy brought it) is resolved
// locally: no request, the thread runs on.
TEST(FaultResolver, APresentPageIsMappedLocallyWithoutARequest) {
  Destination d;
  SKIP_WITHOUT_MINOR(d);
  auto src = numbered_ram(kRam);
  ChannelPair link;
  send_pages(*link.a, src.data(), kPage, 0, kPages, 0);  // precopy: every page
  receive_pages(*link.b, *d.pages, false);
  d.pages->mark_stale(3, 1);  // page 3 the guest wrote again: missing
  d.start();
  std::atomic<uint64_t> seen{0};
  std::thread vcpu = d.touch(12, seen);
  vcpu.join();
  EXPECT_EQ(seen.load(), 12u + 1);
  EXPECT_EQ(d.resolver->local_resolutions(), 1u);
  EXPECT_TRUE(d.requests.all().empty());
  std::thread stale = d.touch(3, seen);
  ASSERT_TRUE(d.requests.wait_for(1));
  EXPECT_EQ(d.requests.all(), (std::vector<uint64_t>{3}));
  send_pages(*link.a, src.data(), kPage, 3, 1, kPagesUrgent | kPagesLastOfPage);
  receive_pages(*link.b, *d.pages, true);
  stale.join();
  EXPECT_EQ(seen.load(), 3u + 1);
}

// stop() ends the thread whether or not faults wait; a thread still blocked
// then runs on once the range is unregistered (a destination stops its
// resolver before it unregisters).
TEST(FaultResolver, StopEndsTheThreadAndUnregisterReleasesAWaitingFault) {
  Destination d;
  SKIP_WITHOUT_MINOR(d);
  d.start();
  std::atomic<uint64_t> seen{~0ULL};
  std::thread vcpu = d.touch(2, seen);
  ASSERT_TRUE(d.requests.wait_for(1));
  auto t0 = std::chrono::steady_clock::now();
  d.resolver->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(d.resolver->error().empty()) << d.resolver->error();
  auto load = d.resolver->load();
  EXPECT_EQ(load.events, 1u);
  EXPECT_GE(load.reads, 1u);
  EXPECT_GT(load.wall_ms, 0);
  d.uffd->unregister(d.ram.primary, d.ram.size);
  vcpu.join();
  EXPECT_EQ(seen.load(), 0u) << "the page cache's zeroed page, mapped by the kernel after unregister";
  d.uffd.reset();
}

}  // namespace
