// What each side of a migration holds beside guest RAM, per page: the
// structures of source.h, page_server.h and page_states.h, counted. The
// memory formula in docs/reference.md is this function; tests/migration/budget_test.cpp
// checks it against the structures themselves, up to a 1 TiB guest.
#pragma once

#include <cstdint>

namespace migration {

struct MemoryBudget {
  // Bytes that grow with guest RAM.
  uint64_t source = 0;       // chunk bitmaps, the page server's per-page claim
  uint64_t destination = 0;  // per-page state and wait marks, the covered-chunk bitmap
  // Bytes that do not (frame buffers, thread stacks in use, the logger), as
  // measured here (RssAnon of a migration of 512 MiB, rounded up).
  static constexpr uint64_t kSourceFixed = 6ULL << 20, kDestinationFixed = 8ULL << 20;
};

// For a guest of `mem_size` bytes, counted in the destination's pages of
// `page_size` bytes; `hybrid`: with precopy's dirty bitmaps.
MemoryBudget memory_budget(uint64_t mem_size, uint64_t page_size, bool hybrid);

}  // namespace migration
