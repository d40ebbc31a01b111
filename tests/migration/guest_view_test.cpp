#include "guest_view.h"

#include <gtest/gtest.h>

namespace migration {
namespace {

using Rec = FaultMetrics::Summary::Record;

std::optional<GuestView::Record> fed(std::initializer_list<const char*> lines) {
  GuestView v;
  for (const char* l : lines) v.feed(l);
  return v.record();
}

TEST(GuestView, HasNoRecordUntilTheGuestPrintsItsSlowLine) {
  EXPECT_FALSE(fed({"touch: filled 2048 pages in 50 ms", "SLOWREC 1:2:300"}).has_value());
}

TEST(GuestView, ParsesTheSummaryTheRecordsAndTheExitCost) {
  auto r = fed({"EXITCOST samples=256 cpuid_p50_ns=29728 cpuid_min_ns=29398 pio_p50_ns=64750 pio_min_ns=64248",
                     "SLOW threshold_us=32 records=3 dropped=1 buffer_gpa=400000 page_size=4096 max_us=900 "
                     "max_t_us=5 max_page=7",
                     "SLOWREC 10:7:900 20:8:40", "SLOWREC 30:9:50 bad 1:2 x:1:2"});
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->buffer_gpa, 0x400000u);
  EXPECT_EQ(r->page_size, 4096u);
  EXPECT_EQ(r->dropped, 1u);
  EXPECT_EQ(r->max_us, 900u);
  ASSERT_EQ(r->touches.size(), 3u);  // the malformed words are skipped
  EXPECT_EQ(r->touches[2].page, 9u);
  EXPECT_EQ(r->touches[2].us, 50u);
  EXPECT_EQ(r->exit_cpuid_ns, 29728u);
  EXPECT_EQ(r->exit_pio_ns, 64750u);
}

TEST(GuestView, JoinsEachFaultWithTheTouchUnderWayWhenItWasRead) {
  // Buffer at 4 MiB: buffer page p is destination 4 KiB page 1024 + p. The
  // guest's clock runs 10 ms ahead of the faults' (t_ms 0 is t_us 10000).
  auto r = fed({"SLOW threshold_us=32 records=7 dropped=0 buffer_gpa=400000 page_size=4096 max_us=5000",
                "SLOWREC 10000:1:150 20000:7:70 60000:3:250 90000:5:100",
                "SLOWREC 110000:1:120 500000:1:5000 130000:3:60"});
  ASSERT_TRUE(r.has_value());
  std::vector<Rec> faults = {{1025, 0.0, 1, 80, 2, true},     // A: 83 us, the 150 us touch at 10000
                             {1027, 50.0, 1, 200, 2, true},   // C: the 250 us touch
                             {1029, 80.0, 1, 80, 2, true},    // D: the 100 us touch
                             {1025, 100.0, 1, 90, 2, true},   // B: page 1 again, the 120 us touch
                             {2000, 120.0, 1, 80, 2, false}}; // no touch of that page
  GuestView::Join j = GuestView::join(*r, faults, 4096);
  EXPECT_EQ(j.faults_recorded, 5u);
  ASSERT_EQ(j.faults.size(), 4u);
  EXPECT_DOUBLE_EQ(j.faults[0].guest_us, 150);
  EXPECT_DOUBLE_EQ(j.faults[0].unexplained_us, 150 - 83);
  EXPECT_EQ(j.faults[0].guest_t_us, 10000u);
  EXPECT_DOUBLE_EQ(j.faults[3].guest_us, 120);  // not page 1's later 5000 us touch
  // While faults were served (guest t 10000..130000) only page 7's 70 us
  // touch is unexplained; the 5000 us touch came after.
  EXPECT_EQ(j.touches_unexplained, 2u);  // and page 3's 60 us touch at 130000, the window's end
  EXPECT_DOUBLE_EQ(j.longest_unexplained_us, 70);
  auto js = GuestView::to_json(*r, j);
  EXPECT_EQ(js["faults_joined"], 4);
  EXPECT_DOUBLE_EQ(js["waterfall_us"]["request_to_data"]["p50"].get<double>(), 90);
}

TEST(GuestView, JoinsByDestinationPageWhenItsPagesAreHuge) {
  auto r = fed({"SLOW threshold_us=32 records=2 dropped=0 buffer_gpa=400000 page_size=4096 max_us=700",
                     "SLOWREC 1:0:700 2:600:40"});
  std::vector<Rec> faults = {{2, 0.0, 1, 600, 5, true}};  // 2 MiB page 2 holds [4 MiB, 6 MiB)
  GuestView::Join j = GuestView::join(*r, faults, 2u << 20);
  ASSERT_EQ(j.faults.size(), 1u);
  EXPECT_DOUBLE_EQ(j.faults[0].guest_us, 700);
  EXPECT_EQ(j.touches_unexplained, 0u);  // the 40 us touch came after the last fault
}

}  // namespace
}  // namespace migration
