// TLS channels over a real loopback connection: the key file's format, a
// handshake with the same key, with another key and against plaintext, and
// frames in both directions while several threads send and one receives.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <future>
#include <thread>

#include "channel.h"
#include "error.h"
#include "messages.h"
#include "tls.h"

namespace migration {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

std::vector<uint8_t> key(uint8_t fill) { return std::vector<uint8_t>(32, fill); }

struct Pair {
  asio::io_context io;
  std::unique_ptr<Channel> client, server;
  Pair() {
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    tcp::socket c(io), s(io);
    c.connect(acceptor.local_endpoint());
    acceptor.accept(s);
    client = std::make_unique<Channel>(std::move(c), "server");
    server = std::make_unique<Channel>(std::move(s), "client");
  }
  // Both handshakes at once; returns the errors ("" for none), client first.
  std::pair<std::string, std::string> handshake(TlsConfig* client_key, TlsConfig* server_key) {
    auto run = [](Channel& ch, TlsConfig* k, bool as_server) -> std::string {
      try {
        if (k) ch.start_tls(*k, as_server, 3s);
        else ch.send(FrameType::Hello, 0, encode(Hello{}));
        return "";
      } catch (const std::exception& e) {
        ch.shutdown();
        return e.what();
      }
    };
    auto s = std::async(std::launch::async, [&] { return run(*server, server_key, true); });
    std::string c = run(*client, client_key, false);
    return {c, s.get()};
  }
};

TEST(TlsChannel, KeyFileTextIsHexOfSixteenBytesOrMore) {
  EXPECT_EQ(parse_psk_text(" 00112233445566778899aabbccddeeff\n", "k").size(), 16u);
  EXPECT_THROW(parse_psk_text("0011", "k"), vmm::Error);                                // too short
  EXPECT_THROW(parse_psk_text("00112233445566778899aabbccddeeff0", "k"), vmm::Error);   // odd
  EXPECT_THROW(parse_psk_text("00112233445566778899aabbccddeefg", "k"), vmm::Error);    // not hex
  EXPECT_THROW(TlsConfig::from_file("/nonexistent/key"), vmm::Error);
}

TEST(TlsChannel, TheSameKeyCarriesFramesBothWaysWhileThreadsSendAtOnce) {
  auto cfg = TlsConfig::from_key(key(7));
  Pair p;
  auto [c, s] = p.handshake(cfg.get(), cfg.get());
  ASSERT_EQ(c, "");
  ASSERT_EQ(s, "");
  EXPECT_TRUE(p.client->tls());
  EXPECT_EQ(p.client->tls_cipher(), "TLS_AES_128_GCM_SHA256");
  // Four threads send 200 frames each (payloads up to 40 KiB, so records
  // split), while the receiving side also sends: no frame may be lost,
  // reordered within a sender, or corrupted (the CRC checks).
  constexpr int kThreads = 4, kFrames = 200;
  std::vector<std::thread> senders;
  for (int t = 0; t < kThreads; t++)
    senders.emplace_back([&, t] {
      for (int i = 0; i < kFrames; i++) {
        std::vector<uint8_t> payload(static_cast<size_t>(1 + (i * 977) % 40000), static_cast<uint8_t>(t));
        payload[0] = static_cast<uint8_t>(t);
        p.client->send(FrameType::Heartbeat, static_cast<uint32_t>(t << 16 | i), payload);
      }
    });
  std::thread back([&] {
    for (int i = 0; i < kFrames; i++) p.server->send(FrameType::StartedAck, static_cast<uint32_t>(i), {});
  });
  std::vector<int> next(kThreads, 0);
  for (int n = 0; n < kThreads * kFrames; n++) {
    Frame f = p.server->receive();
    int t = static_cast<int>(f.header.flags >> 16), i = static_cast<int>(f.header.flags & 0xffff);
    ASSERT_LT(t, kThreads);
    EXPECT_EQ(i, next[t]++);
    ASSERT_FALSE(f.payload.empty());
    EXPECT_EQ(f.payload[0], t);
  }
  for (int i = 0; i < kFrames; i++) EXPECT_EQ(p.client->receive().header.flags, static_cast<uint32_t>(i));
  for (auto& t : senders) t.join();
  back.join();
}

TEST(TlsChannel, AnotherKeyFailsTheHandshakeOnBothSides) {
  auto a = TlsConfig::from_key(key(1)), b = TlsConfig::from_key(key(2));
  Pair p;
  auto [c, s] = p.handshake(a.get(), b.get());
  EXPECT_NE(c.find("--psk-file differs"), std::string::npos) << c;
  EXPECT_NE(s.find("--psk-file differs"), std::string::npos) << s;
}

TEST(TlsChannel, APlaintextPeerIsToldApartFromATlsOne) {
  auto cfg = TlsConfig::from_key(key(3));
  {
    Pair p;  // the server expects TLS and sees a plaintext frame
    p.client->send(FrameType::Hello, 0, encode(Hello{}));
    EXPECT_TRUE(p.server->peer_sent_plaintext_frame(2s));
  }
  {
    Pair p;  // the server has no key and receives a ClientHello
    std::thread t([&] {
      try {
        p.client->start_tls(*cfg, false, 2s);
      } catch (const ConnectionError&) {
      }
    });
    std::array<uint8_t, kHeaderSize> raw;
    try {
      p.server->receive_header(raw);
      ADD_FAILURE() << "a ClientHello decoded as a frame header";
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("speaks TLS"), std::string::npos) << e.what();
    }
    p.server->shutdown();
    t.join();
  }
}

TEST(TlsChannel, SilenceDuringTheHandshakeEndsItAtTheDeadline) {
  auto cfg = TlsConfig::from_key(key(4));
  Pair p;
  auto t0 = std::chrono::steady_clock::now();
  try {
    p.server->start_tls(*cfg, true, 300ms);
    ADD_FAILURE() << "a handshake with a silent peer succeeded";
  } catch (const ConnectionError& e) {
    EXPECT_NE(std::string(e.what()).find("did not finish in time"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

}  // namespace
}  // namespace migration
