// COM1, isa-debug-exit and the I/O bus.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "debug_exit.h"
#include "error.h"
#include "io_bus.h"
#include "serial.h"

namespace {

void out8(vmm::IoBus& bus, uint16_t port, uint8_t v) { bus.pio_write(port, std::span<const uint8_t>(&v, 1)); }
uint8_t in8(vmm::IoBus& bus, uint16_t port) {
  uint8_t v = 0;
  bus.pio_read(port, std::span<uint8_t>(&v, 1));
  return v;
}

struct Console {
  std::vector<std::string> lines;
  vmm::Serial serial{[this](std::string_view l) { lines.emplace_back(l); }};
  vmm::IoBus bus;
  Console() { bus.register_pio(vmm::Serial::kCom1Base, vmm::Serial::kPortCount, &serial); }
};

TEST(Serial, TransmittedBytesArriveAsLinesWithoutCarriageReturns) {
  Console c;
  for (char ch : std::string("hi\r\nthere\n")) out8(c.bus, 0x3f8, static_cast<uint8_t>(ch));
  EXPECT_EQ(c.lines, (std::vector<std::string>{"hi", "there"}));
}

TEST(Serial, LineStatusAlwaysReportsTransmitterEmpty) {
  Console c;
  EXPECT_EQ(in8(c.bus, 0x3fd) & 0x60, 0x60);
}

TEST(Serial, DivisorLatchWritesAreNotOutput) {
  Console c;
  out8(c.bus, 0x3fb, 0x80);  // LCR.DLAB
  out8(c.bus, 0x3f8, 0x01);
  EXPECT_EQ(in8(c.bus, 0x3f8), 0x01);
  out8(c.bus, 0x3fb, 0x03);
  out8(c.bus, 0x3f8, 'x');
  c.serial.flush();
  EXPECT_EQ(c.lines, (std::vector<std::string>{"x"}));
  EXPECT_EQ(in8(c.bus, 0x3fb), 0x03);
}

TEST(Serial, ScratchRegisterReadsBack) {
  Console c;
  out8(c.bus, 0x3ff, 0x5a);
  EXPECT_EQ(in8(c.bus, 0x3ff), 0x5a);
}

TEST(DebugExit, WrittenValueBecomesTheExitCode) {
  vmm::DebugExit dev;
  vmm::IoBus bus;
  bus.register_pio(vmm::DebugExit::kPort, vmm::DebugExit::kPortCount, &dev);
  EXPECT_FALSE(dev.requested());
  out8(bus, 0x501, 3);
  EXPECT_EQ(dev.requested(), 3);
}

TEST(IoBus, UnknownPortsReadAllOnesAndAreCountedNotFatal) {
  vmm::IoBus bus;
  EXPECT_EQ(in8(bus, 0x80), 0xff);
  out8(bus, 0x80, 1);
  out8(bus, 0x80, 1);
  EXPECT_EQ(bus.unhandled_accesses(), 3u);
}

TEST(IoBus, OverlappingRangesAreRefused) {
  vmm::DebugExit a, b;
  vmm::IoBus bus;
  bus.register_pio(0x500, 4, &a);
  EXPECT_THROW(bus.register_pio(0x503, 2, &b), vmm::Error);
  EXPECT_NO_THROW(bus.register_pio(0x504, 2, &b));
}

}  // namespace
