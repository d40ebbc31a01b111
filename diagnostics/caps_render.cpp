#include <fmt/format.h>

#include "caps.h"

namespace vmm {

namespace {

using json = nlohmann::ordered_json;

std::string yes_no(const json& j, const char* ok_key, const char* result_key) {
  if (j.value(ok_key, false)) return "yes";
  return fmt::format("no ({})", j.value(result_key, "?"));
}

void render_registration(std::string& out, const json& reg) {
  out += "userfaultfd registration per RAM backend (one page, live):\n";
  for (const auto& [name, r] : reg.items()) {
    if (!r.value("probed", false)) {
      out += fmt::format("  {:<11} not probed: {}\n", name, r.value("reason", "?"));
      continue;
    }
    out += fmt::format("  {:<11} MINOR: {:<12} UFFDIO_CONTINUE: {:<4} MISSING: {}\n", name,
                       yes_no(r, "minor", "minor_result"), r.value("continue_ioctl", false) ? "yes" : "no",
                       yes_no(r, "missing", "missing_result"));
  }
}

}  // namespace

std::string render_capabilities(const nlohmann::ordered_json& c) {
  std::string out = fmt::format("host: {}\n", c.value("host", "?"));
  const json& kvm = c["kvm"];
  if (!kvm.value("available", false)) {
    out += fmt::format("KVM: unavailable: {}\n", kvm.value("error", "?"));
  } else {
    out += fmt::format("KVM: API version {}\n", kvm.value("api_version", 0));
    for (const auto& [name, v] : kvm["caps"].items()) out += fmt::format("  {:<36} {}\n", name, v.get<int>());
    const json& g = c["guest_memfd"];
    out += fmt::format("guest_memfd: flags {:#x} (MMAP {}, INIT_SHARED {}), create with MMAP|INIT_SHARED: {}\n",
                       g.value("flags", 0), g.value("flag_mmap", false) ? "yes" : "no",
                       g.value("flag_init_shared", false) ? "yes" : "no", g.value("create_mmap_init_shared", "?"));
    if (g.contains("hidden_by"))
      out += fmt::format("  hidden by {}: this VMM answers as a KVM without it would\n", g["hidden_by"].get<std::string>());
    if (g.contains("missing")) out += fmt::format("  not usable: {}\n", g["missing"].get<std::string>());
    const json& d = c["dirty_log"];
    out += fmt::format("dirty logging: on a KVM_MEM_GUEST_MEMFD slot: {}; on an hva slot over guest_memfd: {}\n",
                       d.value("gmem_fd_slot", "?"), d.value("gmem_hva_slot", "?"));
  }
  const json& u = c["userfaultfd"];
  if (u.value("available", false)) {
    std::string names;
    // append(), not `" " + s`: GCC 12 at -O3 reports a false -Wrestrict on that.
    for (const auto& n : u["feature_names"]) names.append(" ").append(n.get<std::string>());
    out += fmt::format("userfaultfd: API {:#x}, features {:#x}:{}\n", u.value("api", 0), u.value("features", 0),
                       names);
  } else {
    out += fmt::format("userfaultfd: unavailable: {}\n", u.value("error", "?"));
  }
  if (c.contains("minor_registration")) render_registration(out, c["minor_registration"]);
  out += "hugepages:\n";
  for (const auto& [name, p] : c["hugepages"].items())
    out += fmt::format("  {:<11} {} reserved, {} free{}\n", name, p.value("reserved", 0), p.value("free", 0),
                       p.value("exists", false) ? "" : " (size not offered by this kernel)");
  if (c.contains("migration")) {
    std::string dests;
    for (const auto& n : c["migration"]["postcopy_destination_backends"]) dests.append(" ").append(n.get<std::string>());
    out += fmt::format("postcopy (uffd MINOR + CONTINUE) destinations on this host:{}\n",
                       dests.empty() ? " none" : dests);
  }
  return out;
}

}  // namespace vmm
