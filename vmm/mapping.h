// An mmap'ed range that is unmapped in the destructor.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

namespace vmm {

class Mapping {
 public:
  Mapping() = default;
  Mapping(void* addr, size_t length) : addr_(static_cast<uint8_t*>(addr)), length_(length) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  Mapping(Mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), length_(std::exchange(o.length_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      unmap();
      addr_ = std::exchange(o.addr_, nullptr);
      length_ = std::exchange(o.length_, 0);
    }
    return *this;
  }
  ~Mapping() { unmap(); }

  uint8_t* data() const { return addr_; }
  size_t size() const { return length_; }
  std::span<uint8_t> span() const { return {addr_, length_}; }
  explicit operator bool() const { return addr_ != nullptr; }

 private:
  void unmap() {
    if (addr_) ::munmap(addr_, length_);
    addr_ = nullptr;
    length_ = 0;
  }
  uint8_t* addr_ = nullptr;
  size_t length_ = 0;
};

}  // namespace vmm
