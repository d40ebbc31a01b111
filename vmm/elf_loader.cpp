#include "elf_loader.h"

#include <elf.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "error.h"

namespace vmm {

namespace {

constexpr uint32_t kXenElfnotePhys32Entry = 18;

// Reads a T at `off` if [off, off + sizeof(T)) lies within `file`.
template <typename T>
bool read_at(std::span<const uint8_t> file, uint64_t off, T& out) {
  if (off > file.size() || file.size() - off < sizeof(T)) return false;
  std::memcpy(&out, file.data() + off, sizeof(T));
  return true;
}

bool range_within(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

uint64_t align4(uint64_t v) { return (v + 3) & ~uint64_t{3}; }

void check_header(std::span<const uint8_t> file, const Elf64_Ehdr& eh) {
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) throw Error("guest image is not an ELF file (bad magic)");
  if (eh.e_ident[EI_CLASS] != ELFCLASS64) throw Error("guest image is not ELF64 (PVH loading here needs ELFCLASS64)");
  if (eh.e_ident[EI_DATA] != ELFDATA2LSB) throw Error("guest image is not little-endian");
  if (eh.e_machine != EM_X86_64) throw Error(fmt::format("guest image is for machine {}, not x86-64", eh.e_machine));
  if (eh.e_type != ET_EXEC) throw Error("guest image is not an executable (ET_EXEC)");
  if (eh.e_phnum == 0) throw Error("guest image has no program headers");
  if (eh.e_phentsize != sizeof(Elf64_Phdr))
    throw Error(fmt::format("guest image has program header size {}, expected {}", eh.e_phentsize,
                            sizeof(Elf64_Phdr)));
  if (!range_within(eh.e_phoff, uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr), file.size()))
    throw Error("guest image is truncated: program headers extend past the end of the file");
}

// Walks one PT_NOTE segment; returns true and sets `entry` on the PVH note.
bool find_pvh_note(std::span<const uint8_t> file, const Elf64_Phdr& ph, uint32_t& entry) {
  if (!range_within(ph.p_offset, ph.p_filesz, file.size()))
    throw Error("guest image is truncated: a PT_NOTE segment extends past the end of the file");
  uint64_t off = ph.p_offset, end = ph.p_offset + ph.p_filesz;
  while (end - off >= sizeof(Elf64_Nhdr)) {
    Elf64_Nhdr nh;
    read_at(file, off, nh);
    uint64_t name_off = off + sizeof nh, desc_off = name_off + align4(nh.n_namesz);
    uint64_t next = desc_off + align4(nh.n_descsz);
    if (next > end || next < off) throw Error("guest image has a malformed ELF note (sizes run past its segment)");
    bool is_xen = nh.n_namesz == 4 && std::memcmp(file.data() + name_off, "Xen", 4) == 0;
    if (is_xen && nh.n_type == kXenElfnotePhys32Entry) {
      if (nh.n_descsz != 4 && nh.n_descsz != 8)
        throw Error(fmt::format("PVH entry note has a {}-byte descriptor, expected 4 or 8", nh.n_descsz));
      uint64_t value = 0;
      std::memcpy(&value, file.data() + desc_off, nh.n_descsz);
      if (value > UINT32_MAX) throw Error(fmt::format("PVH entry {:#x} is above 4 GiB", value));
      entry = static_cast<uint32_t>(value);
      return true;
    }
    off = next;
  }
  return false;
}

}  // namespace

ElfImage parse_elf(std::span<const uint8_t> file) {
  Elf64_Ehdr eh;
  if (!read_at(file, 0, eh))
    throw Error(fmt::format("guest image is truncated: {} bytes is smaller than an ELF64 header", file.size()));
  check_header(file, eh);
  ElfImage img;
  bool have_entry = false;
  img.lowest = UINT64_MAX;
  for (uint16_t i = 0; i < eh.e_phnum; i++) {
    Elf64_Phdr ph;
    read_at(file, eh.e_phoff + uint64_t{i} * sizeof ph, ph);
    if (ph.p_type == PT_NOTE && !have_entry) have_entry = find_pvh_note(file, ph, img.pvh_entry);
    if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
    if (!range_within(ph.p_offset, ph.p_filesz, file.size()))
      throw Error(fmt::format("guest image is truncated: segment {} needs bytes [{:#x}, {:#x}) of a {}-byte file", i,
                              ph.p_offset, ph.p_offset + ph.p_filesz, file.size()));
    if (ph.p_filesz > ph.p_memsz) throw Error(fmt::format("segment {} has p_filesz > p_memsz", i));
    if (ph.p_paddr + ph.p_memsz < ph.p_paddr) throw Error(fmt::format("segment {} wraps the address space", i));
    img.segments.push_back({ph.p_paddr, ph.p_offset, ph.p_filesz, ph.p_memsz});
    img.lowest = std::min(img.lowest, ph.p_paddr);
    img.highest = std::max(img.highest, ph.p_paddr + ph.p_memsz);
  }
  if (img.segments.empty()) throw Error("guest image has no loadable (PT_LOAD) segment");
  if (!have_entry)
    throw Error("guest image has no PVH entry note (Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY); "
                "this VMM boots PVH guests only (Linux: CONFIG_PVH=y)");
  bool entry_loaded = false;
  for (const auto& s : img.segments) entry_loaded |= img.pvh_entry >= s.paddr && img.pvh_entry < s.paddr + s.memsz;
  if (!entry_loaded) throw Error(fmt::format("PVH entry {:#x} is not inside any loaded segment", img.pvh_entry));
  return img;
}

void load_elf(const ElfImage& image, std::span<const uint8_t> file, std::span<uint8_t> ram, uint64_t min_paddr) {
  for (size_t i = 0; i < image.segments.size(); i++) {
    const auto& s = image.segments[i];
    if (s.paddr < min_paddr || s.paddr + s.memsz > ram.size())
      throw Error(fmt::format("guest segment {} [{:#x}, {:#x}) lies outside guest RAM [{:#x}, {:#x}): "
                              "give the guest more memory or relink it",
                              i, s.paddr, s.paddr + s.memsz, min_paddr, ram.size()));
  }
  for (const auto& s : image.segments) {
    std::memcpy(ram.data() + s.paddr, file.data() + s.offset, s.filesz);
    std::memset(ram.data() + s.paddr + s.filesz, 0, s.memsz - s.filesz);
  }
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_errno(fmt::format("open({})", path), "check the --kernel path");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace vmm
