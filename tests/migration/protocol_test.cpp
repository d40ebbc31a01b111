// The wire format, the channel and the message codecs, including malformed and hostile input.
#include <cstring>
#include <random>
#include <thread>

#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <gtest/gtest.h>

#include "channel.h"
#include "loopback.h"
#include "messages.h"
#include "wire.h"

namespace {

using namespace migration;
using migration::test::loopback_pair;

std::span<const uint8_t, kHeaderSize> header_of(const std::vector<uint8_t>& frame) {
  return std::span<const uint8_t, kHeaderSize>(frame.data(), kHeaderSize);
}

FrameHeader decode_and_check(const std::vector<uint8_t>& frame) {
  FrameHeader h = decode_header(header_of(frame));
  std::span<const uint8_t> payload(frame.data() + kHeaderSize, frame.size() - kHeaderSize);
  if (payload.size() != h.length) throw ProtocolError("length mismatch");
  verify_crc(header_of(frame), payload, h.crc);
  return h;
}

TEST(Wire, FrameRoundTrips) {
  std::vector<uint8_t> payload = {1, 2, 3, 4, 5};
  auto frame = encode_frame(FrameType::RoundDone, 7, payload);
  FrameHeader h = decode_and_check(frame);
  EXPECT_EQ(h.type, FrameType::RoundDone);
  EXPECT_EQ(h.flags, 7u);
  EXPECT_EQ(h.length, 5u);
}

TEST(Wire, Crc32cMatchesTheStandardCheckValue) {
  const char* s = "123456789";
  EXPECT_EQ(crc32c(0, {reinterpret_cast<const uint8_t*>(s), 9}), 0xe3069283u);
}

// The fast CRC runs three lanes over 4080-byte blocks and joins them; every
// length around those blocks, at odd alignments, must agree with the
// byte-at-a-time definition.
TEST(Wire, Crc32cLanesAgreeWithTheBytewiseDefinition) {
  std::vector<uint8_t> buf(3 * 4096 + 64);
  uint64_t x = 88172645463325252ULL;
  for (auto& b : buf) x ^= x << 13, x ^= x >> 7, x ^= x << 17, b = static_cast<uint8_t>(x);
  for (size_t len : {0, 1, 7, 8, 4079, 4080, 4081, 4096, 8160, 8167, 12288})
    for (size_t align : {0, 3}) {
      std::span<const uint8_t> s(buf.data() + align, len);
      EXPECT_EQ(crc32c(0, s), crc32c_bytewise(0, s)) << len << " bytes at +" << align;
      EXPECT_EQ(crc32c(0x12345678, s), crc32c_bytewise(0x12345678, s)) << len << " bytes, seeded";
    }
}

TEST(Wire, Crc32cCombineJoinsTwoPieces) {
  std::vector<uint8_t> buf(10000);
  for (size_t i = 0; i < buf.size(); i++) buf[i] = static_cast<uint8_t>(i * 31 + 7);
  std::span<const uint8_t> all(buf);
  for (size_t cut : {0, 1, 24, 4096, 9999, 10000})
    EXPECT_EQ(crc32c_combine(crc32c(0, all.first(cut)), crc32c(0, all.subspan(cut)), buf.size() - cut),
              crc32c(0, all))
        << "cut at " << cut;
}

TEST(Wire, ZeroedBytesNeverParse) {
  std::vector<uint8_t> zeros(kHeaderSize, 0);
  EXPECT_THROW(decode_header(header_of(zeros)), ProtocolError);
}

TEST(Wire, UnknownTypeIsRefused) {
  auto frame = encode_frame(FrameType::Complete, 0, {});
  frame[6] = 0x63;  // type 99
  try {
    decode_header(header_of(frame));
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown frame type 99"), std::string::npos);
  }
}

TEST(Wire, WrongVersionIsRefusedWithBothVersions) {
  auto frame = encode_frame(FrameType::Complete, 0, {});
  frame[4] = 9;
  try {
    decode_header(header_of(frame));
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("version 9"), std::string::npos) << e.what();
  }
}

TEST(Wire, OversizedLengthIsRefusedBeforeAllocating) {
  auto frame = encode_frame(FrameType::Pages, 0, {});
  uint32_t huge = 0xfffffff0;
  std::memcpy(frame.data() + 12, &huge, 4);
  EXPECT_THROW(decode_header(header_of(frame)), ProtocolError);
}

TEST(Wire, CorruptedPayloadFailsTheChecksum) {
  std::vector<uint8_t> payload(100, 0x42);
  auto frame = encode_frame(FrameType::Pages, 0, payload);
  frame[kHeaderSize + 50] ^= 1;
  EXPECT_THROW(decode_and_check(frame), ProtocolError);
}

TEST(Wire, CorruptedHeaderFlagsFailTheChecksum) {
  auto frame = encode_frame(FrameType::Pages, 0, {});
  frame[8] ^= 1;
  EXPECT_THROW(decode_and_check(frame), ProtocolError);
}

TEST(Messages, HelloRoundTripsAndRejectsUnknownRoleOrMode) {
  Hello h{Role::Urgent, 42, Mode::Postcopy, 1 << 30, "gmem", 4096};
  auto p = encode(h);
  Hello d = decode_hello(p);
  EXPECT_EQ(d.role, Role::Urgent);
  EXPECT_EQ(d.session, 42u);
  EXPECT_EQ(d.mode, Mode::Postcopy);
  EXPECT_EQ(d.src_backend, "gmem");
  p[0] = 9;
  EXPECT_THROW(decode_hello(p), ProtocolError);
  p = encode(h);
  p[9] = 7;  // mode
  EXPECT_THROW(decode_hello(p), ProtocolError);
}

TEST(Messages, HelloCarriesTheResumeFlag) {
  Hello h{Role::Main, 7, Mode::Postcopy, 1 << 20, "shmem", 4096, true};
  auto p = encode(h);
  EXPECT_TRUE(decode_hello(p).resume);
  h.resume = false;
  EXPECT_FALSE(decode_hello(encode(h)).resume);
  p.back() = 2;
  EXPECT_THROW(decode_hello(p), ProtocolError);
}

TEST(Messages, ReceivedRoundTripsAndIsBoundedByThePageCount) {
  Received m{64, 70, vmm::Bitmap::from_words({~0ULL, 0x15}, 70)};
  Received d = decode_received(encode(m), 200);
  EXPECT_EQ(d.first_page, 64u);
  EXPECT_EQ(d.npages, 70u);
  EXPECT_EQ(d.bits, m.bits);
  EXPECT_THROW(decode_received(encode(m), 100), ProtocolError);             // past the end
  EXPECT_THROW(decode_received(encode(Received{3, 1, vmm::Bitmap(1, true)}), 200), ProtocolError);  // not word-aligned
  auto p = encode(m);
  auto past_end = p;
  past_end[16 + 8] |= 1 << 6;  // bit 70 of 70: {first, npages}, word 0, then word 1's low byte
  EXPECT_THROW(decode_received(past_end, 200), ProtocolError);
  for (size_t n = 0; n < p.size(); n++) EXPECT_THROW(decode_received({p.data(), n}, 200), ProtocolError);
}

TEST(Messages, TruncatedPayloadsAreRefusedAtEveryLength) {
  auto p = encode(Hello{Role::Main, 1, Mode::Hybrid, 1 << 20, "shmem", 4096});
  for (size_t n = 0; n < p.size(); n++)
    EXPECT_THROW(decode_hello({p.data(), n}), ProtocolError) << "length " << n;
  p.push_back(0);
  EXPECT_THROW(decode_hello(p), ProtocolError) << "trailing bytes";
}

TEST(Messages, StringLengthIsBoundedBeforeAllocating) {
  ByteWriter w;
  w.u8(1);
  w.str(std::string(10000, 'x'));
  EXPECT_THROW(decode_hello_reply(w.buffer()), ProtocolError);
}

TEST(Messages, PagesCarryDataZeroMarkersAndSkips) {
  std::vector<uint8_t> mem(8 * kChunk, 0);
  mem[0] = 1;           // chunk 0: data
  mem[3 * kChunk] = 2;  // chunk 3: data
  vmm::Bitmap dest_nonzero(8);
  dest_nonzero.set(1);  // chunk 1 is zero here but not on the destination
  PagesStats st;
  auto payload = encode_pages(0, 8, mem.data(), &dest_nonzero, st);
  EXPECT_EQ(st.data, 2u);
  EXPECT_EQ(st.zero_markers, 1u);
  EXPECT_EQ(st.skipped, 5u);
  PagesView v = decode_pages(payload, mem.size());
  EXPECT_TRUE(v.is_data(0));
  EXPECT_TRUE(v.is_zero(1));
  EXPECT_FALSE(v.is_data(2) || v.is_zero(2));
  EXPECT_EQ(v.data.size(), 2 * kChunk);
  EXPECT_EQ(v.data[kChunk], 2);
}

TEST(Messages, EncoderRecordsWhatTheDestinationHoldsAfterTheFrame) {
  std::vector<uint8_t> mem(4 * kChunk, 0);
  mem[2 * kChunk] = 7;                      // chunk 2 becomes data
  vmm::Bitmap nonzero = vmm::Bitmap::from_words({0b0011}, 4);  // chunks 0 and 1 were non-zero there
  PagesStats st;
  uint32_t n = 0;
  encode_pages_bounded(0, 4, 1, mem.data(), &nonzero, nullptr, st, n, &nonzero);
  EXPECT_EQ(n, 4u);
  EXPECT_EQ(st.zero_markers, 2u);
  EXPECT_EQ(nonzero.words()[0], 0b0100u) << "zero markers clear, data sets, skipped stays clear";
}

// The page server sends frames from guest memory (prefix, then runs of data
// chunks, CRC taken during the zero check). What arrives must be the very
// frame the copying encoder builds, checksum included, also when the data
// limit ends the frame early at a page boundary (here 3 pages of 300 chunks).
TEST(Messages, GatheredPagesFrameArrivesAsTheCopiedOne) {
  constexpr uint32_t kChunks = 1100;
  std::vector<uint8_t> mem(kChunks * kChunk);
  for (size_t i = 0; i < mem.size(); i++) mem[i] = static_cast<uint8_t>(i * 131 + 17);
  std::memset(mem.data() + 5 * kChunk, 0, 2 * kChunk);  // two zero chunks: the data comes in two runs
  vmm::Bitmap dest_nonzero(kChunks, true);
  PagesStats st_copy, st_gather;
  uint32_t n = 0;
  auto copied = encode_pages_bounded(0, kChunks, 300, mem.data(), &dest_nonzero, nullptr, st_copy, n);
  PagesGather g = plan_pages_bounded(0, kChunks, 300, mem.data(), &dest_nonzero, nullptr, st_gather);
  EXPECT_EQ(n, 900u);
  EXPECT_EQ(g.count, 900u);
  EXPECT_EQ(g.data.size(), 2u) << "adjacent data chunks join into runs";
  EXPECT_EQ(st_gather.zero_markers, 2u);
  EXPECT_EQ(g.data_bytes, 898u * kChunk);

  boost::asio::io_context io;
  auto [a, b] = loopback_pair(io);
  Channel tx(std::move(a), "rx"), rx(std::move(b), "tx");
  std::thread sender([&] { tx.send_gather(FrameType::Pages, 0, g.prefix, g.data, g.data_bytes, g.data_crc); });
  Frame f = rx.receive();  // verifies the CRC
  sender.join();
  EXPECT_EQ(f.payload, copied);

  g.data_crc ^= 1;  // a wrong data CRC must not pass
  std::thread bad([&] { tx.send_gather(FrameType::Pages, 0, g.prefix, g.data, g.data_bytes, g.data_crc); });
  EXPECT_THROW(rx.receive(), ProtocolError);
  bad.join();
}

TEST(Messages, PagesOutsideGuestMemoryAreRefused) {
  std::vector<uint8_t> mem(4 * kChunk, 1);
  PagesStats st;
  auto payload = encode_pages(0, 4, mem.data(), nullptr, st);
  EXPECT_NO_THROW(decode_pages(payload, 4 * kChunk));
  EXPECT_THROW(decode_pages(payload, 3 * kChunk), ProtocolError);
  uint64_t far = 1ULL << 62;
  std::memcpy(payload.data(), &far, 8);
  EXPECT_THROW(decode_pages(payload, 4 * kChunk), ProtocolError);
}

TEST(Messages, PagesWhoseBitmapsDisagreeWithTheDataAreRefused) {
  std::vector<uint8_t> mem(2 * kChunk, 1);
  PagesStats st;
  auto payload = encode_pages(0, 2, mem.data(), nullptr, st);
  payload.resize(payload.size() - 1);
  EXPECT_THROW(decode_pages(payload, 2 * kChunk), ProtocolError);
  payload = encode_pages(0, 2, mem.data(), nullptr, st);
  payload[16 + 8] = 1;  // zero bit for chunk 0, which is also a data chunk
  EXPECT_THROW(decode_pages(payload, 2 * kChunk), ProtocolError);
}

TEST(Messages, PagesPrefixAnnouncesItsOwnSizeAndDataCount) {
  std::vector<uint8_t> mem(130 * kChunk, 0);
  mem[129 * kChunk] = 9;
  PagesStats st;
  auto payload = encode_pages(0, 130, mem.data(), nullptr, st);
  size_t prefix = pages_prefix_size(std::span<const uint8_t, kPagesFixedSize>(payload.data(), kPagesFixedSize));
  EXPECT_EQ(prefix, kPagesFixedSize + 2 * 8 * 3);  // 130 bits: 3 words per bitmap
  PagesView v = decode_pages_prefix({payload.data(), prefix}, mem.size());
  EXPECT_EQ(data_chunks(v), 1u);
  EXPECT_EQ(payload.size(), prefix + kChunk);
  payload[8] = 0;  // count 0
  payload[9] = 0;
  EXPECT_THROW(pages_prefix_size(std::span<const uint8_t, kPagesFixedSize>(payload.data(), kPagesFixedSize)),
               ProtocolError);
}

TEST(Messages, RequestsForPagesBeyondTheEndAreRefused) {
  auto p = encode_request({0, 5});
  EXPECT_EQ(decode_request(p, 6), (std::vector<uint64_t>{0, 5}));
  EXPECT_THROW(decode_request(p, 5), ProtocolError);
  EXPECT_THROW(decode_request(encode_request({}), 5), ProtocolError);
}

TEST(Messages, PostcopyBeginMustCountTheDestinationsPages) {
  PostcopyBegin b{4096, 16, 3, 7};
  auto p = encode(b);
  EXPECT_EQ(decode_postcopy_begin(p, 16 * 4096).stale_ranges, 3u);
  EXPECT_THROW(decode_postcopy_begin(p, 32 * 4096), ProtocolError);
  p.push_back(0);  // trailing byte
  EXPECT_THROW(decode_postcopy_begin(p, 16 * 4096), ProtocolError);
}

TEST(Messages, StaleChunksStayInsideGuestMemory) {
  StaleChunks m{{{0, 2}, {10, 6}}};
  auto d = decode_stale_chunks(encode(m), 16 * 4096);
  ASSERT_EQ(d.ranges.size(), 2u);
  EXPECT_EQ(d.ranges[1].first, 10u);
  EXPECT_EQ(d.ranges[1].count, 6u);
  EXPECT_THROW(decode_stale_chunks(encode(m), 15 * 4096), ProtocolError);                     // 10+6 > 15
  EXPECT_THROW(decode_stale_chunks(encode(StaleChunks{{{3, 0}}}), 16 * 4096), ProtocolError);  // empty range
  EXPECT_THROW(decode_stale_chunks(encode(StaleChunks{}), 16 * 4096), ProtocolError);          // no range
  auto p = encode(m);
  for (size_t n = 0; n < p.size(); n++) EXPECT_THROW(decode_stale_chunks({p.data(), n}, 16 * 4096), ProtocolError);
}

// Random bytes and random corruptions of valid payloads must only ever throw
// ProtocolError: never crash, never read out of bounds (run under ASan too).
TEST(Messages, RandomInputOnlyEverThrowsProtocolError) {
  std::mt19937_64 rng(12345);
  std::vector<uint8_t> mem(4 * kChunk, 3);
  PagesStats st;
  std::vector<std::vector<uint8_t>> seeds = {
      encode(Hello{Role::Main, 1, Mode::Hybrid, 1 << 20, "shmem", 4096}), encode_pages(0, 4, mem.data(), nullptr, st),
      encode(PostcopyBegin{4096, 4, 0, 1}), encode(StaleChunks{{{1, 2}}}), encode_request({1, 2, 3}),
      encode_error("x")};
  for (int iter = 0; iter < 20000; iter++) {
    std::vector<uint8_t> p = seeds[iter % seeds.size()];
    if (iter % 7 == 0) p.resize(rng() % 64);
    for (int k = 0; k < 4 && !p.empty(); k++) p[rng() % p.size()] = static_cast<uint8_t>(rng());
    if (!p.empty() && iter % 3 == 0) p.resize(rng() % p.size());
    try {
      decode_hello(p);
    } catch (const ProtocolError&) {
    }
    try {
      decode_pages(p, mem.size());
    } catch (const ProtocolError&) {
    }
    try {
      decode_pages_prefix(p, mem.size());
    } catch (const ProtocolError&) {
    }
    try {
      decode_postcopy_begin(p, mem.size());
    } catch (const ProtocolError&) {
    }
    try {
      decode_request(p, 4);
    } catch (const ProtocolError&) {
    }
    try {
      decode_error(p);
    } catch (const ProtocolError&) {
    }
  }
  SUCCEED();
}

TEST(Channel, UrgentConnectionCarriesExpeditedForwardingAndInteractivePriority) {
  boost::asio::io_context io;
  auto [a, b] = loopback_pair(io);
  int fd = a.native_handle();
  Channel ch(std::move(a), "peer");
  auto get = [fd](int level, int name) {
    int v = -1;
    socklen_t len = sizeof v;
    EXPECT_EQ(::getsockopt(fd, level, name, &v, &len), 0);
    return v;
  };
  EXPECT_EQ(get(SOL_SOCKET, SO_PRIORITY), 0);
  ASSERT_EQ(ch.mark_urgent(), "");
  EXPECT_EQ(get(IPPROTO_IP, IP_TOS), 0xb8) << "DSCP 46 (EF) in the TOS byte";
  EXPECT_EQ(get(SOL_SOCKET, SO_PRIORITY), 6) << "TC_PRIO_INTERACTIVE, pfifo_fast's first band";
}

}  // namespace
