#include "serial.h"

namespace vmm {

namespace {

constexpr uint16_t kThr = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kLsrThreTemt = 0x60;  // transmitter holding register and shifter empty
constexpr uint8_t kIirNoInterrupt = 0x01;
constexpr uint8_t kMsrDcdDsrCts = 0xb0;
constexpr size_t kMaxLine = 4096;

}  // namespace

uint8_t Serial::read_register(uint16_t offset) const {
  bool dlab = regs_[kLcr] & kLcrDlab;
  switch (offset) {
    case kThr: return dlab ? divisor_lo_ : 0;  // no input
    case kIer: return dlab ? divisor_hi_ : regs_[kIer];
    case kIir: return kIirNoInterrupt;
    case kLsr: return kLsrThreTemt;
    case kMsr: return kMsrDcdDsrCts;
    default: return regs_[offset];
  }
}

void Serial::pio_read(uint16_t offset, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); i++) data[i] = read_register(static_cast<uint16_t>((offset + i) % kPortCount));
}

void Serial::pio_write(uint16_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return;
  uint8_t v = data[0];
  bool dlab = regs_[kLcr] & kLcrDlab;
  if (offset == kThr && dlab) divisor_lo_ = v;
  else if (offset == kThr) put(static_cast<char>(v));
  else if (offset == kIer && dlab) divisor_hi_ = v;
  else if (offset == kIer || offset == kLcr || offset == kMcr || offset == 7) regs_[offset] = v;
  // IIR/FCR, LSR and MSR writes have no effect on a polled console.
}

void Serial::put(char c) {
  bytes_++;
  if (c == '\r') return;
  if (c == '\n') {
    sink_(line_);
    line_.clear();
    return;
  }
  line_.push_back(c);
  if (line_.size() >= kMaxLine) flush();
}

void Serial::flush() {
  if (line_.empty()) return;
  sink_(line_);
  line_.clear();
}

}  // namespace vmm
