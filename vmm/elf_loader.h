// ELF64 guest images booted through PVH: parse (pure, defensive) and load.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace vmm {

struct ElfSegment {
  uint64_t paddr = 0;
  uint64_t offset = 0;
  uint64_t filesz = 0;
  uint64_t memsz = 0;
};

struct ElfImage {
  uint32_t pvh_entry = 0;  // XEN_ELFNOTE_PHYS32_ENTRY: 32-bit protected-mode entry
  std::vector<ElfSegment> segments;  // PT_LOAD only
  uint64_t lowest = 0;               // lowest paddr loaded
  uint64_t highest = 0;              // end of the highest segment
};

// Parses and validates the ELF headers, program headers and PVH note of `file`.
// Throws vmm::Error naming the exact defect (truncated, wrong class, no note...).
ElfImage parse_elf(std::span<const uint8_t> file);

// Checks that every segment lies within [min_paddr, ram.size()) and copies it
// into `ram`, zeroing the bss part. Throws vmm::Error otherwise, before writing.
void load_elf(const ElfImage& image, std::span<const uint8_t> file, std::span<uint8_t> ram, uint64_t min_paddr);

std::vector<uint8_t> read_file(const std::string& path);

}  // namespace vmm
