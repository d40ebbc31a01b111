#include "wire.h"

#include <nmmintrin.h>

#include <array>

#include <fmt/format.h>

namespace migration {

namespace {

std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
    t[i] = c;
  }
  return t;
}

uint32_t crc32c_table(uint32_t crc, const uint8_t* p, size_t n) {
  static const std::array<uint32_t, 256> table = make_table();
  for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

// CRC arithmetic in GF(2) modulo the (reflected) CRC32C polynomial, after
// zlib's crc32_combine: multiplying a CRC register by x^(8n) is what feeding
// n zero bytes does to it, which lets CRCs of separate pieces be joined.
constexpr uint32_t kPoly = 0x82f63b78u;

uint32_t multmodp(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31, p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = b & 1 ? (b >> 1) ^ kPoly : b >> 1;
  }
  return p;
}

// x^(8n) mod p, by squaring: x2n[k] = x^(2^k).
uint32_t x8nmodp(uint64_t n) {
  static const std::array<uint32_t, 64> x2n = [] {
    std::array<uint32_t, 64> t{};
    uint32_t p = 1u << 30;  // x^1
    for (auto& e : t) e = p, p = multmodp(p, p);
    return t;
  }();
  uint32_t p = 1u << 31;  // x^0
  for (unsigned k = 3; n; n >>= 1, k++)
    if (n & 1) p = multmodp(x2n[k], p);
  return p;
}

// The SSE4.2 CRC32C instruction has a latency of three cycles and a
// throughput of one, so three independent lanes keep it busy; the lanes are
// then joined by shifting with a table (multiplying by x^(8 * kLane) is
// linear, so four byte lookups do it). 1 GiB pages go through here, on both
// ends, so it matters.
constexpr size_t kLane = 1360;  // three lanes cover 4080 bytes of a 4 KiB chunk

struct LaneShift {
  std::array<std::array<uint32_t, 256>, 4> t;
  LaneShift() {
    uint32_t op = x8nmodp(kLane);
    for (unsigned k = 0; k < 4; k++)
      for (uint32_t b = 0; b < 256; b++) t[k][b] = multmodp(op, b << (8 * k));
  }
  uint32_t operator()(uint32_t x) const {
    return t[0][x & 0xff] ^ t[1][(x >> 8) & 0xff] ^ t[2][(x >> 16) & 0xff] ^ t[3][x >> 24];
  }
};

uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

__attribute__((target("sse4.2"))) uint32_t crc32c_hw(uint32_t crc, const uint8_t* p, size_t n) {
  static const LaneShift shift;
  uint64_t c = crc;
  for (; n >= 3 * kLane; n -= 3 * kLane, p += 3 * kLane) {
    uint64_t c1 = 0, c2 = 0;
    for (size_t i = 0; i < kLane; i += 8) {
      c = _mm_crc32_u64(c, load64(p + i));
      c1 = _mm_crc32_u64(c1, load64(p + kLane + i));
      c2 = _mm_crc32_u64(c2, load64(p + 2 * kLane + i));
    }
    c = shift(shift(static_cast<uint32_t>(c)) ^ static_cast<uint32_t>(c1)) ^ static_cast<uint32_t>(c2);
  }
  for (; n >= 8; n -= 8, p += 8) c = _mm_crc32_u64(c, load64(p));
  auto c32 = static_cast<uint32_t>(c);
  for (; n; n--, p++) c32 = _mm_crc32_u8(c32, *p);
  return c32;
}

void put_le(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t get_le(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

}  // namespace

const char* frame_type_name(FrameType t) {
  static const char* names[] = {"Invalid",  "Hello",         "HelloReply",  "Pages",   "RoundDone", "VmState",
                                "PostcopyBegin", "PageRequest", "Started", "Complete",  "Error",
                                "Heartbeat", "StartedAck", "Received", "StaleChunks", "CompleteAck"};
  auto i = static_cast<uint16_t>(t);
  return i <= kMaxFrameType ? names[i] : "Unknown";
}

uint32_t crc32c(uint32_t crc, std::span<const uint8_t> data) {
  static const bool hw = __builtin_cpu_supports("sse4.2");
  crc = ~crc;
  crc = hw ? crc32c_hw(crc, data.data(), data.size()) : crc32c_table(crc, data.data(), data.size());
  return ~crc;
}

uint32_t crc32c_bytewise(uint32_t crc, std::span<const uint8_t> data) {
  return ~crc32c_table(~crc, data.data(), data.size());
}

uint32_t crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2) { return multmodp(x8nmodp(len2), crc1) ^ crc2; }

std::array<uint8_t, kHeaderSize> make_header(FrameType type, uint32_t flags, std::span<const uint8_t> payload) {
  return make_header(type, flags, payload.size(), crc32c(0, payload));
}

std::array<uint8_t, kHeaderSize> make_header(FrameType type, uint32_t flags, uint64_t length, uint32_t payload_crc) {
  if (length > kMaxPayload)
    throw ProtocolError(fmt::format("{} payload of {} bytes exceeds the {} byte limit", frame_type_name(type),
                                    length, kMaxPayload));
  std::array<uint8_t, kHeaderSize> h{};
  put_le(h.data() + 0, kMagic, 4);
  put_le(h.data() + 4, kVersion, 2);
  put_le(h.data() + 6, static_cast<uint16_t>(type), 2);
  put_le(h.data() + 8, flags, 4);
  put_le(h.data() + 12, length, 4);
  put_le(h.data() + 16, crc32c_combine(crc32c(0, h), payload_crc, length), 4);
  return h;
}

std::vector<uint8_t> encode_frame(FrameType type, uint32_t flags, std::span<const uint8_t> payload) {
  auto h = make_header(type, flags, payload);
  // Sized once and filled: GCC 12 -O3 flags insert() after a 24-byte vector
  // with a false -Warray-bounds.
  std::vector<uint8_t> out(h.size() + payload.size());
  std::copy(h.begin(), h.end(), out.begin());
  std::copy(payload.begin(), payload.end(), out.begin() + static_cast<std::ptrdiff_t>(h.size()));
  return out;
}

FrameHeader decode_header(std::span<const uint8_t, kHeaderSize> b) {
  const uint8_t* h = b.data();
  auto magic = static_cast<uint32_t>(get_le(h, 4));
  if (magic != kMagic) throw ProtocolError(fmt::format("bad frame magic {:#010x} (not a migration stream?)", magic));
  auto version = static_cast<uint16_t>(get_le(h + 4, 2));
  if (version != kVersion)
    throw ProtocolError(fmt::format("peer speaks protocol version {}, this VMM speaks {}", version, kVersion));
  auto type = static_cast<uint16_t>(get_le(h + 6, 2));
  if (type == 0 || type > kMaxFrameType) throw ProtocolError(fmt::format("unknown frame type {}", type));
  FrameHeader fh;
  fh.type = static_cast<FrameType>(type);
  fh.flags = static_cast<uint32_t>(get_le(h + 8, 4));
  fh.length = static_cast<uint32_t>(get_le(h + 12, 4));
  fh.crc = static_cast<uint32_t>(get_le(h + 16, 4));
  if (fh.length > kMaxPayload)
    throw ProtocolError(fmt::format("{} frame announces {} payload bytes, over the {} byte limit",
                                    frame_type_name(fh.type), fh.length, kMaxPayload));
  if (get_le(h + 20, 4) != 0) throw ProtocolError("reserved frame header bytes are not zero");
  return fh;
}

void verify_crc(std::span<const uint8_t, kHeaderSize> header, std::span<const uint8_t> payload, uint32_t expected) {
  std::array<uint8_t, kHeaderSize> h;
  std::memcpy(h.data(), header.data(), kHeaderSize);
  std::memset(h.data() + 16, 0, 4);
  uint32_t crc = crc32c(crc32c(0, h), payload);
  if (crc != expected)
    throw ProtocolError(fmt::format("frame checksum mismatch: computed {:#010x}, frame says {:#010x}", crc, expected));
}

void ByteWriter::str(const std::string& s) {
  u32(static_cast<uint32_t>(s.size()));
  bytes({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

uint64_t ByteReader::le(size_t n) {
  if (remaining() < n)
    throw ProtocolError(fmt::format("{} payload is truncated: needs {} more bytes at offset {}, has {}", what_, n,
                                    pos_, remaining()));
  uint64_t v = get_le(data_.data() + pos_, n);
  pos_ += n;
  return v;
}

std::span<const uint8_t> ByteReader::bytes(size_t n) {
  if (remaining() < n)
    throw ProtocolError(fmt::format("{} payload is truncated: needs {} bytes at offset {}, has {}", what_, n, pos_,
                                    remaining()));
  auto s = data_.subspan(pos_, n);
  pos_ += n;
  return s;
}

std::string ByteReader::str(size_t max_len) {
  uint32_t n = u32();
  if (n > max_len) throw ProtocolError(fmt::format("{}: string of {} bytes exceeds {}", what_, n, max_len));
  auto b = bytes(n);
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

void ByteReader::expect_end() const {
  if (remaining() != 0) throw ProtocolError(fmt::format("{} payload has {} trailing bytes", what_, remaining()));
}

}  // namespace migration
