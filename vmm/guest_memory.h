// Guest RAM: one backend fd mapped twice. The primary view is given to KVM
// (and, on a postcopy destination, registered with userfaultfd); the alias
// view is never registered, so the VMM can fill pages through it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitmap.h"
#include "mapping.h"
#include "unique_fd.h"

namespace vmm {

class Vm;

enum class Backend { Gmem, Shmem, Hugetlb2M, Hugetlb1G };

std::string_view backend_name(Backend b);
std::optional<Backend> parse_backend(std::string_view name);
uint64_t backend_page_size(Backend b);

// How a guest_memfd is given to KVM: as a KVM_MEM_GUEST_MEMFD memslot (fd) or
// as a plain memslot over its mmap (hva), which vCPU faults reach through the VMA.
enum class GmemBind { Fd, Hva };
std::string_view gmem_bind_name(GmemBind b);

// Parses "256M", "1G", "4096", "2MiB" into bytes; nullopt when malformed.
std::optional<uint64_t> parse_size(std::string_view text);

// Throws vmm::Error when `size` cannot back this backend: not a multiple of the
// page size, or (hugetlb) not enough free hugepages, saying how to reserve them.
void check_backend_size(Backend b, uint64_t size);

class GuestMemory {
 public:
  // `vm` is required for Backend::Gmem (guest_memfd belongs to a VM).
  static GuestMemory create(Backend backend, uint64_t size, const Vm* vm);

  Backend backend() const { return backend_; }
  uint64_t size() const { return size_; }
  uint64_t page_size() const { return backend_page_size(backend_); }
  int fd() const { return fd_.get(); }
  uint8_t* primary() const { return primary_.data(); }
  std::span<uint8_t> span() const { return primary_.span(); }

  // A second MAP_SHARED view of the same pages.
  Mapping map_alias() const;
  // Allocates every page in the page cache, so that later first touches are
  // minor faults and a destination can register MINOR mode: fallocate(), or
  // for guest_memfd a write fault per page through an alias (see the .cpp).
  void populate() const;
  // One bit per 4 KiB chunk that may hold data; a clear bit is a chunk the
  // backend never allocated, so it reads as zero and need not be read at all
  // (reading it would allocate it). shmem asks SEEK_DATA (swap-safe); gmem and
  // hugetlb, which never swap, ask mincore().
  Bitmap allocated_chunks() const;
  // Fills our own view's page tables for the chunks set in `allocated`
  // (MADV_POPULATE_READ, one call per run), so that reading them later takes
  // no page fault. A guest on guest_memfd bound by fd writes its pages
  // without ever mapping them in our view: the page server would otherwise
  // take one fault per 4 KiB chunk it reads (docs/lab: figures from the
  // code's comments). Returns the
  // bytes mapped; throws vmm::Error naming the errno when madvise fails.
  uint64_t map_for_reading(const Bitmap& allocated) const;

 private:
  GuestMemory(Backend b, uint64_t size, UniqueFd fd, Mapping primary)
      : backend_(b), size_(size), fd_(std::move(fd)), primary_(std::move(primary)) {}

  Backend backend_;
  uint64_t size_;
  UniqueFd fd_;
  Mapping primary_;
};

}  // namespace vmm
