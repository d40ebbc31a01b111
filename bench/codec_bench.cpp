// What one 4 MiB Pages frame costs the source before it reaches the socket:
// the zero check, the copy into a payload and the CRC32C, each alone, as
// precopy does them (a copy: the guest runs) and as the postcopy page server
// does them (no copy: the guest is stopped). A 1 GiB postcopy fault is 16 or more such frames
// in a row, so these bound it on a fast link.
#include <benchmark/benchmark.h>

#include <sys/mman.h>

#include <cstring>
#include <random>
#include <vector>

#include "messages.h"
#include "wire.h"

namespace {

using migration::kChunk;
using migration::kMaxDataChunksPerFrame;

constexpr size_t kFrameBytes = size_t{kMaxDataChunksPerFrame} * kChunk;

// Guest-like memory: random data in every chunk, populated up front.
struct Memory {
  uint8_t* p;
  Memory() {
    p = static_cast<uint8_t*>(mmap(nullptr, kFrameBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0));
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    std::mt19937_64 rng(1);
    for (size_t i = 0; i < kFrameBytes; i += 8) {
      uint64_t v = rng();
      std::memcpy(p + i, &v, 8);
    }
  }
  ~Memory() { munmap(p, kFrameBytes); }
};

void zero_check(benchmark::State& state) {
  Memory m;
  for (auto _ : state) {
    unsigned zero = 0;
    for (size_t off = 0; off < kFrameBytes; off += kChunk) zero += migration::chunk_is_zero(m.p + off);
    benchmark::DoNotOptimize(zero);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kFrameBytes));
}

void crc32c(benchmark::State& state) {
  Memory m;
  for (auto _ : state) benchmark::DoNotOptimize(migration::crc32c(0, {m.p, kFrameBytes}));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kFrameBytes));
}

// The page server's frame: encode (zero check + copy into a fresh payload)
// and the header's CRC over it.
void encode_frame(benchmark::State& state) {
  Memory m;
  for (auto _ : state) {
    migration::PagesStats st;
    uint32_t covered = 0;
    auto payload = migration::encode_pages_bounded(0, kMaxDataChunksPerFrame, 1, m.p, nullptr, nullptr, st, covered);
    auto header = migration::make_header(migration::FrameType::Pages, 0, payload);
    benchmark::DoNotOptimize(header);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kFrameBytes));
}

// The postcopy page server's frame: zero check and CRC in one pass, no copy
// (the data is sent from guest memory).
void plan_frame(benchmark::State& state) {
  Memory m;
  for (auto _ : state) {
    migration::PagesStats st;
    auto g = migration::plan_pages_bounded(0, kMaxDataChunksPerFrame, 1, m.p, nullptr, nullptr, st);
    auto header = migration::make_header(migration::FrameType::Pages, 0, g.prefix.size() + g.data_bytes,
                                         migration::crc32c_combine(migration::crc32c(0, g.prefix), g.data_crc,
                                                                   g.data_bytes));
    benchmark::DoNotOptimize(header);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kFrameBytes));
}

}  // namespace

BENCHMARK(zero_check)->Unit(benchmark::kMicrosecond);
BENCHMARK(crc32c)->Unit(benchmark::kMicrosecond);
BENCHMARK(encode_frame)->Unit(benchmark::kMicrosecond);
BENCHMARK(plan_frame)->Unit(benchmark::kMicrosecond);
