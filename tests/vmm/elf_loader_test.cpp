// The ELF/PVH loader on the real guest and on hand-built good and bad images.
#include "elf_loader.h"

#include <elf.h>

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "error.h"

namespace {

using vmm::ElfImage;

// Builds a minimal ELF64: one PT_LOAD at `paddr` and, optionally, a PT_NOTE
// holding the Xen PVH entry note.
struct ElfBuilder {
  uint64_t paddr = 0x100000;
  uint64_t memsz = 0x2000;
  uint32_t entry = 0x100000;
  bool with_note = true;
  uint32_t desc_size = 8;

  std::vector<uint8_t> build() const {
    std::vector<uint8_t> f(0x1000, 0);
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_phoff = sizeof eh;
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = with_note ? 2 : 1;
    std::memcpy(f.data(), &eh, sizeof eh);
    Elf64_Phdr load{};
    load.p_type = PT_LOAD;
    load.p_offset = 0x800;
    load.p_paddr = load.p_vaddr = paddr;
    load.p_filesz = 0x100;
    load.p_memsz = memsz;
    std::memcpy(f.data() + eh.e_phoff, &load, sizeof load);
    std::memset(f.data() + 0x800, 0xab, 0x100);
    if (with_note) {
      Elf64_Phdr note{};
      note.p_type = PT_NOTE;
      note.p_offset = 0x400;
      note.p_filesz = 12 + 4 + desc_size;
      std::memcpy(f.data() + eh.e_phoff + sizeof(Elf64_Phdr), &note, sizeof note);
      uint32_t hdr[3] = {4, desc_size, 18};
      std::memcpy(f.data() + 0x400, hdr, sizeof hdr);
      std::memcpy(f.data() + 0x40c, "Xen", 4);
      uint64_t e = entry;
      std::memcpy(f.data() + 0x410, &e, desc_size);
    }
    return f;
  }
};

std::string parse_error(const std::vector<uint8_t>& file) {
  try {
    vmm::parse_elf(file);
  } catch (const vmm::Error& e) {
    return e.what();
  }
  return "";
}

TEST(ElfLoader, ParsesTheRealGuestAndFindsItsPvhEntry) {
  std::vector<uint8_t> file = vmm::read_file(GUEST_ELF);
  ElfImage img = vmm::parse_elf(file);
  EXPECT_GE(img.pvh_entry, 0x100000u);
  EXPECT_EQ(img.lowest, 0x100000u);
  EXPECT_FALSE(img.segments.empty());
}

TEST(ElfLoader, AcceptsFourAndEightByteNoteDescriptors) {
  ElfBuilder b;
  EXPECT_EQ(vmm::parse_elf(b.build()).pvh_entry, 0x100000u);
  b.desc_size = 4;
  EXPECT_EQ(vmm::parse_elf(b.build()).pvh_entry, 0x100000u);
}

TEST(ElfLoader, LoadCopiesFileBytesAndZeroesBss) {
  ElfBuilder b;
  auto file = b.build();
  std::vector<uint8_t> ram(4 << 20, 0xcc);
  vmm::load_elf(vmm::parse_elf(file), file, ram, 0x100000);
  EXPECT_EQ(ram[0x100000], 0xab);
  EXPECT_EQ(ram[0x1000ff], 0xab);
  EXPECT_EQ(ram[0x100100], 0x00) << "bss must be zeroed";
  EXPECT_EQ(ram[0x101fff], 0x00);
  EXPECT_EQ(ram[0x102000], 0xcc) << "nothing past the segment is written";
}

TEST(ElfLoader, RejectsEmptyAndTruncatedHeaders) {
  EXPECT_NE(parse_error({}).find("truncated"), std::string::npos);
  auto f = ElfBuilder{}.build();
  f.resize(40);
  EXPECT_NE(parse_error(f).find("smaller than an ELF64 header"), std::string::npos);
}

TEST(ElfLoader, RejectsNonElfAndWrongClassOrMachine) {
  auto f = ElfBuilder{}.build();
  f[0] = 'X';
  EXPECT_NE(parse_error(f).find("not an ELF"), std::string::npos);
  f = ElfBuilder{}.build();
  f[EI_CLASS] = ELFCLASS32;
  EXPECT_NE(parse_error(f).find("not ELF64"), std::string::npos);
  f = ElfBuilder{}.build();
  f[offsetof(Elf64_Ehdr, e_machine)] = EM_AARCH64;
  EXPECT_NE(parse_error(f).find("not x86-64"), std::string::npos);
}

TEST(ElfLoader, RejectsProgramHeadersPastTheEnd) {
  auto f = ElfBuilder{}.build();
  uint16_t phnum = 500;
  std::memcpy(f.data() + offsetof(Elf64_Ehdr, e_phnum), &phnum, 2);
  EXPECT_NE(parse_error(f).find("program headers extend past"), std::string::npos);
}

TEST(ElfLoader, RejectsSegmentDataPastTheEnd) {
  auto f = ElfBuilder{}.build();
  f.resize(0x880);  // the PT_LOAD needs [0x800, 0x900)
  EXPECT_NE(parse_error(f).find("segment 0 needs bytes"), std::string::npos);
}

TEST(ElfLoader, RejectsAnImageWithoutThePvhNote) {
  ElfBuilder b;
  b.with_note = false;
  EXPECT_NE(parse_error(b.build()).find("no PVH entry note"), std::string::npos);
}

TEST(ElfLoader, RejectsANoteWhoseSizesOverrunItsSegment) {
  auto f = ElfBuilder{}.build();
  uint32_t huge = 0xfffffff0;
  std::memcpy(f.data() + 0x404, &huge, 4);  // n_descsz
  EXPECT_NE(parse_error(f).find("malformed ELF note"), std::string::npos);
}

TEST(ElfLoader, RejectsAnEntryOutsideTheLoadedSegments) {
  ElfBuilder b;
  b.entry = 0x500000;
  EXPECT_NE(parse_error(b.build()).find("not inside any loaded segment"), std::string::npos);
}

TEST(ElfLoader, RefusesSegmentsOutsideGuestRamBeforeWritingAnything) {
  ElfBuilder b;
  b.paddr = 0x3ff000;
  b.entry = 0x3ff000;
  auto file = b.build();
  std::vector<uint8_t> ram(4 << 20, 0xcc);
  try {
    vmm::load_elf(vmm::parse_elf(file), file, ram, 0x100000);
    FAIL() << "a segment ending past RAM must be refused";
  } catch (const vmm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside guest RAM"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ram[0x3ff000], 0xcc);
}

TEST(ElfLoader, RefusesSegmentsBelowOneMiB) {
  ElfBuilder b;
  b.paddr = 0x1000;
  b.entry = 0x1000;
  auto file = b.build();
  std::vector<uint8_t> ram(4 << 20);
  EXPECT_THROW(vmm::load_elf(vmm::parse_elf(file), file, ram, 0x100000), vmm::Error);
}

}  // namespace
