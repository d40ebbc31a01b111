#!/usr/bin/env python3
"""Checks the project's layers: a folder includes headers only from itself and
from the folders below it, so no two folders include each other.

  guest/                     the guest and the ABI it shares with the VMM
  vmm/                       KVM objects, memory, boot, devices: guest/
  diagnostics/               what the host can do: vmm/ and guest/
  migration/protocol/        the wire: vmm/ and guest/
  migration/report/          metrics and views: protocol/ and below
  migration/source/,         each: report/, protocol/ and below, never each other
  migration/destination/
  cli/                       the binary: everything above

diagnostics/ and the migration rooms do not include each other.

Includes are bare names ("kvm.h"); each is found among the project's headers.
Prints the folder graph it found; exits 1 naming each include that breaks a layer.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = {"vmm", "guest"}
PROTOCOL, REPORT = "migration/protocol", "migration/report"
SOURCE, DESTINATION = "migration/source", "migration/destination"
MAY_INCLUDE = {
    "guest": {"guest"},
    "vmm": BASE,
    "diagnostics": {"diagnostics"} | BASE,
    PROTOCOL: {PROTOCOL} | BASE,
    REPORT: {REPORT, PROTOCOL} | BASE,
    SOURCE: {SOURCE, REPORT, PROTOCOL} | BASE,
    DESTINATION: {DESTINATION, REPORT, PROTOCOL} | BASE,
    "cli": {"cli", "diagnostics", PROTOCOL, REPORT, SOURCE, DESTINATION} | BASE,
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main():
    where = {}  # header name -> folders that hold one by that name
    for folder in MAY_INCLUDE:
        for h in (ROOT / folder).rglob("*.h"):
            where.setdefault(h.name, set()).add(folder)
    graph, wrong, files, size = {}, [], 0, {}
    for folder, allowed in MAY_INCLUDE.items():
        for src in sorted((ROOT / folder).rglob("*")):
            if src.suffix not in (".c", ".cpp", ".h", ".S"):
                continue
            files += 1
            text = src.read_text(errors="replace")
            n, lines = size.get(folder, (0, 0))
            size[folder] = (n + 1, lines + text.count("\n"))
            for name in INCLUDE.findall(text):
                holders = where.get(pathlib.Path(name).name, set())
                if not holders or folder in holders:
                    continue  # a system header, or one of its own
                for h in holders:
                    graph.setdefault(folder, set()).add(h)
                if not holders & allowed:
                    wrong.append(f"{src.relative_to(ROOT)} includes \"{name}\" from {'/, '.join(sorted(holders))}/ "
                                 f"(may include {'/, '.join(sorted(allowed))}/)")
    for folder in MAY_INCLUDE:
        n, lines = size.get(folder, (0, 0))
        print(f"{folder + '/':24} {n:3} files {lines:6} lines; includes "
              f"{', '.join(f + '/' for f in sorted(graph.get(folder, ()))) or 'nothing else'}")
    cycles = [(a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ())]
    for a, b in cycles:
        wrong.append(f"{a}/ and {b}/ include each other")
    if wrong:
        print("\n".join(wrong))
        return 1
    print(f"layering: {files} files, no folder includes one above it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
