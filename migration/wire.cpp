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

// SSE4.2 has a CRC32C instruction; 1 GiB pages go through here, so it matters.
__attribute__((target("sse4.2"))) uint32_t crc32c_hw(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
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
                                "PostcopyBegin", "PageRequest", "Started", "Complete",  "Error"};
  auto i = static_cast<uint16_t>(t);
  return i <= kMaxFrameType ? names[i] : "Unknown";
}

uint32_t crc32c(uint32_t crc, std::span<const uint8_t> data) {
  static const bool hw = __builtin_cpu_supports("sse4.2");
  crc = ~crc;
  crc = hw ? crc32c_hw(crc, data.data(), data.size()) : crc32c_table(crc, data.data(), data.size());
  return ~crc;
}

std::array<uint8_t, kHeaderSize> make_header(FrameType type, uint32_t flags, std::span<const uint8_t> payload) {
  if (payload.size() > kMaxPayload)
    throw ProtocolError(fmt::format("{} payload of {} bytes exceeds the {} byte limit", frame_type_name(type),
                                    payload.size(), kMaxPayload));
  std::array<uint8_t, kHeaderSize> h{};
  put_le(h.data() + 0, kMagic, 4);
  put_le(h.data() + 4, kVersion, 2);
  put_le(h.data() + 6, static_cast<uint16_t>(type), 2);
  put_le(h.data() + 8, flags, 4);
  put_le(h.data() + 12, payload.size(), 4);
  uint32_t crc = crc32c(crc32c(0, h), payload);
  put_le(h.data() + 16, crc, 4);
  return h;
}

std::vector<uint8_t> encode_frame(FrameType type, uint32_t flags, std::span<const uint8_t> payload) {
  auto h = make_header(type, flags, payload);
  std::vector<uint8_t> out(h.begin(), h.end());
  out.insert(out.end(), payload.begin(), payload.end());
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
