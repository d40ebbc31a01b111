// Port I/O and MMIO dispatch. Devices claim a range and see offsets into it;
// an access nobody claims is logged once per address and otherwise ignored.
// Accesses from several vCPU threads are serialised: one at a time reaches a
// device, so devices need no locks of their own.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <span>
#include <vector>

namespace vmm {

class PioDevice {
 public:
  virtual ~PioDevice() = default;
  virtual void pio_read(uint16_t offset, std::span<uint8_t> data) = 0;
  virtual void pio_write(uint16_t offset, std::span<const uint8_t> data) = 0;
};

// The PC's POST diagnostic port (0x80), as in QEMU: writes are dropped,
// reads give 0xff. Guests write it for a short delay; the touch guest times
// its exits with it.
class PostPort : public PioDevice {
 public:
  static constexpr uint16_t kPort = 0x80;
  void pio_read(uint16_t, std::span<uint8_t> data) override {
    for (auto& b : data) b = 0xff;
  }
  void pio_write(uint16_t, std::span<const uint8_t>) override {}
};

class IoBus {
 public:
  // Throws vmm::Error if the range overlaps a registered one.
  void register_pio(uint16_t base, uint16_t length, PioDevice* device);

  void pio_read(uint16_t port, std::span<uint8_t> data);
  void pio_write(uint16_t port, std::span<const uint8_t> data);
  // No MMIO devices yet: reads return all-ones, writes are dropped.
  void mmio_read(uint64_t addr, std::span<uint8_t> data);
  void mmio_write(uint64_t addr, std::span<const uint8_t> data);

  uint64_t unhandled_accesses() const { return unhandled_.load(); }
  // Holds off every device access, e.g. while the serial port is flushed.
  std::unique_lock<std::mutex> hold() { return std::unique_lock(mutex_); }

 private:
  struct Range {
    uint16_t base;
    uint16_t length;
    PioDevice* device;
  };
  const Range* find(uint16_t port) const;
  void note_unhandled(const char* kind, uint64_t addr, bool write, size_t size);

  std::vector<Range> ranges_;
  std::mutex mutex_;
  std::set<std::pair<int, uint64_t>> logged_;
  std::atomic<uint64_t> unhandled_{0};
};

}  // namespace vmm
