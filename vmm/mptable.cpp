#include "mptable.h"

#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "error.h"
#include "layout.h"

#include "mptable_abi.h"

namespace vmm {

namespace {

constexpr uint8_t kLapicVersion = 0x14;  // an integrated APIC, as KVM's LAPIC reports
constexpr uint8_t kIoapicVersion = 0x11;  // KVM's IOAPIC
constexpr uint32_t kIsaIrqs = 16;

template <typename T>
void append(std::vector<uint8_t>& out, const T& v) {
  auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

uint8_t checksum(const uint8_t* p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; i++) sum = static_cast<uint8_t>(sum + p[i]);
  return static_cast<uint8_t>(-sum);
}

}  // namespace

void write_mp_table(std::span<uint8_t> ram, uint32_t vcpus) {
  if (vcpus == 0 || vcpus > kMaxVcpus)
    throw Error(fmt::format("{} vCPUs: the MP table here describes 1 to {}", vcpus, kMaxVcpus));
  const auto ioapic_id = static_cast<uint8_t>(vcpus);  // the first APIC ID no CPU holds
  std::vector<uint8_t> entries;
  uint16_t count = 0;
  for (uint32_t i = 0; i < vcpus; i++, count++)
    append(entries, mp_processor{MP_ENTRY_PROCESSOR, static_cast<uint8_t>(i), kLapicVersion,
                                 static_cast<uint8_t>(MP_CPU_ENABLED | (i == 0 ? MP_CPU_BOOT : 0)), 0x600, 0x201, {}});
  append(entries, mp_bus{MP_ENTRY_BUS, 0, {'I', 'S', 'A', ' ', ' ', ' '}});
  append(entries, mp_ioapic{MP_ENTRY_IOAPIC, ioapic_id, kIoapicVersion, 1, MP_IOAPIC_BASE});
  count += 2;
  for (uint8_t irq = 0; irq < kIsaIrqs; irq++, count++)  // ISA IRQ n on IOAPIC pin n, IRQ 0 on pin 2 as on a PC
    append(entries, mp_intsrc{MP_ENTRY_INTSRC, 0, 0, 0, irq, ioapic_id, static_cast<uint8_t>(irq == 0 ? 2 : irq)});
  append(entries, mp_intsrc{MP_ENTRY_LINTSRC, 3, 0, 0, 0, 0xff, 0});  // ExtINT on every LAPIC's LINT0
  append(entries, mp_intsrc{MP_ENTRY_LINTSRC, 1, 0, 0, 0, 0xff, 1});  // NMI on LINT1
  count += 2;

  const uint64_t config_gpa = layout::kMpTable + sizeof(mp_floating);
  mp_config config{};
  config.signature = MP_CONFIG_SIGNATURE;
  config.length = static_cast<uint16_t>(sizeof config + entries.size());
  config.spec_rev = MP_SPEC_REV;
  std::memcpy(config.oem, "VMMPOSTC", 8);
  std::memcpy(config.product, "POSTCOPY-VMM", 12);
  config.entries = count;
  config.lapic_paddr = MP_LAPIC_BASE;
  std::vector<uint8_t> table;
  append(table, config);
  table.insert(table.end(), entries.begin(), entries.end());
  table[offsetof(mp_config, checksum)] = checksum(table.data(), table.size());
  if (config_gpa + table.size() > layout::kMpTable + layout::kMpTableMax)
    throw Error(fmt::format("the MP table for {} vCPUs takes {} bytes, more than its {}", vcpus, table.size(),
                            layout::kMpTableMax));

  mp_floating fp{};
  fp.signature = MP_FLOATING_SIGNATURE;
  fp.config_paddr = static_cast<uint32_t>(config_gpa);
  fp.length = 1;
  fp.spec_rev = MP_SPEC_REV;
  fp.checksum = checksum(reinterpret_cast<const uint8_t*>(&fp), sizeof fp);
  std::memcpy(ram.data() + layout::kMpTable, &fp, sizeof fp);
  std::memcpy(ram.data() + config_gpa, table.data(), table.size());
}

}  // namespace vmm
