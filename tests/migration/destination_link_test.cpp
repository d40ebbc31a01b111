// DestinationLink's page requests over a real loopback connection: what the
// source's page server reads on its urgent connection.
#include <gtest/gtest.h>

#include "destination_link.h"
#include "loopback.h"

namespace {

using namespace migration;
using namespace migration::test;

// After a reconnection the destination asks again for whatever is
// outstanding, which may be nothing: no frame then (an empty PageRequest is
// malformed, and the source ended the migration on one). Batches larger
// than one frame holds are split.
TEST(DestinationLink, AsksForNothingWithNoFrameAndSplitsLargeBatches) {
  ChannelPair main, urgent;
  boost::asio::io_context io;
  DestinationLink link(io, nullptr);
  link.set_main(std::move(main.a));
  link.set_urgent(std::move(urgent.a));
  link.up(LinkOptions{});
  link.request({});
  std::vector<uint64_t> many;
  for (uint64_t p = 0; p < kMaxRequestPages + 3; p++) many.push_back(p * 2);
  link.request(many);
  Frame first = urgent.b->receive();
  ASSERT_EQ(first.header.type, FrameType::PageRequest);
  auto pages = decode_request(first.payload, 1 << 20);
  ASSERT_EQ(pages.size(), kMaxRequestPages) << "the first frame is the batch's first part, not an empty request";
  EXPECT_EQ(pages.front(), 0u);
  Frame second = urgent.b->receive();
  EXPECT_EQ(decode_request(second.payload, 1 << 20), (std::vector<uint64_t>{kMaxRequestPages * 2,
                                                                            kMaxRequestPages * 2 + 2,
                                                                            kMaxRequestPages * 2 + 4}));
  link.down();
}

}  // namespace
