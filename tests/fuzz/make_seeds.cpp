// Writes the seed corpus of the fuzz targets from the real encoders:
//   fuzz_make_seeds DIR   (tests/fuzz/corpus in the tree)
// Each decoder seed is [memory-size selector 0: 64 MiB] + a payload; the
// page-receive seeds follow page_receive_fuzzer.cpp's input format.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "messages.h"
#include "vm_state.h"
#include "wire.h"

using namespace migration;

namespace {

std::filesystem::path g_dir;

void seed(const std::string& target, int n, std::vector<uint8_t> bytes, bool selector = true) {
  auto dir = g_dir / target;
  std::filesystem::create_directories(dir);
  if (selector) bytes.insert(bytes.begin(), 0);
  std::ofstream(dir / ("seed-" + std::to_string(n)), std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// A frame for the page-receive target: [type][flags][u16 length][payload].
void frame(std::vector<uint8_t>& out, FrameType t, uint8_t flags, const std::vector<uint8_t>& payload) {
  out.push_back(static_cast<uint8_t>(t));
  out.push_back(flags);
  out.push_back(static_cast<uint8_t>(payload.size()));
  out.push_back(static_cast<uint8_t>(payload.size() >> 8));
  out.insert(out.end(), payload.begin(), payload.end());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  g_dir = argv[1];
  Hello hello{Role::Main, 42, Mode::Postcopy, 64 << 20, "gmem", 4096};
  seed("fuzz_hello", 0, encode(hello));
  hello.resume = true;
  seed("fuzz_hello", 1, encode(hello));
  hello.vcpus = 2;
  seed("fuzz_hello", 2, encode(hello));
  seed("fuzz_hello_reply", 0, encode(HelloReply{true, "", "shmem", 4096, true}));
  seed("fuzz_hello_reply", 1, encode(HelloReply{false, "too big", "hugetlb-1g", 1 << 30, false}));
  seed("fuzz_round_done", 0, encode(RoundDone{3, 1000}));
  auto missing = vmm::Bitmap::from_words(std::vector<uint64_t>(16384 / 64, 0x5555), 16384);
  seed("fuzz_postcopy_begin", 0, encode(PostcopyBegin{4096, 16384, 2, 220}));
  seed("fuzz_stale_chunks", 0, encode(StaleChunks{{{0, 3}, {100, 64}}}));
  seed("fuzz_started", 0, encode(Started{870}));
  seed("fuzz_received", 0, encode(Received{0, 16384, missing}));
  seed("fuzz_request", 0, encode_request({1, 2, 3, 1000}));
  seed("fuzz_error", 0, encode_error("the source gave up"));
  std::vector<uint8_t> mem(64 * kChunk, 0);
  for (size_t i = 0; i < mem.size(); i += 3 * kChunk) mem[i] = 1;
  PagesStats st;
  auto pages = encode_pages(0, 16, mem.data(), nullptr, st);
  seed("fuzz_pages", 0, pages);
  VmState vm;
  vm.mem_size = 64 << 20;
  vm.cmdline = "workload=touch size=8";
  vm.vcpus.resize(1);
  vm.vcpus[0].msrs.push_back({0x10, 0, 12345});
  vm.serial.partial_line = "touch: fill";
  seed("fuzz_vm_state", 0, encode(vm));
  vm.vcpus.resize(2);  // two vCPUs, each with its LAPIC, and the irqchip after them
  for (uint32_t id = 0; id < 3; id++) vm.irqchip.chips[id].chip_id = id;
  seed("fuzz_vm_state", 1, encode(vm));
  auto header = make_header(FrameType::Hello, 0, encode(hello));
  std::vector<uint8_t> framed(header.begin(), header.end());
  auto h = encode(hello);
  framed.insert(framed.end(), h.begin(), h.end());
  seed("fuzz_header", 0, framed);

  // Page receive: precopy frames, a stale range, then postcopy whole pages (4 KiB and 2 MiB).
  for (uint8_t config : {uint8_t{0}, uint8_t{2}}) {
    std::vector<uint8_t> in{config};
    frame(in, FrameType::Pages, 0, encode_pages(0, 8, mem.data(), nullptr, st));
    frame(in, FrameType::StaleChunks, 0, encode(StaleChunks{{{2, 3}}}));
    frame(in, FrameType::PostcopyBegin, 0, encode(PostcopyBegin{4096, 2048, 1, 0}));
    frame(in, FrameType::Pages, 3, encode_pages(8 * kChunk, 4, mem.data(), nullptr, st));
    frame(in, FrameType::Heartbeat, 0, {});
    frame(in, FrameType::Pages, 2, encode_pages(16 * kChunk, 8, mem.data(), nullptr, st));
    seed("fuzz_page_receive", config, in, false);
  }
  return 0;
}
