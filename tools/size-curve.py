#!/usr/bin/env python3
"""How postcopy's cost grows with guest RAM: the size curve.

For each guest size (default 512 MiB, 1, 4, 8 GiB), in interleaved rounds, the
touch guest (the same --working-set at every size, default 256 MiB, written
at random and verified page by page) migrates over loopback from guest_memfd (or
shmem where this KVM has none, saying why) to
each --dsts backend with each --modes mode, `vmm receive --report`. Per run it
records downtime (source stop -> state sent, plus destination state -> vCPU
running, and its parts), the push rate, 4 KiB fault p50/p99, and both VMMs'
own memory beyond guest RAM: the peak of RssAnon (heap, bitmaps, stacks; guest
RAM is shared memory or hugetlb and is not in it), sampled every 50 ms.

It prints one table row per size and case (medians, [min-max] over the
rounds) and judges the issue's targets against the smallest size in the same
run: downtime at the largest <= 1.2x the smallest and < 2 ms, push >= 0.8x,
fault p50 and p99 within 1.2x, VMM memory beyond guest RAM <= 1% of guest RAM.
Hugepages for hugetlb destinations are reserved with tools/hugepages.sh and
given back.

  tools/size-curve.py [--runs 3] [--sizes 512M,1G,4G,8G] [--dsts shmem,hugetlb-2m]
                      [--modes postcopy,hybrid] [--working-set 256] [--out DIR]
The 8 GiB lab case: --sizes 8G --working-set 1024 --dsts shmem,hugetlb-2m,hugetlb-1g.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMM = os.path.join(ROOT, "build/vmm")
GUEST = os.path.join(ROOT, "build/guest/guest.elf")
HUGEPAGES = os.path.join(ROOT, "tools/hugepages.sh")
sys.path.insert(0, os.path.join(ROOT, "tools"))
free_port = __import__("qemu-postcopy").free_port
import vmm_host  # noqa: E402  (the source's backend; destinations that end with their source)

UNITS = {"M": 1 << 20, "G": 1 << 30}


def parse_size(s):
    if not s or s[-1] not in UNITS or not s[:-1].isdigit():
        raise SystemExit("size-curve: a size is a number with M or G, not %r" % s)
    return int(s[:-1]) * UNITS[s[-1]]


def rss_anon_kib(pid):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakRss:
    """The peak RssAnon of some processes, sampled every 50 ms until stopped."""

    def __init__(self):
        self.pids, self.peak, self.stop = {}, {}, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def watch(self, name, pid):
        self.pids[name] = pid
        self.peak.setdefault(name, 0)

    def loop(self):
        while not self.stop.wait(0.05):
            for name, pid in list(self.pids.items()):
                self.peak[name] = max(self.peak[name], rss_anon_kib(pid))

    def done(self):
        self.stop.set()
        self.thread.join()
        return self.peak


def one(out, size, dst, mode, rnd, working, src):
    name = "%s-%s-%dM-r%d" % (dst, mode, size >> 20, rnd)
    # Long enough to outlast the destination's handshake, which populates all
    # of guest RAM first (MINOR mode): 8 GiB of hugetlb 2 MiB pages took 40 s
    # here, of shmem 3 s.
    seconds = 10 + (size >> 30) * (6 if dst.startswith("hugetlb") else 1)
    report = os.path.join(out, name + ".report.json")
    port = free_port()
    rss = PeakRss()
    dlog = open(os.path.join(out, name + ".dst.log"), "w")
    d = subprocess.Popen([VMM, "receive", "--listen", "127.0.0.1:%d" % port, "--memory", dst, "--report", report]
                         + vmm_host.ACCEPT_TIMEOUT,
                         stdout=dlog, stderr=subprocess.STDOUT, text=True)
    rss.watch("dst", d.pid)
    for _ in range(200):  # its listening line, not a probe connection
        time.sleep(0.025)
        if "listening" in open(dlog.name).read():
            break
    src_args = [VMM, "run", "--kernel", GUEST, "--cmdline", "workload=touch size=%d seconds=%d" % (working, seconds),
                "--memory", src, "--mem-size", "%dM" % (size >> 20), "--mode", mode, "--migrate-to",
                "127.0.0.1:%d" % port, "--migrate-after", "1", "--migrate-after-line", "touch: filled"]
    if mode != "postcopy" and src == "gmem":  # dirty logging needs guest_memfd bound by hva
        src_args += ["--gmem-bind", "hva"]
    slog = open(os.path.join(out, name + ".src.log"), "w")
    s = subprocess.Popen(src_args, stdout=slog, stderr=subprocess.STDOUT, text=True)
    rss.watch("src", s.pid)
    s.wait(timeout=600)
    vmm_host.end_destination(d, s.returncode, 600)
    peak = rss.done()
    run = {"name": name, "size": size, "dst": dst, "mode": mode, "round": rnd, "src_rc": s.returncode,
           "dst_rc": d.returncode, "verify_ok": "VERIFY OK" in open(dlog.name).read(),
           "rss_anon_kib": peak}
    m = re.search(r"switchover: .* \((\d+) stale ranges\)", open(slog.name).read())
    run["stale_ranges"] = int(m.group(1)) if m else None
    if os.path.exists(report):
        rep = json.load(open(report))
        run.update({k: rep.get(k) for k in ("downtime_ms", "downtime_breakdown_ms", "push_mib_per_s", "faults",
                                             "page_size")})
        run["p50_us"], run["p99_us"] = rep["latency_us"]["p50"], rep["latency_us"]["p99"]
    json.dump(run, open(os.path.join(out, name + ".json"), "w"), indent=2)
    print("size-curve: %s -> %s" % (name, "VERIFY OK" if run["verify_ok"] else "FAILED"), file=sys.stderr)
    return run


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def cell(values, fmt="%.0f"):
    m, lo, hi = med(values)
    return "-" if m is None else (fmt + " [" + fmt + "-" + fmt + "]") % (m, lo, hi)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="512M,1G,4G,8G")
    ap.add_argument("--dsts", default="shmem,hugetlb-2m")
    ap.add_argument("--modes", default="postcopy,hybrid")
    ap.add_argument("--working-set", type=int, default=256, help="MiB the guest writes and verifies, at every size")
    ap.add_argument("--out", default=os.path.join(ROOT, "lab-results/size-curve"))
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    if args.working_set << 20 > min(sizes) // 2:
        raise SystemExit("size-curve: a --working-set of %d MiB does not fit in half of the smallest guest"
                         % args.working_set)
    dsts, modes = args.dsts.split(","), args.modes.split(",")
    for d in dsts:
        if d not in ("shmem", "hugetlb-2m", "hugetlb-1g"):
            raise SystemExit("size-curve: a destination is shmem, hugetlb-2m or hugetlb-1g, not %r" % d)
    os.makedirs(args.out, exist_ok=True)
    src = vmm_host.source_backend(VMM, "size-curve")
    reserved = []
    try:
        for d, unit, arg in (("hugetlb-2m", 2 << 20, "2m"), ("hugetlb-1g", 1 << 30, "1g")):
            if d not in dsts:
                continue
            n = max(sizes) // unit
            if subprocess.run([HUGEPAGES, "reserve", arg, str(n)]).returncode:
                print("size-curve: cannot reserve %d %s pages: no %s runs" % (n, arg, d), file=sys.stderr)
                dsts.remove(d)
            else:
                reserved.append((arg, n))
        runs = []
        for rnd in range(args.runs):  # interleaved: every size in every round
            for size in sizes:
                for d in dsts:
                    for mode in modes:
                        runs.append(one(args.out, size, d, mode, rnd, args.working_set, src))
        print(table(runs, sizes, dsts, modes))
        open(os.path.join(args.out, "size-curve.md"), "w").write(table(runs, sizes, dsts, modes) + "\n")
        return 0 if all(r["verify_ok"] for r in runs) else 1
    finally:
        for arg, n in reserved:
            subprocess.run([HUGEPAGES, "release", arg, str(n)])


def table(runs, sizes, dsts, modes):
    lines = ["| guest RAM | destination | mode | downtime ms | dst start ms | push MiB/s | 4 KiB p50 us | p99 us "
             "| source RssAnon MiB | destination RssAnon MiB | VERIFY |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in dsts:
        for mode in modes:
            for size in sizes:
                rs = [r for r in runs if r["size"] == size and r["dst"] == d and r["mode"] == mode]
                small = d == "shmem"
                lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d |" % (
                    "%d MiB" % (size >> 20) if size < 1 << 30 else "%d GiB" % (size >> 30), d, mode,
                    cell([r.get("downtime_ms") for r in rs], "%.2f"),
                    cell([(r.get("downtime_breakdown_ms") or {}).get("destination_restore_parts", {}).get("start_guest")
                          for r in rs], "%.2f"),
                    cell([r.get("push_mib_per_s") for r in rs]),
                    cell([r.get("p50_us") for r in rs]) if small else "-",
                    cell([r.get("p99_us") for r in rs]) if small else "-",
                    cell([r["rss_anon_kib"].get("src", 0) / 1024 for r in rs], "%.1f"),
                    cell([r["rss_anon_kib"].get("dst", 0) / 1024 for r in rs], "%.1f"),
                    sum(r["verify_ok"] for r in rs), len(rs)))
    lines += ["", "Targets, largest against smallest size in this run (medians):", ""]
    lo, hi = sizes[0], sizes[-1]
    for d in dsts:
        for mode in modes:
            a = [r for r in runs if r["size"] == lo and r["dst"] == d and r["mode"] == mode]
            b = [r for r in runs if r["size"] == hi and r["dst"] == d and r["mode"] == mode]
            if not a or not b:
                continue

            def ratio(key, sub=None):
                x = med([r.get(key) for r in a])[0]
                y = med([r.get(key) for r in b])[0]
                return (y / x if x else None), x, y

            dt, dx, dy = ratio("downtime_ms")
            push, px, py = ratio("push_mib_per_s")
            parts = ["downtime %.2f -> %.2f ms (%.2fx; target <= 1.2x and < 2 ms: %s)" % (
                dx, dy, dt, "PASS" if dt <= 1.2 and dy < 2 else "MISS")]
            parts.append("push %.0f -> %.0f MiB/s (%.2fx; target >= 0.8x: %s)" % (
                px, py, push, "PASS" if push >= 0.8 else "MISS"))
            if d == "shmem":
                for key in ("p50_us", "p99_us"):
                    q, x, y = ratio(key)
                    parts.append("%s %.0f -> %.0f us (%.2fx; target <= 1.2x: %s)" % (
                        key[:3], x, y, q, "PASS" if q <= 1.2 else "MISS"))
                over = max(r["rss_anon_kib"].get("src", 0) for r in b), max(r["rss_anon_kib"].get("dst", 0) for r in b)
                pct = [100.0 * kib * 1024 / hi for kib in over]
                parts.append("VMM memory beyond guest RAM at %d GiB: source %.2f%%, destination %.2f%% "
                             "(target <= 1%%: %s)" % (hi >> 30, pct[0], pct[1],
                                                     "PASS" if max(pct) <= 1 else "MISS"))
            lines.append("- %s %s: %s" % (d, mode, "; ".join(parts)))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
