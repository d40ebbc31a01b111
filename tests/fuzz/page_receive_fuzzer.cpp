// libFuzzer target for the streaming receive of Pages frames: what
// PageStates::receive_pages reads from a real connection straight into guest
// memory, before and during postcopy. The input describes a destination and a
// stream of frames; the harness gives each frame a valid header and CRC
// (unless the input asks for a broken one), so that the fuzzer reaches the
// claiming and completion of pages and not only the checksum.
//
// Input: [config] then frames of
//   [type] [flags: bit 0 urgent, bit 1 last-of-page, bit 7 corrupt CRC]
//   [length: u16 LE] [payload]
// config bit 1: 2 MiB destination pages (else 4 KiB). As on a destination,
// Pages frames are precopy frames until a PostcopyBegin frame comes (its
// payload is not looked at), postcopy frames after it; StaleChunks frames
// make pages missing again.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <sys/mman.h>

#include <cstring>
#include <thread>
#include <vector>

#include "channel.h"
#include "messages.h"
#include "page_states.h"
#include "wire.h"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace migration;

constexpr uint64_t kMemSize = 8ULL << 20;

struct Loopback {
  asio::io_context io;
  tcp::acceptor acceptor{io, tcp::endpoint(asio::ip::address_v4::loopback(), 0)};
};

uint8_t* guest_memory() {
  static uint8_t* mem = static_cast<uint8_t*>(
      ::mmap(nullptr, kMemSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  return mem;
}

std::vector<uint8_t> build_stream(const uint8_t* data, size_t size) {
  std::vector<uint8_t> out;
  for (size_t at = 0; at + 4 <= size;) {
    auto type = static_cast<FrameType>(data[at]);
    uint8_t flags = data[at + 1];
    size_t len = std::min<size_t>(data[at + 2] | data[at + 3] << 8, size - at - 4);
    std::span<const uint8_t> payload(data + at + 4, len);
    auto header = make_header(type, flags & 3, payload);
    if (flags & 0x80) header[16] ^= 1;  // the CRC field
    out.insert(out.end(), header.begin(), header.end());
    out.insert(out.end(), payload.begin(), payload.end());
    at += 4 + len;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static Loopback lo;
  uint64_t page_size = data[0] & 2 ? 2ULL << 20 : 4096;
  std::vector<uint8_t> stream = build_stream(data + 1, size - 1);

  tcp::socket writer(lo.io), reader(lo.io);
  writer.connect(lo.acceptor.local_endpoint());
  lo.acceptor.accept(reader);
  std::thread feed([&] {
    boost::system::error_code ec;
    asio::write(writer, asio::buffer(stream), ec);
    writer.shutdown(tcp::socket::shutdown_send, ec);
  });
  {
    Channel ch(std::move(reader), "fuzz");
    PageStates pages(guest_memory(), guest_memory(), nullptr, kMemSize, page_size);
    bool postcopy = false;
    try {
      for (;;) {
        std::array<uint8_t, kHeaderSize> raw;
        FrameHeader h = ch.receive_header(raw);
        if (h.type == FrameType::Pages) {
          pages.receive_pages(ch, raw, h, postcopy);
          continue;
        }
        std::vector<uint8_t> payload(h.length);
        ch.read_exact(payload);
        verify_crc(raw, payload, h.crc);
        if (h.type == FrameType::StaleChunks && !postcopy) {
          for (const ChunkRange& r : decode_stale_chunks(payload, kMemSize).ranges) pages.mark_stale(r.first, r.count);
        } else if (h.type == FrameType::PostcopyBegin && !postcopy) {
          pages.begin_postcopy(nullptr, nullptr);  // no userfaultfd: states only, nothing mapped
          postcopy = true;
        }
      }
    } catch (const ConnectionError&) {  // the end of the stream
    } catch (const ProtocolError&) {
    }
    ch.shutdown();
  }
  feed.join();
  return 0;
}
