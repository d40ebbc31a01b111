// What the destination records of each fault, and how it sums them up.
#include "fault_metrics.h"

#include <gtest/gtest.h>

namespace {

using migration::Clock;
using migration::FaultMetrics;
using std::chrono::microseconds;

TEST(FaultMetrics, RecordsEveryFaultWithItsPageAndStages) {
  FaultMetrics m;
  auto t0 = Clock::now();
  m.fault_read(7, t0, 1);
  m.request_sent(7, t0 + microseconds(2));
  m.page_done(7, t0 + microseconds(102), t0 + microseconds(105));
  m.fault_read(9, t0 + microseconds(1000), 1);  // in flight on the push: never requested
  m.pages_done(8, 10, t0 + microseconds(1010), t0 + microseconds(1012));
  auto s = m.summarize();
  ASSERT_EQ(s.records.size(), 2u);
  const auto& a = s.records[0];
  EXPECT_EQ(a.page, 7u);
  EXPECT_TRUE(a.requested);
  EXPECT_NEAR(a.read_to_request_us, 2, 0.01);
  EXPECT_NEAR(a.request_to_data_us, 100, 0.01);
  EXPECT_NEAR(a.data_to_mapped_us, 3, 0.01);
  const auto& b = s.records[1];
  EXPECT_EQ(b.page, 9u);
  EXPECT_FALSE(b.requested);
  EXPECT_NEAR(b.t_ms, 1.0, 0.001);
  EXPECT_NEAR(b.read_to_request_us + b.request_to_data_us + b.data_to_mapped_us, 12, 0.01);
  auto j = migration::to_json(s);
  EXPECT_EQ(j["fault_records"]["rows"].size(), 2u);
  EXPECT_EQ(j["fault_records"]["columns"][0], "page");
}

TEST(FaultMetrics, APageDoneWithoutAFaultRecordsNothing) {
  FaultMetrics m;
  auto t = Clock::now();
  m.pages_done(0, 100, t, t);
  EXPECT_EQ(m.summarize().records.size(), 0u);
  EXPECT_EQ(m.faults_resolved(), 0u);
}

}  // namespace

namespace {

// vCPU 0 (tid 10) blocked [0, 100) and [150, 300) us, vCPU 1 (tid 11) blocked
// [50, 200) us, and a VMM thread (tid 99) faulted too: all blocked at once in
// [50, 100) and [150, 200), 100 us.
TEST(FaultMetrics, BlockedTimePerVcpuAndAllVcpusAtOnce) {
  FaultMetrics m;
  m.set_vcpu_threads({10, 11});
  auto t0 = Clock::now();
  auto at = [t0](int us) { return t0 + microseconds(us); };
  m.fault_read(1, at(0), 10);
  m.fault_read(2, at(50), 11);
  m.fault_read(3, at(60), 99);
  m.page_done(1, at(100), at(100));
  m.fault_read(4, at(150), 10);
  m.fault_read(4, at(160), 10);  // the same fault reported again while blocked: one interval
  m.page_done(2, at(200), at(200));
  m.page_done(3, at(210), at(210));
  m.page_done(4, at(300), at(300));
  auto s = m.summarize();
  ASSERT_EQ(s.vcpus.size(), 2u);
  EXPECT_EQ(s.vcpus[0].faults, 3u);
  EXPECT_NEAR(s.vcpus[0].blocked_ms, 0.250, 1e-6);
  EXPECT_EQ(s.vcpus[1].faults, 1u);
  EXPECT_NEAR(s.vcpus[1].blocked_ms, 0.150, 1e-6);
  EXPECT_NEAR(s.all_vcpus_blocked_ms, 0.100, 1e-6);
  EXPECT_EQ(s.other_thread_faults, 1u);
  ASSERT_EQ(s.records.size(), 5u);
  EXPECT_EQ(s.records[0].vcpu, 0);
  EXPECT_EQ(s.records[1].vcpu, 1);
  EXPECT_EQ(s.records[2].vcpu, -1);
  auto j = migration::to_json(s);
  EXPECT_EQ(j["by_vcpu"].size(), 2u);
  EXPECT_NEAR(j["all_vcpus_blocked_ms"].get<double>(), 0.100, 1e-6);
}

TEST(FaultMetrics, OneVcpuIsBlockedAtOnceWhenEverItIsBlocked) {
  FaultMetrics m;
  m.set_vcpu_threads({10});
  auto t0 = Clock::now();
  m.fault_read(1, t0, 10);
  m.page_done(1, t0 + microseconds(40), t0 + microseconds(40));
  auto s = m.summarize();
  ASSERT_EQ(s.vcpus.size(), 1u);
  EXPECT_NEAR(s.all_vcpus_blocked_ms, s.vcpus[0].blocked_ms, 1e-9);
  EXPECT_NEAR(s.all_vcpus_blocked_ms, 0.040, 1e-6);
}

}  // namespace

namespace {

TEST(FaultMetrics, TwoVcpusOnOnePageAreOneRequestAndOneJoinedFault) {
  FaultMetrics m;
  m.set_vcpu_threads({10, 11});
  auto t0 = Clock::now();
  m.fault_read(5, t0, 10);
  m.request_sent(5, t0 + microseconds(1));
  m.fault_read(5, t0 + microseconds(3), 11);  // finds the page already requested
  m.page_done(5, t0 + microseconds(90), t0 + microseconds(92));
  auto s = m.summarize();
  EXPECT_EQ(s.faults, 2u);
  EXPECT_EQ(s.pages_requested, 1u);
  EXPECT_EQ(s.pages_waited_by_several, 1u);
  EXPECT_EQ(s.faults_joined, 1u);
  EXPECT_NEAR(s.all_vcpus_blocked_ms, 0.089, 1e-6);
}

}  // namespace
