#include "memory_budget.h"

#include "messages.h"

namespace migration {

MemoryBudget memory_budget(uint64_t mem_size, uint64_t page_size, bool hybrid) {
  uint64_t chunks = mem_size / kChunk, pages = mem_size / page_size;
  auto bitmap = [](uint64_t bits) { return vmm::Bitmap::words_for(bits) * 8; };
  MemoryBudget b;
  // Source: sent_ and dest_nonzero_ (Source), the allocated-chunk bitmap
  // (PageServer's copy, and the one it is made from), the final dirty set;
  // precopy adds pending_dirty_ and two round bitmaps (to send, dirtied).
  // Per destination page: the page server's claim byte and its missing bitmap.
  b.source = (5 + (hybrid ? 3 : 0)) * bitmap(chunks) + pages + bitmap(pages);
  // Destination: PageStates' state and wanted bytes, its covered-chunk and
  // content-page bitmaps.
  b.destination = 2 * pages + bitmap(chunks) + bitmap(pages);
  return b;
}

}  // namespace migration
