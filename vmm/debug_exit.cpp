#include "debug_exit.h"

#include <algorithm>
#include <cstring>

namespace vmm {

void DebugExit::pio_read(uint16_t, std::span<uint8_t> data) { std::fill(data.begin(), data.end(), uint8_t{0xff}); }

void DebugExit::pio_write(uint16_t offset, std::span<const uint8_t> data) {
  if (offset != 0 || data.empty()) return;
  uint32_t v = 0;
  std::memcpy(&v, data.data(), std::min(data.size(), sizeof v));
  code_ = static_cast<int>(v & 0xff);  // a process exit status holds 8 bits
}

}  // namespace vmm
