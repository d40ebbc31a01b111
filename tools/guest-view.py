#!/usr/bin/env python3
"""The guest's view of postcopy, ours beside QEMU's, judged against control runs.

Each round, interleaved: our VMM running the touch guest without migrating
(control), our VMM migrating it (guest_memfd source, or shmem where this
KVM has no guest_memfd -> shmem destination,
postcopy from the start, loopback), and for each QEMU asked for
(tools/qemu-postcopy.py: 11.1 from tools/qemu-peer.sh, 7.2 from Debian) its
control and its postcopy migration with postcopy-preempt on memfd. Every
migration starts --delay seconds after the source guest prints
"touch: filled": the same point of the guest's work under both VMMs.

The instrument is the guest's own record of its touches (touch.c: every touch
>= 32 us, with when and which page), the same under both VMMs:
  stall    sum of the slow touches' time; a migration's figure minus the
           median of its VMM's control runs is what migration cost the guest
  slowest  the slowest touch of the run (the control's slowest beside it)
For our runs the destination joins each fault it recorded with the guest's
touch of that page (its report's guest_view), giving the waterfall: what the
guest saw, the VMM's stages (event read -> request sent -> data in -> mapped),
and what neither explains (vCPU exit and entry, wake-ups, waiting for a core).
Each round also measures the floors (build/bench/baselines: 4 KiB TCP round
trip, local userfaultfd MINOR round trip on the destination's backend) and the
guest reports one vCPU exit's cost (EXITCOST, CPUID); the guest-observed fault
latency is judged against their sum.

--backend picks the destination's memory: shmem (4 KiB pages; QEMU on memfd),
hugetlb-2m or hugetlb-1g (QEMU on hugetlb memfd of that size, both ends). The
hugepages it needs are reserved with tools/hugepages.sh and given back.

  tools/guest-view.py [--runs 3] [--qemu 11.1[,7.2]] [--backend shmem|hugetlb-2m|hugetlb-1g]
                      [--size 64] [--seconds 6] [--mem 512] [--out DIR]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMM = os.path.join(ROOT, "build/vmm")
GUEST = os.path.join(ROOT, "build/guest/guest.elf")
sys.path.insert(0, os.path.join(ROOT, "tools"))
_peer = __import__("qemu-postcopy")  # the same parsing of the guest's record, the same port picking
slow_summary, free_port, exit_cost = _peer.slow_summary, _peer.free_port, _peer.exit_cost
import vmm_host  # noqa: E402  (the source's backend; destinations that end with their source)


def ours(args, out, name, migrate):
    cmdline = "workload=touch size=%d seconds=%d record_us=32 share=%s" % (args.size, args.seconds, args.share)
    run = [VMM, "run", "--kernel", GUEST, "--cmdline", cmdline, "--memory", args.src_memory, "--mem-size",
           "%dM" % args.mem, "--vcpus", str(args.vcpus)]
    if args.src_memory == "gmem":  # the same memslot in the control run and the migration
        run += ["--gmem-bind", "hva"]
    report = os.path.join(out, name + ".report.json")
    serial = os.path.join(out, name + ".serial")
    if not migrate:
        r = subprocess.run(run + ["--serial-log", serial], capture_output=True, text=True, timeout=args.seconds + 60)
        text = open(serial, errors="replace").read()
        return {"rc": r.returncode, "serial": text}
    port = free_port()
    log = os.path.join(out, name + ".dst.log")
    d = subprocess.Popen([VMM, "receive", "--listen", "127.0.0.1:%d" % port, "--memory", args.backend, "--report", report,
                          "--serial-log", serial] + vmm_host.ACCEPT_TIMEOUT, stdout=subprocess.DEVNULL,
                         stderr=open(log, "w"))
    # Wait for its listening line: a probe connection would be taken for the source.
    deadline = time.time() + 10
    while time.time() < deadline and "listening" not in open(log).read():
        time.sleep(0.02)
    r = subprocess.run(run + ["--migrate-to", "127.0.0.1:%d" % port, "--mode", "postcopy", "--migrate-after",
                              str(args.delay), "--migrate-after-line", "touch: filled", "--serial-log",
                              os.path.join(out, name + ".src.serial")],
                       capture_output=True, text=True, timeout=args.seconds + 120)
    vmm_host.end_destination(d, r.returncode, args.seconds + 120)
    text = open(serial, errors="replace").read()
    rep = json.load(open(report)) if os.path.exists(report) else {}
    return {"rc": r.returncode, "dst_rc": d.returncode, "serial": text, "report": rep}


def qemu(args, out, name, version, migrate):
    cmd = [sys.executable, os.path.join(ROOT, "tools/qemu-postcopy.py"), "--qemu", version, "--size", str(args.size),
           "--seconds", str(args.seconds), "--mem", str(args.mem), "--precopy", "0", "--preempt",
           "--migrate-after", str(args.delay), "--smp", str(args.vcpus), "--share", args.share] + \
          ([] if migrate else ["--control"]) + \
          (["--hugetlb", HUGETLB[args.backend]] if args.backend in HUGETLB else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 180)
    try:
        res = json.loads(r.stdout)
    except ValueError:
        res = {"error": r.stderr[-800:]}
    json.dump(res, open(os.path.join(out, name + ".json"), "w"), indent=1)
    return res


def guest_figures(slow, recs):
    return {"stall_ms": sum(us for _, _, us in recs) / 1000.0, "slowest_us": slow.get("max_us", 0),
            "records": len(recs), "dropped": slow.get("dropped", 0)}


HUGETLB = {"hugetlb-2m": "2M", "hugetlb-1g": "1G"}
UFFD_FLOOR = {"shmem": "uffd_minor/shmem", "hugetlb-2m": "uffd_minor/hugetlb_2m", "hugetlb-1g": "uffd_minor/hugetlb_1g"}
P50_TARGET, P99_TARGET = 1.3, 3.0  # guest-observed 4 KiB fault latency, as multiples of the floor


def floors(args, out, i):
    """TCP 4 KiB round trip and the backend's local uffd MINOR round trip, p50/p99 us, measured now."""
    path = os.path.join(out, "baselines-%d.json" % i)
    pattern = "tcp_rtt_4k|%s/" % UFFD_FLOOR[args.backend]
    r = subprocess.run([os.path.join(ROOT, "build/bench/baselines"), "--benchmark_filter=" + pattern,
                        "--benchmark_out=" + path, "--benchmark_out_format=json"], capture_output=True, text=True,
                       timeout=600)
    res = {}
    if r.returncode == 0:
        for b in json.load(open(path))["benchmarks"]:
            if "p50_us" in b:
                res["tcp" if b["name"].startswith("tcp") else "uffd"] = (b["p50_us"], b["p99_us"])
    else:
        print("guest-view: baselines failed: %s" % r.stderr[-300:], file=sys.stderr)
    return res


def rng(v, fmt="%.0f"):
    if not v:
        return "-"
    return (fmt + " [" + fmt + "-" + fmt + "]") % (statistics.median(v), min(v), max(v))


def add_round_args(ap, mem_default, mem_help):
    """The options of a round shared with tools/smp.py."""
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--qemu", default="11.1", help="comma list of 11.1, 7.2; empty for none")
    ap.add_argument("--size", type=int, default=64, help="touch buffer MiB")
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--mem", type=int, default=mem_default, help=mem_help)
    ap.add_argument("--delay", type=float, default=0.5, help="seconds after 'touch: filled' to migrate")
    ap.add_argument("--src-memory", choices=["gmem", "shmem"], default=None,
                    help="our source's RAM (default gmem, or shmem where this KVM has no guest_memfd)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_round_args(ap, None, "guest RAM MiB (default 512, 1024 for hugetlb-1g)")
    ap.add_argument("--backend", default="shmem", choices=sorted(UFFD_FLOOR),
                    help="the destination's memory (QEMU: memfd, or hugetlb memfd of that page size)")
    ap.add_argument("--vcpus", type=int, default=1, help="vCPUs of the guest (QEMU: -smp N)")
    ap.add_argument("--share", choices=["disjoint", "shared"], default="disjoint",
                    help="with several vCPUs: each on its own part of the buffer, or all on the same pages in lockstep")
    ap.add_argument("--out", default=os.path.join(ROOT, "lab-results/guest-view-" + time.strftime("%Y%m%d-%H%M%S")))
    args = ap.parse_args()
    args.mem = args.mem or (1024 if args.backend == "hugetlb-1g" else 512)
    args.src_memory = args.src_memory or vmm_host.source_backend(VMM, "guest-view")
    qemus = [q for q in args.qemu.split(",") if q]
    for q in qemus:
        if q not in ("11.1", "7.2"):
            raise SystemExit("guest-view: --qemu takes 11.1 and/or 7.2, not %r" % q)
    if "11.1" in qemus and subprocess.run([os.path.join(ROOT, "tools/qemu-peer.sh"), "setup"]).returncode:
        raise SystemExit("guest-view: tools/qemu-peer.sh setup failed: no QEMU 11.1")
    os.makedirs(args.out, exist_ok=True)
    reserved = reserve_hugepages(args, qemus)
    try:
        fig, waterfalls, fl = rounds(args, qemus)
    finally:
        if reserved:
            subprocess.run([os.path.join(ROOT, "tools/hugepages.sh"), "release"] + reserved)
    json.dump({"figures": fig, "waterfalls": waterfalls, "floors": fl},
              open(os.path.join(args.out, "guest-view.json"), "w"), indent=1)
    print_results(args, qemus, fig, waterfalls, fl)
    return 0


def reserve_hugepages(args, qemus):
    """What the runs need at once: our destination's RAM, or both QEMUs' ends."""
    if args.backend not in HUGETLB:
        return None
    size = HUGETLB[args.backend].lower()
    count = args.mem // (2 if size == "2m" else 1024) * (2 if qemus else 1)
    if subprocess.run([os.path.join(ROOT, "tools/hugepages.sh"), "reserve", size, str(count)]).returncode:
        raise SystemExit("guest-view: cannot reserve %d %s hugepages (tools/hugepages.sh status says what is free)"
                         % (count, size))
    return [size, str(count)]


def rounds(args, qemus, first_round=0):
    fig = {k: [] for k in ["ours-control", "ours"] + ["qemu%s-control" % q for q in qemus] + ["qemu%s" % q for q in qemus]}
    waterfalls, fl = [], []
    for i in range(first_round, first_round + args.runs):
        fl.append(floors(args, args.out, i))
        r = ours(args, args.out, "ours-control-%d" % i, False)
        fig["ours-control"].append(guest_figures(*slow_summary(r["serial"])))
        r = ours(args, args.out, "ours-%d" % i, True)
        slow, recs = slow_summary(r["serial"])
        if "VERIFY OK" not in r["serial"]:
            print("guest-view: our migration %d did not verify (rc %s/%s)" % (i, r["rc"], r.get("dst_rc")), file=sys.stderr)
        f = guest_figures(slow, recs)
        rep = r.get("report", {})
        f["downtime_ms"] = rep.get("downtime_ms")
        f["vmm_max_fault_us"] = rep.get("latency_us", {}).get("max")
        f["faults"] = rep.get("faults")
        f["fault_p50_us"] = rep.get("latency_us", {}).get("p50")
        f["fault_p99_us"] = rep.get("latency_us", {}).get("p99")
        f["faults_joined"] = rep.get("faults_joined")
        f["all_vcpus_blocked_ms"] = rep.get("all_vcpus_blocked_ms")
        f["vcpu_blocked_ms"] = [v["blocked_ms"] for v in rep.get("by_vcpu", [])]
        f["fault_thread_busy"] = rep.get("fault_thread", {}).get("busy_fraction")
        f["fault_thread_max_batch"] = rep.get("fault_thread", {}).get("max_events_per_read")
        f["exit_us"] = exit_cost(r["serial"]).get("cpuid_p50_ns", 0) / 1000.0
        f["verify_ok"] = "VERIFY OK" in r["serial"]
        fig["ours"].append(f)
        if rep.get("guest_view"):  # the destination's own join (migration/report/guest_view.cpp)
            waterfalls.append(rep["guest_view"])
        for q in qemus:
            res = qemu(args, args.out, "qemu%s-control-%d" % (q, i), q, False)
            fig["qemu%s-control" % q].append(guest_figures(res.get("guest_slow", {}),
                                                           res.get("guest_slow_records", [])))
            res = qemu(args, args.out, "qemu%s-%d" % (q, i), q, True)
            f = guest_figures(res.get("guest_slow", {}), res.get("guest_slow_records", []))
            f["downtime_ms"] = res.get("downtime_ms")
            f["verify_ok"] = res.get("verify_ok")
            f["all_vcpus_blocked_ms"] = res.get("postcopy_blocktime_ms")
            f["vcpu_blocked_ms"] = res.get("postcopy_vcpu_blocktime_ms") or []
            f["exit_us"] = res.get("guest_exit_cost_ns", {}).get("cpuid_p50_ns", 0) / 1000.0
            fig["qemu%s" % q].append(f)
        print("guest-view: round %d of %d done" % (i + 1, args.runs), file=sys.stderr)
    return fig, waterfalls, fl


def print_results(args, qemus, fig, waterfalls, fl):
    print("\nguest-view: touch %d MiB of %d MiB, %d s, %d vCPU%s%s; ours %s -> %s, QEMU %s; migration %.1f s after "
          "'touch: filled'; %d rounds; %s" % (args.size, args.mem, args.seconds, args.vcpus, "s" if args.vcpus > 1 else "",
                                               " share=" + args.share if args.vcpus > 1 else "", args.src_memory,
                                               args.backend,
                                               "memfd" + ("-hugetlb-" + HUGETLB[args.backend] if args.backend in HUGETLB else ""),
                                               args.delay, args.runs, args.out))
    print("%-16s %-26s %-24s %-22s %-22s %s" % ("run", "stall - control ms", "slowest touch us", "reported downtime ms",
                                               "stall ms", "vCPU exit us"))
    cost = {}
    for vmm in ["ours"] + ["qemu%s" % q for q in qemus]:
        base = statistics.median([c["stall_ms"] for c in fig[vmm + "-control"]]) if fig[vmm + "-control"] else 0
        cost[vmm] = [m["stall_ms"] - base for m in fig[vmm]]
        print("%-16s %-26s %-24s %-22s %-22s %s" % (vmm, rng(cost[vmm], "%.1f"), rng([m["slowest_us"] for m in fig[vmm]]),
                                                   rng([m["downtime_ms"] or 0 for m in fig[vmm]], "%.2f"),
                                                   rng([m["stall_ms"] for m in fig[vmm]], "%.1f"),
                                                   rng([m.get("exit_us", 0) for m in fig[vmm]], "%.1f")))
        c = fig[vmm + "-control"]
        print("%-16s %-26s %-24s %-22s %s" % ("  control", "", rng([m["slowest_us"] for m in c]), "",
                                             rng([m["stall_ms"] for m in c], "%.1f")))
    for q in qemus:
        ours_c, peer_c = statistics.median(cost["ours"]), statistics.median(cost["qemu" + q])
        if peer_c > 0:
            print("ours / QEMU %s, what postcopy cost the guest (medians): %.2fx" % (q, ours_c / peer_c))
    print("\nwaterfall: our faults joined by the destination with the guest's touch of the page (%s faults joined, "
          "per round), us; median [min-max] over rounds:" % "/".join(str(w["faults_joined"]) for w in waterfalls))
    print("%-22s %-22s %s" % ("stage", "p50", "p99"))
    for k in ["guest", "read_to_request", "request_to_data", "data_to_mapped", "unexplained"]:
        print("%-22s %-22s %s" % (k, rng([w["waterfall_us"][k]["p50"] for w in waterfalls]),
                                  rng([w["waterfall_us"][k]["p99"] for w in waterfalls])))
    un = [w["unexplained_slow_touches"] for w in waterfalls]
    print("slow touches no fault explains while faults were served: %s, %s ms in all, longest %s us"
          % (rng([u["count"] for u in un]), rng([u["sum_ms"] for u in un], "%.1f"), rng([u["longest_us"] for u in un])))
    if args.backend == "shmem":
        judge_latency(fig, waterfalls, fl)
    else:  # a large page's fault moves the page: tools/lab.py judges it by bytes per fault over the bulk rate
        print("fault latency not judged against the 4 KiB floor on %s (tools/lab.py judges large pages by bytes per "
              "fault over the TCP bulk rate)" % args.backend)


def judge_latency(fig, waterfalls, fl):
    """The guest-observed fault latency against TCP RTT + uffd RTT + one vCPU exit, each round's own."""
    rows = []
    for w, f, m in zip(waterfalls, fl, fig["ours"]):
        if "tcp" not in f or "uffd" not in f:
            continue
        floor = f["tcp"][0] + f["uffd"][0] + m.get("exit_us", 0)
        rows.append((floor, w["waterfall_us"]["guest"]["p50"] / floor, w["waterfall_us"]["guest"]["p99"] / floor))
    if not rows:
        print("floors: not measured (build/bench/baselines failed); fault latency not judged")
        return
    print("floors per round: " + "; ".join("tcp 4 KiB %.0f + uffd %.0f + vCPU exit %.1f us" %
                                         (f["tcp"][0], f["uffd"][0], m.get("exit_us", 0))
                                         for f, m in zip(fl, fig["ours"]) if "tcp" in f and "uffd" in f))
    p50s, p99s = [r[1] for r in rows], [r[2] for r in rows]
    print("guest-observed fault latency / floor: p50 %s (target <= %.1fx: %s), p99 %s (target <= %.1fx: %s)"
          % (rng(p50s, "%.2f"), P50_TARGET, "met" if statistics.median(p50s) <= P50_TARGET else "missed",
             rng(p99s, "%.2f"), P99_TARGET, "met" if statistics.median(p99s) <= P99_TARGET else "missed"))


if __name__ == "__main__":
    sys.exit(main())
