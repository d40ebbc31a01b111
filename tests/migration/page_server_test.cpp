// PageServer, the source's postcopy side, over two real loopback connections
// (main and urgent): the test plays the destination, receiving the push,
// asking for pages and ending with Complete, an Error, or a closed link.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <set>
#include <thread>

#include "link.h"
#include "loopback.h"
#include "page_server.h"

namespace {

using namespace migration;
using namespace migration::test;
using namespace std::chrono_literals;

constexpr uint64_t kPage = 4096, kPages = 64, kRam = kPage * kPages;

vmm::Bitmap all_missing_but(std::set<uint64_t> held) {
  vmm::Bitmap bits(kPages, true);
  for (uint64_t p : held) bits.reset(p);
  return bits;
}

struct Source {
  std::vector<uint8_t> ram = numbered_ram(kRam);
  vmm::Bitmap dest_nonzero = vmm::Bitmap(kRam / kChunk);
  ChannelPair main, urgent;  // a: the source's end, b: the destination's
  std::atomic<bool> committed{false};
  std::unique_ptr<PageServer> server;
  std::future<PageServerStats> result;

  Source(const vmm::Bitmap& missing, uint64_t push_rate) {
    // Every chunk allocated on the source backend: each is read and sent.
    server = std::make_unique<PageServer>(ram.data(), kRam, kPage, missing, dest_nonzero,
                                          [] { return vmm::Bitmap(kRam / kChunk, true); }, *main.a, *urgent.a, push_rate,
                                          5000ms, [this] { committed = true; });
    result = std::async(std::launch::async, [this] { return server->run(); });
  }
  ~Source() {
    main.b->shutdown();
    urgent.b->shutdown();
    if (result.valid()) result.wait();
  }
  // The next Pages frame on the destination's end of `ch`, skipping heartbeats: {first page, pages, flags}.
  struct Got {
    uint64_t first, count;
    uint32_t flags;
    std::vector<uint8_t> payload;
  };
  static Got next_pages(Channel& ch) {
    for (;;) {
      Frame f = ch.receive();
      if (f.header.type == FrameType::Heartbeat) continue;
      if (f.header.type != FrameType::Pages) throw std::runtime_error("expected Pages");
      PagesView v = decode_pages(f.payload, kRam);
      return {v.offset / kPage, uint64_t{v.count} * kChunk / kPage, f.header.flags, f.payload};
    }
  }
};

// Every missing page is pushed at most once, none that the destination
// holds; the requested page is answered on the urgent connection, marked
// urgent, whether or not the push had claimed it already (then it would wait
// behind the push's frame, so it goes on both).
TEST(PageServer, PushesEveryMissingPageOnceAndAnswersARequestOnTheUrgentConnection) {
  // 512 KiB/s: the push's one 256 KiB frame goes out only after ~0.5 s, so the request comes while it is in flight.
  Source s(all_missing_but({10, 11}), 512 << 10);
  s.urgent.b->send(FrameType::PageRequest, 0, encode_request({40}));
  Source::Got answer = Source::next_pages(*s.urgent.b);
  EXPECT_EQ(answer.first, 40u);
  EXPECT_EQ(answer.count, 1u);
  EXPECT_TRUE(answer.flags & kPagesUrgent);
  EXPECT_TRUE(answer.flags & kPagesLastOfPage);
  EXPECT_TRUE(decode_pages(answer.payload, kRam).is_data(0));

  std::vector<int> pushed(kPages, 0);
  auto all_came = [&] {
    for (uint64_t p = 0; p < kPages; p++)
      if (p != 10 && p != 11 && p != 40 && pushed[p] == 0) return false;
    return true;
  };
  while (!all_came()) {
    Source::Got g = Source::next_pages(*s.main.b);
    EXPECT_FALSE(g.flags & kPagesUrgent);
    PagesView v = decode_pages(g.payload, kRam);
    for (uint64_t p = g.first; p < g.first + g.count; p++)
      if (v.is_data(static_cast<uint32_t>(p - g.first))) pushed[p]++;
  }
  EXPECT_EQ(pushed[10] + pushed[11], 0) << "pages the destination holds were pushed";
  int pushed_pages = 0;
  for (uint64_t p = 0; p < kPages; p++) {
    EXPECT_LE(pushed[p], 1) << "page " << p << " was pushed twice";
    pushed_pages += pushed[p];
  }

  s.main.b->send(FrameType::Started, 0, encode(Started{1234}));
  // On the urgent connection: on the main one it would queue behind the push.
  Frame ack = s.urgent.b->receive();
  EXPECT_EQ(ack.header.type, FrameType::StartedAck);
  EXPECT_TRUE(s.committed.load());
  s.main.b->send(FrameType::Complete, 0, {});
  ASSERT_EQ(s.result.wait_for(5s), std::future_status::ready);
  PageServerStats stats = s.result.get();
  EXPECT_EQ(stats.pages_pushed, static_cast<uint64_t>(pushed_pages));
  EXPECT_EQ(stats.pages_urgent, 1u);
  EXPECT_EQ(stats.requests, 1u);
}

// A request for a page outside guest RAM is a broken destination: the
// server fails with a clear error, not a lost link to be recovered.
TEST(PageServer, ARequestOutsideGuestRamFailsTheMigration) {
  Source s(all_missing_but({}), 64 << 10);
  s.urgent.b->send(FrameType::PageRequest, 0, encode_request({kPages}));
  ASSERT_EQ(s.result.wait_for(5s), std::future_status::ready);
  try {
    s.result.get();
    ADD_FAILURE() << "run() returned";
  } catch (const LinkLost& e) {
    ADD_FAILURE() << "taken for a lost link: " << e.what();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("PageRequest for page 64 of 64"), std::string::npos) << e.what();
  }
}

// An Error frame from the destination ends the migration with its reason.
TEST(PageServer, AnErrorFromTheDestinationEndsItWithTheReason) {
  Source s(all_missing_but({}), 64 << 10);
  s.main.b->send(FrameType::Error, 0, encode_error("out of hugepages"));
  ASSERT_EQ(s.result.wait_for(5s), std::future_status::ready);
  EXPECT_THROW(
      {
        try {
          s.result.get();
        } catch (const LinkLost&) {
          throw std::logic_error("taken for a lost link");
        } catch (const std::runtime_error& e) {
          EXPECT_NE(std::string(e.what()).find("destination: out of hugepages"), std::string::npos) << e.what();
          throw;
        }
      },
      std::runtime_error);
}

// A link that closes is LinkLost (the source redials), and sent_bitmap() then
// says which pages went out: what was sent is not sent again.
TEST(PageServer, AClosedLinkIsLinkLostAndSentPagesAreKnown) {
  Source s(all_missing_but({}), 0);
  s.urgent.b->send(FrameType::PageRequest, 0, encode_request({5}));
  Source::Got answer = Source::next_pages(*s.urgent.b);
  ASSERT_EQ(answer.first, 5u);
  s.main.b->shutdown();
  s.urgent.b->shutdown();
  ASSERT_EQ(s.result.wait_for(5s), std::future_status::ready);
  EXPECT_THROW(s.result.get(), LinkLost);
  auto sent = s.server->sent_bitmap();
  EXPECT_TRUE(sent.test(5)) << "the answered page is not marked sent";
}

}  // namespace
