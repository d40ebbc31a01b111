#include "messages.h"

#include <algorithm>

#include <bit>
#include <stdexcept>

#include <fmt/format.h>

namespace migration {

namespace {

constexpr size_t kMaxString = 4096;

void check_mode(uint8_t m) {
  if (m < 1 || m > 3) throw ProtocolError(fmt::format("unknown migration mode {}", m));
}

vmm::Bitmap read_bits(ByteReader& r, uint64_t nbits) {
  std::vector<uint64_t> w(vmm::Bitmap::words_for(nbits));
  for (auto& x : w) x = r.u64();
  try {
    return vmm::Bitmap::from_words(std::move(w), nbits);
  } catch (const std::invalid_argument& e) {
    throw ProtocolError(e.what());
  }
}

void write_bits(ByteWriter& w, const vmm::Bitmap& bits) {
  for (uint64_t x : bits.words()) w.u64(x);
}

}  // namespace

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::Precopy: return "precopy";
    case Mode::Postcopy: return "postcopy";
    case Mode::Hybrid: return "hybrid";
  }
  return "?";
}

std::vector<uint8_t> encode(const Hello& m) {
  ByteWriter w;
  w.u8(static_cast<uint8_t>(m.role));
  w.u64(m.session);
  w.u8(static_cast<uint8_t>(m.mode));
  w.u64(m.mem_size);
  w.str(m.src_backend);
  w.u64(m.src_page_size);
  w.u8(m.resume ? 1 : 0);
  w.u32(m.vcpus);
  return std::move(w.buffer());
}

Hello decode_hello(std::span<const uint8_t> p) {
  ByteReader r(p, "Hello");
  Hello m;
  uint8_t role = r.u8();
  if (role != 1 && role != 2) throw ProtocolError(fmt::format("unknown connection role {}", role));
  m.role = static_cast<Role>(role);
  m.session = r.u64();
  uint8_t mode = r.u8();
  check_mode(mode);
  m.mode = static_cast<Mode>(mode);
  m.mem_size = r.u64();
  m.src_backend = r.str(64);
  m.src_page_size = r.u64();
  uint8_t resume = r.u8();
  if (resume > 1) throw ProtocolError(fmt::format("bad resume flag {}", resume));
  m.vcpus = r.u32();
  if (m.vcpus == 0 || m.vcpus > kMaxHelloVcpus) throw ProtocolError(fmt::format("bad vCPU count {}", m.vcpus));
  m.resume = resume == 1;
  r.expect_end();
  if (m.mem_size == 0 || m.mem_size % kChunk) throw ProtocolError(fmt::format("bad memory size {}", m.mem_size));
  return m;
}

std::vector<uint8_t> encode(const HelloReply& m) {
  ByteWriter w;
  w.u8(m.accepted ? 1 : 0);
  w.str(m.reason);
  w.str(m.dst_backend);
  w.u64(m.dst_page_size);
  w.u8(m.uffd_minor ? 1 : 0);
  return std::move(w.buffer());
}

HelloReply decode_hello_reply(std::span<const uint8_t> p) {
  ByteReader r(p, "HelloReply");
  HelloReply m;
  m.accepted = r.u8() != 0;
  m.reason = r.str(kMaxString);
  m.dst_backend = r.str(64);
  m.dst_page_size = r.u64();
  m.uffd_minor = r.u8() != 0;
  r.expect_end();
  if (m.accepted && (m.dst_page_size < kChunk || !std::has_single_bit(m.dst_page_size)))
    throw ProtocolError(fmt::format("bad destination page size {}", m.dst_page_size));
  return m;
}

std::vector<uint8_t> encode(const RoundDone& m) {
  ByteWriter w;
  w.u32(m.round);
  w.u64(m.chunks_sent);
  return std::move(w.buffer());
}

RoundDone decode_round_done(std::span<const uint8_t> p) {
  ByteReader r(p, "RoundDone");
  RoundDone m{r.u32(), r.u64()};
  r.expect_end();
  return m;
}

std::vector<uint8_t> encode(const PostcopyBegin& m) {
  ByteWriter w;
  w.u64(m.page_size);
  w.u64(m.npages);
  w.u64(m.stale_ranges);
  w.u64(m.source_stop_us);
  return std::move(w.buffer());
}

std::vector<uint8_t> encode(const StaleChunks& m) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(m.ranges.size()));
  for (const auto& r : m.ranges) {
    w.u64(r.first);
    w.u32(r.count);
  }
  return std::move(w.buffer());
}

StaleChunks decode_stale_chunks(std::span<const uint8_t> p, uint64_t mem_size) {
  ByteReader r(p, "StaleChunks");
  uint32_t n = r.u32();
  if (n == 0 || n > kMaxStaleRanges) throw ProtocolError(fmt::format("StaleChunks holds {} ranges", n));
  StaleChunks m;
  m.ranges.reserve(n);
  uint64_t chunks = mem_size / kChunk;
  for (uint32_t i = 0; i < n; i++) {
    ChunkRange c{r.u64(), r.u32()};
    if (c.count == 0 || c.first > chunks || c.count > chunks - c.first)
      throw ProtocolError(fmt::format("StaleChunks range {}+{} lies outside {} chunks of memory", c.first, c.count,
                                      chunks));
    m.ranges.push_back(c);
  }
  r.expect_end();
  return m;
}

PostcopyBegin decode_postcopy_begin(std::span<const uint8_t> p, uint64_t mem_size) {
  ByteReader r(p, "PostcopyBegin");
  PostcopyBegin m;
  m.page_size = r.u64();
  m.npages = r.u64();
  m.stale_ranges = r.u64();
  m.source_stop_us = r.u64();
  if (m.page_size == 0 || mem_size % m.page_size || m.npages != mem_size / m.page_size)
    throw ProtocolError(fmt::format("PostcopyBegin counts {} pages of {} bytes for {} bytes of memory", m.npages,
                                    m.page_size, mem_size));
  r.expect_end();
  return m;
}

std::vector<uint8_t> encode(const Started& m) {
  ByteWriter w;
  w.u64(m.restore_us);
  return std::move(w.buffer());
}

Started decode_started(std::span<const uint8_t> p) {
  ByteReader r(p, "Started");
  Started m{r.u64()};
  r.expect_end();
  return m;
}

std::vector<uint8_t> encode(const Received& m) {
  ByteWriter w;
  w.u64(m.first_page);
  w.u64(m.npages);
  write_bits(w, m.bits);
  return std::move(w.buffer());
}

std::vector<Received> split_received(const vmm::Bitmap& present) {
  std::vector<Received> out;
  for (uint64_t first = 0; first < present.size(); first += kMaxReceivedPages) {
    uint64_t n = std::min(kMaxReceivedPages, present.size() - first);
    out.push_back({first, n, present.slice(first, n)});
  }
  return out;
}

Received decode_received(std::span<const uint8_t> p, uint64_t npages) {
  ByteReader r(p, "Received");
  Received m;
  m.first_page = r.u64();
  m.npages = r.u64();
  if (m.first_page % 64 || m.npages == 0 || m.npages > kMaxReceivedPages || m.first_page > npages ||
      m.npages > npages - m.first_page)
    throw ProtocolError(fmt::format("Received covers pages {}+{} of {}", m.first_page, m.npages, npages));
  m.bits = read_bits(r, m.npages);
  r.expect_end();
  return m;
}

std::vector<uint8_t> encode_request(const std::vector<uint64_t>& pages) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(pages.size()));
  for (uint64_t pg : pages) w.u64(pg);
  return std::move(w.buffer());
}

std::vector<uint64_t> decode_request(std::span<const uint8_t> p, uint64_t npages) {
  ByteReader r(p, "PageRequest");
  uint32_t n = r.u32();
  if (n == 0 || n > kMaxRequestPages) throw ProtocolError(fmt::format("PageRequest for {} pages", n));
  std::vector<uint64_t> pages(n);
  for (auto& pg : pages) {
    pg = r.u64();
    if (pg >= npages) throw ProtocolError(fmt::format("PageRequest for page {} of {}", pg, npages));
  }
  r.expect_end();
  return pages;
}

std::vector<uint8_t> encode_error(const std::string& reason) {
  ByteWriter w;
  w.str(reason.substr(0, kMaxString));
  return std::move(w.buffer());
}

std::string decode_error(std::span<const uint8_t> p) {
  ByteReader r(p, "Error");
  std::string s = r.str(kMaxString);
  r.expect_end();
  return s;
}

bool chunk_is_zero(const uint8_t* p) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  uint64_t acc = 0;
  for (size_t i = 0; i < kChunk / 8; i += 8)
    acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
  return acc == 0;
}

PagesGather plan_pages_bounded(uint64_t offset, uint32_t max_count, uint32_t align, const uint8_t* mem,
                               const vmm::Bitmap* dest_nonzero, const vmm::Bitmap* allocated,
                               PagesStats& stats, vmm::Bitmap* record_nonzero, bool checksum,
                               uint32_t max_data) {
  enum : uint8_t { kSkip, kData, kZero };
  std::vector<uint8_t> cls;
  cls.reserve(max_count);
  uint32_t ndata = 0, end = 0;
  // The data's CRC is taken chunk by chunk while the chunk is still in cache
  // from the zero check; `crc_at_end` is the CRC up to the last page boundary.
  uint32_t crc = 0, crc_at_end = 0;
  for (uint32_t i = 0; i < max_count; i++) {
    const uint8_t* c = mem + offset + uint64_t{i} * kChunk;
    uint64_t global = offset / kChunk + i;
    bool maybe_data = !allocated || allocated->test(global);
    uint8_t k = kSkip;
    if (maybe_data && !chunk_is_zero(c)) k = kData;
    else if (dest_nonzero && dest_nonzero->test(global)) k = kZero;
    if (k == kData && ndata == max_data) break;
    cls.push_back(k);
    if (k == kData) {
      ndata++;
      if (checksum) crc = crc32c(crc, {c, kChunk});
    }
    if ((i + 1) % align == 0) end = i + 1, crc_at_end = crc;
  }
  if (cls.size() == max_count || end == 0) end = static_cast<uint32_t>(cls.size()), crc_at_end = crc;
  PagesGather g;
  g.count = end;
  g.data_crc = crc_at_end;
  vmm::Bitmap data_bits(g.count), zero_bits(g.count);
  for (uint32_t i = 0; i < g.count; i++) {
    if (cls[i] == kData) {
      data_bits.set(i);
      stats.data++;
      const uint8_t* c = mem + offset + uint64_t{i} * kChunk;
      if (!g.data.empty() && g.data.back().data() + g.data.back().size() == c)
        g.data.back() = {g.data.back().data(), g.data.back().size() + kChunk};
      else
        g.data.push_back({c, kChunk});
      g.data_bytes += kChunk;
    } else if (cls[i] == kZero) {
      zero_bits.set(i);
      stats.zero_markers++;
    } else {
      stats.skipped++;
    }
    // Zero markers cleared the chunk there; skipped ones were zero.
    if (record_nonzero) record_nonzero->assign(offset / kChunk + i, cls[i] == kData);
  }
  ByteWriter w;
  w.buffer().reserve(16 + data_bits.words().size() * 16);
  w.u64(offset);
  w.u32(g.count);
  w.u32(0);
  write_bits(w, data_bits);
  write_bits(w, zero_bits);
  g.prefix = std::move(w.buffer());
  return g;
}

std::vector<uint8_t> encode_pages_bounded(uint64_t offset, uint32_t max_count, uint32_t align, const uint8_t* mem,
                                          const vmm::Bitmap* dest_nonzero, const vmm::Bitmap* allocated,
                                          PagesStats& stats, uint32_t& count, vmm::Bitmap* record_nonzero) {
  PagesGather g =
      plan_pages_bounded(offset, max_count, align, mem, dest_nonzero, allocated, stats, record_nonzero, false);
  count = g.count;
  std::vector<uint8_t> payload = std::move(g.prefix);
  payload.reserve(payload.size() + g.data_bytes);
  for (auto run : g.data) payload.insert(payload.end(), run.begin(), run.end());
  return payload;
}

std::vector<uint8_t> encode_pages(uint64_t offset, uint32_t count, const uint8_t* mem,
                                  const vmm::Bitmap* dest_nonzero, PagesStats& stats,
                                  const vmm::Bitmap* allocated) {
  uint32_t covered = 0;
  auto payload = encode_pages_bounded(offset, count, 1, mem, dest_nonzero, allocated, stats, covered);
  if (covered != count) throw ProtocolError(fmt::format("{} chunks hold more data than one frame carries", count));
  return payload;
}

namespace {

PagesView read_pages_prefix(ByteReader& r, uint64_t mem_size) {
  PagesView v;
  v.offset = r.u64();
  v.count = r.u32();
  if (r.u32() != 0) throw ProtocolError("Pages reserved field is not zero");
  if (v.count == 0 || v.count > kMaxChunksPerFrame)
    throw ProtocolError(fmt::format("Pages frame with {} chunks (1..{})", v.count, kMaxChunksPerFrame));
  if (v.offset % kChunk || v.offset >= mem_size || (mem_size - v.offset) / kChunk < v.count)
    throw ProtocolError(fmt::format("Pages frame for [{:#x}, +{} chunks) is outside guest memory of {:#x} bytes",
                                    v.offset, v.count, mem_size));
  v.data_bits = read_bits(r, v.count);
  v.zero_bits = read_bits(r, v.count);
  if (v.data_bits.intersects(v.zero_bits)) throw ProtocolError("a chunk is marked both data and zero");
  return v;
}

}  // namespace

uint64_t data_chunks(const PagesView& v) {
  return v.data_bits.count();
}

size_t pages_prefix_size(std::span<const uint8_t, kPagesFixedSize> fixed) {
  ByteReader r(fixed, "Pages");
  r.u64();
  uint32_t count = r.u32();
  if (count == 0 || count > kMaxChunksPerFrame)
    throw ProtocolError(fmt::format("Pages frame with {} chunks (1..{})", count, kMaxChunksPerFrame));
  return kPagesFixedSize + 2 * 8 * ((count + 63) / 64);
}

PagesView decode_pages_prefix(std::span<const uint8_t> prefix, uint64_t mem_size) {
  ByteReader r(prefix, "Pages");
  PagesView v = read_pages_prefix(r, mem_size);
  r.expect_end();
  return v;
}

PagesView decode_pages(std::span<const uint8_t> p, uint64_t mem_size) {
  ByteReader r(p, "Pages");
  PagesView v = read_pages_prefix(r, mem_size);
  v.data = r.bytes(data_chunks(v) * kChunk);
  r.expect_end();
  return v;
}

}  // namespace migration
