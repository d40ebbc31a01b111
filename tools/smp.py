#!/usr/bin/env python3
"""What a second vCPU changes in postcopy, ours beside QEMU's -smp on the same guest.

For each configuration -- 1 vCPU, 2 vCPUs share=disjoint (each CPU touches its
own half of the buffer), 2 vCPUs share=shared (both touch the same page in
lockstep, so they fault on it together) -- the rounds of tools/guest-view.py:
our VMM without migrating (control) and migrating (guest_memfd source ->
shmem destination, postcopy, loopback), and QEMU's control and postcopy
migration (postcopy-preempt, memfd), each migrated 0.5 s after the guest
prints "touch: filled". The configurations are interleaved round by round.

Figures, medians over rounds:
  stall - control  ms the guest spent in touches >= 32 us, minus its VMM's
                   control runs: what postcopy cost the guest
  all blocked      ms every vCPU was blocked at once (ours: the destination's
                   union of fault intervals; QEMU: postcopy-blocktime)
  per-vCPU blocked ms each vCPU was blocked (QEMU: postcopy-vcpu-blocktime)
  faults, p50/p99  our destination's faults and their latency
  joined           our faults that waited behind another vCPU's request
  fault thread     the share of postcopy our one fault thread spent on a CPU,
                   and the most userfaultfd events one read() returned: does
                   one thread keep up with two vCPUs' faults
Each figure of a 2-vCPU configuration is also given as a multiple of the
same VMM's 1-vCPU figure.

  tools/smp.py [--runs 3] [--qemu 11.1] [--size 64] [--seconds 6] [--out DIR]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
gv = __import__("guest-view")

CONFIGS = [(1, "disjoint"), (2, "disjoint"), (2, "shared")]


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def fmt(v, f="%.1f"):
    return "-" if v is None else f % v


def ratio(v, base):
    return "" if v is None or not base else " (%.2fx)" % (v / base)


def summarize(fig, vmm):
    """One VMM's medians in one configuration."""
    runs, control = fig[vmm], fig[vmm + "-control"]
    base = med([c["stall_ms"] for c in control]) or 0
    per_vcpu = [med([r["vcpu_blocked_ms"][i] if len(r.get("vcpu_blocked_ms") or []) > i else None for r in runs])
                for i in range(max((len(r.get("vcpu_blocked_ms") or []) for r in runs), default=0))]
    return {"stall_cost_ms": med([r["stall_ms"] - base for r in runs]),
            "slowest_us": med([r["slowest_us"] for r in runs]),
            "downtime_ms": med([r.get("downtime_ms") for r in runs]),
            "all_blocked_ms": med([r.get("all_vcpus_blocked_ms") for r in runs]),
            "vcpu_blocked_ms": per_vcpu,
            "faults": med([r.get("faults") for r in runs]),
            "p50_us": med([r.get("fault_p50_us") for r in runs]),
            "p99_us": med([r.get("fault_p99_us") for r in runs]),
            "joined": med([r.get("faults_joined") for r in runs]),
            "thread_busy": med([r.get("fault_thread_busy") for r in runs]),
            "max_batch": max([r.get("fault_thread_max_batch") or 0 for r in runs], default=0),
            "verified": sum(1 for r in runs if r.get("verify_ok", True)), "runs": len(runs)}


def table(results, vmms):
    lines = ["| VMM | vCPUs | stall - control ms | all vCPUs blocked ms | per-vCPU blocked ms | slowest touch us "
             "| downtime ms | faults | fault p50 / p99 us | joined | fault thread busy, most events a read |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for vmm in vmms:
        one = results["1-disjoint"][vmm]
        for key, s in results.items():
            s = s[vmm]
            lines.append("| %s | %s | %s%s | %s%s | %s | %s%s | %s | %s%s | %s | %s | %s |" % (
                vmm, key.replace("-", " "), fmt(s["stall_cost_ms"]), ratio(s["stall_cost_ms"], one["stall_cost_ms"]),
                fmt(s["all_blocked_ms"]), ratio(s["all_blocked_ms"], one["all_blocked_ms"]),
                " / ".join(fmt(v) for v in s["vcpu_blocked_ms"]) or "-",
                fmt(s["slowest_us"], "%.0f"), ratio(s["slowest_us"], one["slowest_us"]),
                fmt(s["downtime_ms"], "%.2f"), fmt(s["faults"], "%.0f"), ratio(s["faults"], one["faults"]),
                "%s / %s" % (fmt(s["p50_us"], "%.0f"), fmt(s["p99_us"], "%.0f")) if s["p50_us"] is not None else "-",
                fmt(s["joined"], "%.0f"),
                "%.1f%%, %d" % (100 * s["thread_busy"], s["max_batch"]) if s["thread_busy"] is not None else "-"))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gv.add_round_args(ap, 512, "guest RAM MiB")
    ap.add_argument("--out", default=os.path.join(ROOT, "lab-results/smp-" + time.strftime("%Y%m%d-%H%M%S")))
    args = ap.parse_args()
    args.src_memory = args.src_memory or gv.vmm_host.source_backend(gv.VMM, "smp")
    qemus = [q for q in args.qemu.split(",") if q]
    if "11.1" in qemus and subprocess.run([os.path.join(ROOT, "tools/qemu-peer.sh"), "setup"]).returncode:
        raise SystemExit("smp: tools/qemu-peer.sh setup failed: no QEMU 11.1")
    figs = {}
    for i in range(args.runs):
        for vcpus, share in CONFIGS:
            key = "%d-%s" % (vcpus, share)
            a = argparse.Namespace(**vars(args), vcpus=vcpus, share=share, backend="shmem")
            a.out = os.path.join(args.out, key)
            os.makedirs(a.out, exist_ok=True)
            a.runs = 1
            fig, _, _ = gv.rounds(a, qemus, first_round=i)
            for k, v in fig.items():
                figs.setdefault(key, {}).setdefault(k, []).extend(v)
            print("smp: round %d of %d, %s done" % (i + 1, args.runs, key), file=sys.stderr)
    vmms = ["ours"] + ["qemu%s" % q for q in qemus]
    results = {key: {vmm: summarize(fig, vmm) for vmm in vmms} for key, fig in figs.items()}
    json.dump({"figures": figs, "summary": results}, open(os.path.join(args.out, "smp.json"), "w"), indent=1)
    text = ("touch %d MiB of %d MiB for %d s; ours %s -> shmem, QEMU %s on memfd with postcopy-preempt; postcopy "
            "%.1f s after 'touch: filled'; %d rounds, medians; (Nx): against the same VMM with 1 vCPU\n\n%s\n"
            % (args.size, args.mem, args.seconds, args.src_memory, ",".join(qemus) or "not run", args.delay, args.runs,
               table(results, vmms)))
    for key, r in results.items():
        for vmm in vmms:
            if r[vmm]["verified"] < r[vmm]["runs"]:
                text += "\n%s %s: %d of %d migrations verified" % (vmm, key, r[vmm]["verified"], r[vmm]["runs"])
    open(os.path.join(args.out, "smp.md"), "w").write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
