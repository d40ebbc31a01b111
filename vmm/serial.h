// A 16550 UART, enough for a polled console: THR writes become output, LSR
// always reports the transmitter empty, the other registers read back what was
// written. Output is delivered a line at a time (CR dropped).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "io_bus.h"

namespace vmm {

class Serial : public PioDevice {
 public:
  static constexpr uint16_t kCom1Base = 0x3f8;
  static constexpr uint16_t kPortCount = 8;

  using LineSink = std::function<void(std::string_view line)>;
  explicit Serial(LineSink sink) : sink_(std::move(sink)) {}

  void pio_read(uint16_t offset, std::span<uint8_t> data) override;
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override;

  // Register state and the pending partial line, for migration.
  struct State {
    std::array<uint8_t, 8> regs{};
    uint8_t divisor_lo = 0, divisor_hi = 0;
    std::string partial_line;
  };
  State save() const { return {regs_, divisor_lo_, divisor_hi_, line_}; }
  void restore(const State& s) {
    regs_ = s.regs;
    divisor_lo_ = s.divisor_lo;
    divisor_hi_ = s.divisor_hi;
    line_ = s.partial_line;
  }

  // Delivers a pending partial line (at guest exit).
  void flush();
  uint64_t bytes_written() const { return bytes_; }

 private:
  void put(char c);
  uint8_t read_register(uint16_t offset) const;

  LineSink sink_;
  std::string line_;
  std::array<uint8_t, 8> regs_{};
  uint8_t divisor_lo_ = 0x0c, divisor_hi_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace vmm
