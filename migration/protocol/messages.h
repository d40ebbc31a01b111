// Typed payloads of the migration frames, with pure encode/decode functions.
// Sequence (main connection unless noted):
//
//   source                                   destination
//   Hello{Main} ───────────────────────────▶ checks memory size, backend, uffd
//               ◀─────────────────────────── HelloReply{accepted | reason}
//   Hello{Urgent} (second connection) ─────▶
//   Pages... RoundDone  (precopy rounds) ──▶ written through the alias view; a page
//                                            whose every chunk came is present
//   -- source vCPUs stop --
//   Pages (final dirty set, precopy) ──────▶
//   VmState ───────────────────────────────▶ restore
//   StaleChunks... (hybrid) ───────────────▶ chunks written since they were sent: missing again
//   PostcopyBegin{page size, stale ranges} ▶ register uffd MINOR, vCPU threads made, held
//   (no message carries a bitmap of all of RAM: switchover does not grow with it)
//               ◀─────────────────────────── Started (restored, and running nothing yet)
//   Pages{Last} (background push) ─────────▶ UFFDIO_CONTINUE (before and after the commit)
//   StartedAck (urgent connection) ────────▶ commit point: the source let go for good;
//                                            the destination's vCPUs start only now
//               ◀─────────────────────────── PageRequest (urgent connection)
//   Pages{Urgent, Last} (urgent conn.) ────▶ UFFDIO_CONTINUE
//               ◀─────────────────────────── Complete
//   CompleteAck ───────────────────────────▶ (the source heard it: both may end)
//   Heartbeat ◀──────────────────────────▶ Heartbeat (main connection, while postcopy idles)
//
// A lost link before Started reaches the source: it resumes its own guest,
// and the destination, whose vCPUs never ran, gives up after the recovery
// timeout. Lost after the source got Started (committed) but before StartedAck
// arrived, or at any time after: the destination keeps listening, the source
// redials, and the reconnection is the commit for a destination still waiting:
//
//   Hello{Main, same session, resume} ─────▶
//               ◀─────────────────────────── HelloReply{accepted}
//   Hello{Urgent, same session, resume} ───▶
//               ◀─────────────────────────── Received{pages present}... (last flagged)
//               ◀─────────────────────────── PageRequest (the outstanding ones, urgent)
//   Pages... (the push resumes over the pages not received) ▶
// A Received bitmap that holds every page is completion: the source ends
// there (Complete, or its CompleteAck, was lost with the link). A
// destination that sent Complete and hears no CompleteAck within the link
// timeout listens for that reconnection.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bitmap.h"
#include "wire.h"

namespace migration {

inline constexpr uint64_t kChunk = 4096;       // the unit of page data on the wire
inline constexpr uint32_t kMaxChunksPerFrame = 65536;    // the range one Pages frame may cover (256 MiB)
inline constexpr uint32_t kMaxDataChunksPerFrame = 1024;  // the data it may carry (4 MiB)
inline constexpr uint32_t kMaxRequestPages = 4096;
inline constexpr uint32_t kMaxHelloVcpus = 255;  // in a Hello or VmState: an APIC ID's range; each VMM checks its own bound

enum class Mode : uint8_t { Precopy = 1, Postcopy = 2, Hybrid = 3 };
enum class Role : uint8_t { Main = 1, Urgent = 2 };
const char* mode_name(Mode m);

struct Hello {
  Role role = Role::Main;
  uint64_t session = 0;
  Mode mode = Mode::Hybrid;
  uint64_t mem_size = 0;
  std::string src_backend;
  uint64_t src_page_size = 0;
  bool resume = false;  // a reconnection of `session` after a lost link
  uint32_t vcpus = 1;
};

struct HelloReply {
  bool accepted = false;
  std::string reason;  // why not, when refused
  std::string dst_backend;
  uint64_t dst_page_size = 0;
  bool uffd_minor = false;
};

// Pages frame flags.
inline constexpr uint32_t kPagesUrgent = 1u << 0;     // answers a PageRequest
inline constexpr uint32_t kPagesLastOfPage = 1u << 1;  // completes a destination page (postcopy)

// A run of `count` 4 KiB chunks from `offset`: a chunk is either data (bit in
// data_bits, its bytes follow in order), a zero marker (bit in zero_bits: the
// destination must clear it), or neither (already right on the destination).
struct PagesView {
  uint64_t offset = 0;
  uint32_t count = 0;
  vmm::Bitmap data_bits;
  vmm::Bitmap zero_bits;
  std::span<const uint8_t> data;
  bool is_data(uint32_t i) const { return data_bits.test(i); }
  bool is_zero(uint32_t i) const { return zero_bits.test(i); }
};

struct RoundDone {
  uint32_t round = 0;
  uint64_t chunks_sent = 0;
};

// Ranges of 4 KiB chunks sent in precopy and written by the guest since:
// the destination pages holding them are missing again. At most
// kMaxStaleRanges a frame.
struct ChunkRange {
  uint64_t first = 0;
  uint32_t count = 0;
};
inline constexpr uint32_t kMaxStaleRanges = 65536;
struct StaleChunks {
  std::vector<ChunkRange> ranges;
};

// The end of switchover. Every destination page not covered by precopy, or
// made stale, is missing; the destination checks it got every stale range.
struct PostcopyBegin {
  uint64_t page_size = 0;       // the destination's page size, as the source counts it
  uint64_t npages = 0;
  uint64_t stale_ranges = 0;    // in the StaleChunks frames before this one
  uint64_t source_stop_us = 0;  // source: vCPU stop -> this frame, for downtime
};

struct Started {
  uint64_t restore_us = 0;  // destination: VmState received -> vCPU running
};

// A piece of the destination's received-page bitmap, sent after a
// reconnection: bits for pages [first_page, first_page + npages); set means
// present. At most kMaxReceivedPages a frame; the last has kReceivedLast.
struct Received {
  uint64_t first_page = 0;
  uint64_t npages = 0;
  vmm::Bitmap bits;  // npages bits
};
inline constexpr uint32_t kReceivedLast = 1u << 0;
inline constexpr uint64_t kMaxReceivedPages = uint64_t{1} << 24;  // 2 MiB of bitmap a frame

std::vector<uint8_t> encode(const Hello& m);
std::vector<uint8_t> encode(const HelloReply& m);
std::vector<uint8_t> encode(const RoundDone& m);
std::vector<uint8_t> encode(const PostcopyBegin& m);
std::vector<uint8_t> encode(const StaleChunks& m);
std::vector<uint8_t> encode(const Started& m);
std::vector<uint8_t> encode(const Received& m);
// A present-page bitmap of `npages` pages as Received frames of at most
// kMaxReceivedPages pages each (the caller flags the last with kReceivedLast).
std::vector<Received> split_received(const vmm::Bitmap& present);
std::vector<uint8_t> encode_request(const std::vector<uint64_t>& pages);
std::vector<uint8_t> encode_error(const std::string& reason);

Hello decode_hello(std::span<const uint8_t> p);
HelloReply decode_hello_reply(std::span<const uint8_t> p);
RoundDone decode_round_done(std::span<const uint8_t> p);
PostcopyBegin decode_postcopy_begin(std::span<const uint8_t> p, uint64_t mem_size);
StaleChunks decode_stale_chunks(std::span<const uint8_t> p, uint64_t mem_size);
Started decode_started(std::span<const uint8_t> p);
// Bounds-checked against the destination's page count.
Received decode_received(std::span<const uint8_t> p, uint64_t npages);
std::vector<uint64_t> decode_request(std::span<const uint8_t> p, uint64_t npages);
std::string decode_error(std::span<const uint8_t> p);

// Builds a Pages payload from guest memory at [offset, offset + count * 4 KiB):
// zero chunks become zero markers where `dest_nonzero` says the destination
// holds non-zero data there, and are skipped otherwise. Returns the payload.
struct PagesStats {
  uint32_t data = 0, zero_markers = 0, skipped = 0;
};
// `allocated` (optional) marks chunks the source backend holds; others are
// zero without being read.
std::vector<uint8_t> encode_pages(uint64_t offset, uint32_t count, const uint8_t* mem,
                                  const vmm::Bitmap* dest_nonzero, PagesStats& stats,
                                  const vmm::Bitmap* allocated = nullptr);
// The same, but covering as much of [offset, offset + max_count chunks) as
// fits in one frame: it stops before the data would exceed
// kMaxDataChunksPerFrame, at a multiple of `align` chunks (a page boundary),
// and sets `count` to the chunks it covers. Sparse memory thus travels in few
// frames (a 1 GiB page holding 1 MiB of data: 4 frames, not 256).
// `record_nonzero`, when given (it may be `dest_nonzero` itself), is updated
// to what the destination holds once it applied the frame.
std::vector<uint8_t> encode_pages_bounded(uint64_t offset, uint32_t max_count, uint32_t align, const uint8_t* mem,
                                          const vmm::Bitmap* dest_nonzero, const vmm::Bitmap* allocated,
                                          PagesStats& stats, uint32_t& count,
                                          vmm::Bitmap* record_nonzero = nullptr);
// The same frame described instead of copied: the payload is `prefix`
// followed by the `data` runs, which point into `mem`. With `checksum`,
// `data_crc` is crc32c(0, data runs), taken while each chunk is in cache from
// its zero check. Only for memory that cannot change until the frame is sent
// (postcopy: the source's vCPUs are stopped); see Channel::send_gather.
struct PagesGather {
  std::vector<uint8_t> prefix;
  std::vector<std::span<const uint8_t>> data;  // adjacent data chunks join into one run
  uint64_t data_bytes = 0;
  uint32_t data_crc = 0;
  uint32_t count = 0;  // chunks covered
};
PagesGather plan_pages_bounded(uint64_t offset, uint32_t max_count, uint32_t align, const uint8_t* mem,
                               const vmm::Bitmap* dest_nonzero, const vmm::Bitmap* allocated,
                               PagesStats& stats, vmm::Bitmap* record_nonzero = nullptr,
                               bool checksum = true, uint32_t max_data = kMaxDataChunksPerFrame);
// Parses and bounds-checks a Pages payload against the guest memory size.
PagesView decode_pages(std::span<const uint8_t> p, uint64_t mem_size);
// The part of a Pages payload before its data: {offset, count, reserved} and
// the two bitmaps. A receiver reads this first, then the data straight into
// guest memory. pages_prefix_size() needs the first 16 bytes.
inline constexpr size_t kPagesFixedSize = 16;
size_t pages_prefix_size(std::span<const uint8_t, kPagesFixedSize> fixed);
PagesView decode_pages_prefix(std::span<const uint8_t> prefix, uint64_t mem_size);
uint64_t data_chunks(const PagesView& v);

bool chunk_is_zero(const uint8_t* p);

}  // namespace migration
