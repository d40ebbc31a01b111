#!/usr/bin/env python3
"""The guest's view of postcopy, ours beside QEMU's, judged against control runs.

Each round, interleaved: our VMM running the touch guest without migrating
(control), our VMM migrating it (guest_memfd source -> shmem destination,
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
For our runs each fault the destination recorded is joined by page with the
guest's touch of that page, giving the waterfall: what the guest saw, the
VMM's stages (event read -> request sent -> data in -> mapped), and what
neither explains (vCPU exit and entry, wake-ups, waiting for a core).

  tools/guest-view.py [--runs 3] [--qemu 11.1[,7.2]] [--size 64] [--seconds 6] [--mem 512] [--out DIR]
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
slow_summary, free_port = _peer.slow_summary, _peer.free_port


def ours(args, out, name, migrate):
    cmdline = "workload=touch size=%d seconds=%d record_us=32" % (args.size, args.seconds)
    run = [VMM, "run", "--kernel", GUEST, "--cmdline", cmdline, "--memory", "gmem", "--mem-size", "%dM" % args.mem,
           "--gmem-bind", "hva"]
    report = os.path.join(out, name + ".report.json")
    serial = os.path.join(out, name + ".serial")
    if not migrate:
        r = subprocess.run(run + ["--serial-log", serial], capture_output=True, text=True, timeout=args.seconds + 60)
        text = open(serial, errors="replace").read()
        return {"rc": r.returncode, "serial": text}
    port = free_port()
    log = os.path.join(out, name + ".dst.log")
    d = subprocess.Popen([VMM, "receive", "--listen", "127.0.0.1:%d" % port, "--memory", "shmem", "--report", report,
                          "--serial-log", serial], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    # Wait for its listening line: a probe connection would be taken for the source.
    deadline = time.time() + 10
    while time.time() < deadline and "listening" not in open(log).read():
        time.sleep(0.02)
    r = subprocess.run(run + ["--migrate-to", "127.0.0.1:%d" % port, "--mode", "postcopy", "--migrate-after",
                              str(args.delay), "--migrate-after-line", "touch: filled", "--serial-log",
                              os.path.join(out, name + ".src.serial")],
                       capture_output=True, text=True, timeout=args.seconds + 120)
    d.wait(timeout=args.seconds + 120)
    text = open(serial, errors="replace").read()
    rep = json.load(open(report)) if os.path.exists(report) else {}
    return {"rc": r.returncode, "dst_rc": d.returncode, "serial": text, "report": rep}


def qemu(args, out, name, version, migrate):
    cmd = [sys.executable, os.path.join(ROOT, "tools/qemu-postcopy.py"), "--qemu", version, "--size", str(args.size),
           "--seconds", str(args.seconds), "--mem", str(args.mem), "--precopy", "0", "--preempt",
           "--migrate-after", str(args.delay)] + ([] if migrate else ["--control"])
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


def join(report, slow, recs):
    """Each fault the destination recorded, beside the guest's touch of that page."""
    rows = report.get("fault_records", {}).get("rows", [])
    page_size = report.get("page_size", 4096)
    by_page = {}
    for t_us, page, us in recs:
        gpa = slow["buffer_gpa"] + page * slow["page_size"]
        by_page.setdefault(gpa // page_size, []).append(us)
    joined = []
    for page, t_ms, read_req, req_data, data_mapped, requested in rows:
        vmm_us = read_req + req_data + data_mapped
        # The guest's touch of that page that the fault best explains: the
        # smallest that is not shorter than what the VMM measured.
        cands = [us for us in by_page.get(page, []) if us >= vmm_us * 0.9]
        if not cands:
            continue
        g = min(cands)
        by_page[page].remove(g)
        joined.append({"guest_us": g, "read_to_request_us": read_req, "request_to_data_us": req_data,
                       "data_to_mapped_us": data_mapped, "unexplained_us": max(0.0, g - vmm_us),
                       "requested": requested})
    return joined, len(rows)


def pct(v, q):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def rng(v, fmt="%.0f"):
    if not v:
        return "-"
    return (fmt + " [" + fmt + "-" + fmt + "]") % (statistics.median(v), min(v), max(v))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--qemu", default="11.1", help="comma list of 11.1, 7.2; empty for none")
    ap.add_argument("--size", type=int, default=64, help="touch buffer MiB")
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--mem", type=int, default=512, help="guest RAM MiB")
    ap.add_argument("--delay", type=float, default=0.5, help="seconds after 'touch: filled' to migrate")
    ap.add_argument("--out", default=os.path.join(ROOT, "lab-results/guest-view-" + time.strftime("%Y%m%d-%H%M%S")))
    args = ap.parse_args()
    qemus = [q for q in args.qemu.split(",") if q]
    for q in qemus:
        if q not in ("11.1", "7.2"):
            raise SystemExit("guest-view: --qemu takes 11.1 and/or 7.2, not %r" % q)
    if "11.1" in qemus and subprocess.run([os.path.join(ROOT, "tools/qemu-peer.sh"), "setup"]).returncode:
        raise SystemExit("guest-view: tools/qemu-peer.sh setup failed: no QEMU 11.1")
    os.makedirs(args.out, exist_ok=True)
    fig = {k: [] for k in ["ours-control", "ours"] + ["qemu%s-control" % q for q in qemus] + ["qemu%s" % q for q in qemus]}
    joined_all, faults_all, reports = [], 0, []
    for i in range(args.runs):
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
        fig["ours"].append(f)
        reports.append(rep)
        j, n = join(rep, slow, recs)
        joined_all += j
        faults_all += n
        for q in qemus:
            res = qemu(args, args.out, "qemu%s-control-%d" % (q, i), q, False)
            fig["qemu%s-control" % q].append(guest_figures(res.get("guest_slow", {}),
                                                           res.get("guest_slow_records", [])))
            res = qemu(args, args.out, "qemu%s-%d" % (q, i), q, True)
            f = guest_figures(res.get("guest_slow", {}), res.get("guest_slow_records", []))
            f["downtime_ms"] = res.get("downtime_ms")
            f["verify_ok"] = res.get("verify_ok")
            fig["qemu%s" % q].append(f)
        print("guest-view: round %d of %d done" % (i + 1, args.runs), file=sys.stderr)
    json.dump({"figures": fig, "joined": joined_all}, open(os.path.join(args.out, "guest-view.json"), "w"), indent=1)

    print("\nguest-view: touch %d MiB of %d MiB, %d s; migration %.1f s after 'touch: filled'; %d rounds; %s"
          % (args.size, args.mem, args.seconds, args.delay, args.runs, args.out))
    print("%-16s %-26s %-24s %-22s %s" % ("run", "stall - control ms", "slowest touch us", "reported downtime ms",
                                         "stall ms"))
    cost = {}
    for vmm in ["ours"] + ["qemu%s" % q for q in qemus]:
        base = statistics.median([c["stall_ms"] for c in fig[vmm + "-control"]]) if fig[vmm + "-control"] else 0
        cost[vmm] = [m["stall_ms"] - base for m in fig[vmm]]
        print("%-16s %-26s %-24s %-22s %s" % (vmm, rng(cost[vmm], "%.1f"), rng([m["slowest_us"] for m in fig[vmm]]),
                                             rng([m["downtime_ms"] or 0 for m in fig[vmm]], "%.2f"),
                                             rng([m["stall_ms"] for m in fig[vmm]], "%.1f")))
        c = fig[vmm + "-control"]
        print("%-16s %-26s %-24s %-22s %s" % ("  control", "", rng([m["slowest_us"] for m in c]), "",
                                             rng([m["stall_ms"] for m in c], "%.1f")))
    for q in qemus:
        ours_c, peer_c = statistics.median(cost["ours"]), statistics.median(cost["qemu" + q])
        if peer_c > 0:
            print("ours / QEMU %s, what 4 KiB postcopy cost the guest (medians): %.2fx" % (q, ours_c / peer_c))
    print("\nwaterfall, our 4 KiB faults joined with the guest's touch of the page (%d of %d faults joined), us:"
          % (len(joined_all), faults_all))
    print("%-22s %8s %8s" % ("stage", "p50", "p99"))
    for k in ["guest_us", "read_to_request_us", "request_to_data_us", "data_to_mapped_us", "unexplained_us"]:
        v = [j[k] for j in joined_all]
        print("%-22s %8.0f %8.0f" % (k[:-3], pct(v, 0.5), pct(v, 0.99)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
