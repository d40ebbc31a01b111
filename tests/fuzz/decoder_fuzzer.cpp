// libFuzzer target for one decoder of the wire protocol, chosen at build time
// (FUZZ_DECODER, see CMakeLists.txt). Any input must either decode or throw
// ProtocolError; a crash, a sanitizer report, or another exception is a bug.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "messages.h"
#include "vm_state.h"
#include "wire.h"

namespace {

// Guest sizes a destination may hold: the decoders bound offsets and bitmaps by them.
constexpr uint64_t kMemSizes[] = {64ULL << 20, 1ULL << 30, 8ULL << 30};

void decode(std::string_view which, std::span<const uint8_t> p, uint64_t mem_size) {
  using namespace migration;
  if (which == "header") {
    if (p.size() < kHeaderSize) return;
    FrameHeader h = decode_header(std::span<const uint8_t, kHeaderSize>(p.data(), kHeaderSize));
    auto payload = p.subspan(kHeaderSize);
    if (payload.size() == h.length)
      verify_crc(std::span<const uint8_t, kHeaderSize>(p.data(), kHeaderSize), payload, h.crc);
  } else if (which == "hello") {
    decode_hello(p);
  } else if (which == "hello_reply") {
    decode_hello_reply(p);
  } else if (which == "round_done") {
    decode_round_done(p);
  } else if (which == "postcopy_begin") {
    decode_postcopy_begin(p, mem_size);
  } else if (which == "stale_chunks") {
    decode_stale_chunks(p, mem_size);
  } else if (which == "started") {
    decode_started(p);
  } else if (which == "received") {
    decode_received(p, mem_size / 4096);
  } else if (which == "request") {
    decode_request(p, mem_size / 4096);
  } else if (which == "error") {
    decode_error(p);
  } else if (which == "pages") {
    PagesView v = decode_pages(p, mem_size);
    for (uint32_t i = 0; i < v.count; i++) (void)(v.is_data(i) || v.is_zero(i));
  } else if (which == "vm_state") {
    decode_vm_state(p);
  } else {
    __builtin_trap();  // a target name CMakeLists.txt does not know
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint64_t mem_size = kMemSizes[data[0] % 3];
  try {
    decode(FUZZ_DECODER, {data + 1, size - 1}, mem_size);
  } catch (const migration::ProtocolError&) {
  }
  return 0;
}
