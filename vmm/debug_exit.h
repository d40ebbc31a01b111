// QEMU's isa-debug-exit device: a write of value V asks the VMM to exit.
// QEMU exits with (V << 1) | 1; `vmm run` exits with V itself.
#pragma once

#include <atomic>
#include <optional>

#include "io_bus.h"

namespace vmm {

class DebugExit : public PioDevice {
 public:
  static constexpr uint16_t kPort = 0x501;
  static constexpr uint16_t kPortCount = 2;  // QEMU's default iosize

  void pio_read(uint16_t, std::span<uint8_t> data) override;
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override;

  // Read by every vCPU thread after its port exits; written under the bus's lock.
  std::optional<int> requested() const {
    int c = code_.load(std::memory_order_acquire);
    return c < 0 ? std::nullopt : std::optional<int>(c);
  }

 private:
  std::atomic<int> code_{-1};
};

}  // namespace vmm
