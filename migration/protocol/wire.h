// The migration wire format: a fixed 24-byte little-endian frame header
//   {u32 magic, u16 version, u16 type, u32 flags, u32 length, u32 crc32c, u32 reserved}
// then `length` payload bytes. The CRC32C covers the header (crc field zero)
// and the payload. Lengths are bounded before anything is allocated, type 0 is
// invalid so zeroed bytes never parse, and every decode is a pure function that
// throws ProtocolError on malformed input.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace migration {

class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr uint32_t kMagic = 0x4d435047;  // "GPCM" little-endian
inline constexpr uint16_t kVersion = 4;  // 2: PostcopyBegin without a bitmap, StaleChunks; 3: vCPUs, irqchip;
                                         // 4: CompleteAck
inline constexpr size_t kHeaderSize = 24;
inline constexpr uint32_t kMaxPayload = 8u << 20;

enum class FrameType : uint16_t {
  Invalid = 0,
  Hello = 1,          // source -> destination, first frame on every connection
  HelloReply = 2,     // destination -> source: accepted or refused, and why
  Pages = 3,          // page data and zero markers for a run of 4 KiB chunks
  RoundDone = 4,      // end of a precopy round
  VmState = 5,        // vCPU + device state; the source's vCPUs are stopped
  PostcopyBegin = 6,  // which destination pages are still missing
  PageRequest = 7,    // destination -> source, urgent connection
  Started = 8,        // destination -> source: the guest runs there now
  Complete = 9,       // destination -> source: every page is present
  Error = 10,         // either way: the sender gives up, with a reason
  Heartbeat = 11,     // either way on the main connection during postcopy: the link is alive
  StartedAck = 12,    // source -> destination: it got Started and will never resume the guest
  Received = 13,      // destination -> source after a reconnection: which pages it holds
  StaleChunks = 14,   // source -> destination at switchover: chunks written since they were sent
  CompleteAck = 15,   // source -> destination: it heard Complete and lets go of the migration
};
inline constexpr uint16_t kMaxFrameType = 15;

const char* frame_type_name(FrameType t);

struct FrameHeader {
  FrameType type = FrameType::Invalid;
  uint32_t flags = 0;
  uint32_t length = 0;
  uint32_t crc = 0;
};

uint32_t crc32c(uint32_t crc, std::span<const uint8_t> data);
// The CRC32C of A followed by B, from crc32c(0, A), crc32c(0, B) and B's
// length: lets a sender checksum page data where it lies, chunk by chunk.
uint32_t crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2);
// A byte-at-a-time reference, for tests of the fast one.
uint32_t crc32c_bytewise(uint32_t crc, std::span<const uint8_t> data);

// The header for `payload`, CRC filled in (send it, then the payload).
std::array<uint8_t, kHeaderSize> make_header(FrameType type, uint32_t flags, std::span<const uint8_t> payload);
// The same from the payload's length and crc32c(0, payload), for a payload
// that is sent from where it lies rather than from one buffer.
std::array<uint8_t, kHeaderSize> make_header(FrameType type, uint32_t flags, uint64_t length, uint32_t payload_crc);
// Encodes header + payload into one buffer (CRC filled in).
std::vector<uint8_t> encode_frame(FrameType type, uint32_t flags, std::span<const uint8_t> payload);
// Validates magic, version, type and length bound; does not check the CRC.
FrameHeader decode_header(std::span<const uint8_t, kHeaderSize> bytes);
// Checks the CRC of a received frame.
void verify_crc(std::span<const uint8_t, kHeaderSize> header, std::span<const uint8_t> payload, uint32_t expected);

// Little-endian payload building and bounds-checked parsing.
class ByteWriter {
 public:
  void u8(uint8_t v) { buf_.push_back(v); }
  void u16(uint16_t v) { le(v); }
  void u32(uint32_t v) { le(v); }
  void u64(uint64_t v) { le(v); }
  void bytes(std::span<const uint8_t> b) { buf_.insert(buf_.end(), b.begin(), b.end()); }
  void str(const std::string& s);
  std::vector<uint8_t>& buffer() { return buf_; }

 private:
  template <typename T>
  void le(T v) {
    for (size_t i = 0; i < sizeof(T); i++) buf_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> buf_;
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> data, const char* what) : data_(data), what_(what) {}
  uint8_t u8() { return static_cast<uint8_t>(le(1)); }
  uint16_t u16() { return static_cast<uint16_t>(le(2)); }
  uint32_t u32() { return static_cast<uint32_t>(le(4)); }
  uint64_t u64() { return le(8); }
  std::span<const uint8_t> bytes(size_t n);
  std::string str(size_t max_len);
  size_t remaining() const { return data_.size() - pos_; }
  void expect_end() const;

 private:
  uint64_t le(size_t n);
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
  const char* what_;
};

// A KVM struct as its x86 KVM ABI bytes, preceded by its length: a reader
// built against another struct size refuses it instead of misreading it.
template <typename T>
void put_struct(ByteWriter& w, const T& v) {
  w.u32(sizeof v);
  w.bytes({reinterpret_cast<const uint8_t*>(&v), sizeof v});
}

template <typename T>
void get_struct(ByteReader& r, T& v, const char* name) {
  uint32_t n = r.u32();
  if (n != sizeof v) throw ProtocolError(fmt::format("{} is {} bytes, expected {}", name, n, sizeof v));
  std::memcpy(&v, r.bytes(n).data(), n);
}

}  // namespace migration
