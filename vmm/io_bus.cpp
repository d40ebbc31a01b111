#include "io_bus.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "error.h"

namespace vmm {

void IoBus::register_pio(uint16_t base, uint16_t length, PioDevice* device) {
  for (const auto& r : ranges_) {
    if (base < r.base + r.length && r.base < base + length)
      throw Error(fmt::format("port range [{:#x}, {:#x}) overlaps [{:#x}, {:#x})", base, base + length, r.base,
                              r.base + r.length));
  }
  ranges_.push_back({base, length, device});
}

const IoBus::Range* IoBus::find(uint16_t port) const {
  auto it = std::find_if(ranges_.begin(), ranges_.end(),
                         [port](const Range& r) { return port >= r.base && port < r.base + r.length; });
  return it == ranges_.end() ? nullptr : &*it;
}

void IoBus::note_unhandled(const char* kind, uint64_t addr, bool write, size_t size) {
  unhandled_++;
  if (!logged_.insert({write ? 1 : 0, addr}).second) return;
  spdlog::warn("io: unhandled {} {} at {:#x} ({} bytes); ignored, logged once per address", kind,
               write ? "write" : "read", addr, size);
}

void IoBus::pio_read(uint16_t port, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (const Range* r = find(port)) return r->device->pio_read(static_cast<uint16_t>(port - r->base), data);
  std::memset(data.data(), 0xff, data.size());
  note_unhandled("port", port, false, data.size());
}

void IoBus::pio_write(uint16_t port, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (const Range* r = find(port)) return r->device->pio_write(static_cast<uint16_t>(port - r->base), data);
  note_unhandled("port", port, true, data.size());
}

void IoBus::mmio_read(uint64_t addr, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  std::memset(data.data(), 0xff, data.size());
  note_unhandled("MMIO", addr, false, data.size());
}

void IoBus::mmio_write(uint64_t addr, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  note_unhandled("MMIO", addr, true, data.size());
}

}  // namespace vmm
