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
