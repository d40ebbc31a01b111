// Test helpers for the postcopy core: a loopback connection as two Channels,
// guest RAM as a memfd with a primary and an alias mapping (as a destination
// has), and sending and receiving one Pages frame.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "channel.h"
#include "messages.h"
#include "page_states.h"
#include "userfaultfd.h"

namespace migration::test {

// Both ends of one loopback TCP connection on a port the kernel chose.
inline std::pair<boost::asio::ip::tcp::socket, boost::asio::ip::tcp::socket> loopback_pair(
    boost::asio::io_context& io) {
  using boost::asio::ip::tcp;
  tcp::acceptor acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket a(io), b(io);
  a.connect(acceptor.local_endpoint());
  acceptor.accept(b);
  return {std::move(a), std::move(b)};
}

// A connection as the two sides' Channels: `a` sends, `b` receives (or both ways).
struct ChannelPair {
  boost::asio::io_context io;
  std::unique_ptr<Channel> a, b;
  ChannelPair() {
    auto [x, y] = loopback_pair(io);
    a = std::make_unique<Channel>(std::move(x), "a");
    b = std::make_unique<Channel>(std::move(y), "b");
  }
};

// Guest RAM on memfd shmem, mapped twice: `primary` (what the guest sees, the
// range a userfaultfd registers) and `alias` (where received data is written).
struct SharedRam {
  uint64_t size;
  int fd = -1;
  uint8_t* primary = nullptr;
  uint8_t* alias = nullptr;
  explicit SharedRam(uint64_t bytes) : size(bytes) {
    fd = ::memfd_create("postcopy-core-test", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) < 0) throw std::runtime_error("memfd");
    // Every page in the page cache (zeroed): a first touch through `primary` is a MINOR fault.
    if (::fallocate(fd, 0, 0, static_cast<off_t>(size)) < 0) throw std::runtime_error("fallocate");
    primary = map();
    alias = map();
  }
  ~SharedRam() {
    ::munmap(primary, size);
    ::munmap(alias, size);
    ::close(fd);
  }
  SharedRam(const SharedRam&) = delete;
  SharedRam& operator=(const SharedRam&) = delete;

 private:
  uint8_t* map() const {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
    return static_cast<uint8_t*>(p);
  }
};

// A userfaultfd with `features` and `ram`'s primary view registered in MINOR
// mode, or null with `why` saying what this kernel refused.
inline std::unique_ptr<vmm::Userfaultfd> register_minor(SharedRam& ram, uint64_t features, std::string& why) {
  std::unique_ptr<vmm::Userfaultfd> uffd;
  try {
    uffd = std::make_unique<vmm::Userfaultfd>(features);
  } catch (const std::exception& e) {
    why = e.what();
    return nullptr;
  }
  if (int rc = uffd->try_register(ram.primary, ram.size, UFFDIO_REGISTER_MODE_MINOR); rc != 0) {
    why = "UFFDIO_REGISTER(MODE_MINOR) on memfd shmem failed: " + std::string(strerror(-rc));
    return nullptr;
  }
  return uffd;
}

// Whether this process has a page table entry for `addr` (/proc/self/pagemap
// bit 63): a page mapped by UFFDIO_CONTINUE has one, an unmapped one none.
inline bool mapped(const void* addr) {
  int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("open /proc/self/pagemap");
  uint64_t entry = 0;
  auto at = static_cast<off_t>(reinterpret_cast<uintptr_t>(addr) / 4096 * sizeof entry);
  ssize_t n = ::pread(fd, &entry, sizeof entry, at);
  ::close(fd);
  if (n != sizeof entry) throw std::runtime_error("read /proc/self/pagemap");
  return entry >> 63 & 1;
}

// Sends pages [first, first + count) of `src` (source guest RAM) as one Pages frame.
inline void send_pages(Channel& ch, const uint8_t* src, uint64_t page_size, uint64_t first, uint64_t count,
                       uint32_t flags) {
  PagesStats stats;
  auto payload = encode_pages(first * page_size, static_cast<uint32_t>(count * page_size / kChunk), src, nullptr, stats);
  ch.send(FrameType::Pages, flags, payload);
}

// Receives one Pages frame into `pages`; returns the pages it completed.
inline uint64_t receive_pages(Channel& ch, PageStates& pages, bool postcopy) {
  std::array<uint8_t, kHeaderSize> raw{};
  FrameHeader h = ch.receive_header(raw);
  if (h.type != FrameType::Pages) throw std::runtime_error("expected a Pages frame");
  return pages.receive_pages(ch, raw, h, postcopy);
}

// Source guest RAM whose every 4 KiB chunk starts with its own number (never all zero).
inline std::vector<uint8_t> numbered_ram(uint64_t bytes) {
  std::vector<uint8_t> ram(bytes, 0);
  for (uint64_t c = 0; c < bytes / kChunk; c++) {
    uint64_t tag = c + 1;
    std::memcpy(ram.data() + c * kChunk, &tag, sizeof tag);
  }
  return ram;
}

inline uint64_t tag_at(const uint8_t* p) {
  uint64_t tag = 0;
  std::memcpy(&tag, p, sizeof tag);
  return tag;
}

}  // namespace migration::test
