// Receiving a Pages frame straight into guest memory: the prefix (offset,
// count, bitmaps) is read first, then one scatter read places every data chunk
// at its address in the alias view or the staging buffer (or, for a page another copy already
// claimed, in a scratch buffer), then the CRC over all of it is checked before
// any page is marked present or mapped.
#include <array>
#include <cstring>

#include <fmt/format.h>

#include "channel.h"
#include "page_states.h"

namespace migration {

namespace {

std::array<uint8_t, kHeaderSize> crc_header(const std::array<uint8_t, kHeaderSize>& raw) {
  auto h = raw;
  std::memset(h.data() + 16, 0, 4);  // the CRC field is zero while it is computed
  return h;
}

}  // namespace

uint64_t PageStates::receive_pages(Channel& ch, const std::array<uint8_t, kHeaderSize>& raw, const FrameHeader& h,
                                   bool postcopy) {
  if (h.length < kPagesFixedSize) throw ProtocolError("Pages frame shorter than its fixed part");
  std::vector<uint8_t> prefix(kPagesFixedSize);
  ch.read_exact(prefix);
  size_t prefix_size = pages_prefix_size(std::span<const uint8_t, kPagesFixedSize>(prefix.data(), kPagesFixedSize));
  if (h.length < prefix_size) throw ProtocolError("Pages frame shorter than its bitmaps");
  prefix.resize(prefix_size);
  ch.read_exact({prefix.data() + kPagesFixedSize, prefix_size - kPagesFixedSize});
  PagesView v = decode_pages_prefix(prefix, mem_size_);
  uint64_t ndata = data_chunks(v);
  if (h.length != prefix_size + ndata * kChunk)
    throw ProtocolError(fmt::format("Pages frame is {} bytes but its bitmaps announce {} data chunks", h.length,
                                    ndata));
  bool whole = false;
  std::vector<bool> mine = postcopy ? ledger_.claim(v, h.flags, whole) : std::vector<bool>();
  uint64_t page_size = ledger_.page_size(), first_page = v.offset / page_size;
  auto writable = [&](uint32_t i) {
    return !postcopy || mine[(v.offset + uint64_t{i} * kChunk) / page_size - first_page];
  };
  try {
    std::vector<boost::asio::mutable_buffer> bufs;
    std::vector<uint8_t*> targets;
    std::vector<uint8_t> scratch;  // data of pages another copy claimed: read, checked, dropped
    size_t scratch_used = 0, dropped = 0;
    for (uint32_t i = 0; i < v.count; i++) dropped += v.is_data(i) && !writable(i);
    scratch.resize(dropped * kChunk);
    for (uint32_t i = 0; i < v.count; i++) {
      if (!v.is_data(i)) continue;
      uint8_t* t = writable(i) ? write_base_ + v.offset + uint64_t{i} * kChunk : scratch.data() + scratch_used++ * kChunk;
      targets.push_back(t);
      bufs.emplace_back(t, kChunk);
    }
    ch.read_scatter(bufs, ndata * kChunk);
    uint32_t crc = crc32c(crc32c(0, crc_header(raw)), prefix);
    for (uint8_t* t : targets) crc = crc32c(crc, {t, kChunk});
    if (crc != h.crc) throw ProtocolError(fmt::format("Pages frame checksum mismatch at offset {:#x}", v.offset));
  } catch (...) {
    if (postcopy && whole) ledger_.release(v, mine);  // a lost link, a bad frame: the pages come again
    throw;
  }
  uint64_t received = 0, skipped = 0;  // counted locally: a 1 GiB page is 262,144 chunks
  for (uint32_t i = 0; i < v.count; i++) {
    if (!writable(i)) continue;
    if (v.is_zero(i)) std::memset(write_base_ + v.offset + uint64_t{i} * kChunk, 0, kChunk);
    else if (v.is_data(i)) received++;
    else skipped++;
  }
  received_ += received;
  skipped_ += skipped;
  if (!postcopy) {
    ledger_.cover(v);
    return 0;
  }
  return complete_pages(v, h.flags, whole, mine);
}

}  // namespace migration
