#!/usr/bin/env python3
"""Fault-latency lab: one command for the table and the plots.

For every link (loopback, or two network namespaces joined by a shaped veth
pair, tools/link.sh) and every case of the matrix (source backend x
destination backend x mode x guest size) it migrates the touch guest with `vmm run
--migrate-to` / `vmm receive --report`, right after measuring this host's
floors (build/bench/baselines: 4 KiB TCP round trip, local uffd MINOR round
trip per backend), then runs QEMU's own postcopy on the same guest
(tools/qemu-postcopy.py, with and without postcopy-preempt, and on 1 GiB
and 2 MiB pages). The 4 KiB and 1 GiB postcopy cases run again with TLS
(--psk-file), each right after its plaintext twin. It writes one JSON file per run, results.md (Markdown tables with
PASS/MISS against the targets: 4 KiB p50/p99, push bandwidth, 2 MiB / 1 GiB
faults against bytes sent / bulk bandwidth, the mostly-zero 1 GiB page, and
the guest-observed stall against QEMU's best variant), and PNG plots drawn by
gnuplot:
  cdf.png        fault-latency CDF per destination backend
  timeline.png   faults over time (latency of each fault against its time)
  histograms.png guest-observed touch histogram next to the VMM-observed one
Last (not with --quick), tools/guest-view.py on each --guest-view-backends
(default shmem, then hugetlb-2m): ours beside QEMU 11.1 (and 7.2 on shmem),
each beside a control run without migration, with our faults joined with the
guest's touches (the waterfall) and judged against floors measured in the
same run, appended to results.md. Then tools/smp.py (--smp-runs rounds): 1
vCPU against 2 (disjoint and shared pages) beside QEMU 11.1 -smp, and
tools/size-curve.py (--size-curve-runs rounds): downtime, push, fault p50/p99
and each VMM's memory from 512 MiB to 8 GiB of guest RAM, both appended to
results.md.

  tools/lab.py [--out DIR] [--quick] [--no-qemu] [--links loopback,veth:rate=1000:rtt=2[:prio=off]]
               [--sources gmem,shmem] [--sizes 16,64]
"""
import argparse
import json
import math
import os
import signal
import random
import secrets
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMM = os.path.join(ROOT, "build/vmm")
GUEST = os.path.join(ROOT, "build/guest/guest.elf")
HUGEPAGES = os.path.join(ROOT, "tools/hugepages.sh")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import vmm_host  # noqa: E402  (the source's backend; destinations that end with their source)

# Targets from the lab's brief, as ratios to floors measured in the same run.
P50_TARGET = 1.15  # x (TCP 4 KiB RTT + local uffd RTT), 4 KiB pages
P99_TARGET = 2.0
PUSH_TARGET = 0.8  # background push >= 0.8 x bulk TCP bandwidth
LARGE_TARGET = 1.2  # 2 MiB / 1 GiB fault p50 <= 1.2 x (bytes sent per fault / bulk) + the 4 KiB floor
SPARSE_1G_US = 5000  # a mostly-zero 1 GiB page resolves in under 5 ms


def sh(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, **kw)


RELAY = os.path.join(ROOT, "build/tools/delay_relay/delay_relay")


class Link:
    """Where a migration runs: 'loopback', or 'veth[:rate=MBIT][:rtt=MS][:prio=off]', two
    network namespaces joined by a shaped veth pair (tools/link.sh; prio=off: one FIFO,
    without the priority band that the urgent connection's marking uses). On a veth link the
    destination and the TCP floors' server sit in the destination namespace, reached
    through our delay relay when the kernel has no netem; source and floors' client
    sit in the source namespace, so floors and migration cross the same path."""

    def __init__(self, spec):
        parts = spec.split(":")
        if parts[0] not in ("loopback", "veth"):
            raise SystemExit("lab: a link is loopback or veth[:rate=MBIT][:rtt=MS][:prio=off], not %r" % spec)
        self.spec, self.veth, self.rate, self.rtt, self.prio = spec, parts[0] == "veth", None, None, None
        for kv in parts[1:]:
            k, _, v = kv.partition("=")
            if k not in ("rate", "rtt", "prio") or not v or (k == "prio" and v not in ("on", "off")):
                raise SystemExit("lab: unknown link option %r in %r" % (kv, spec))
            setattr(self, k, v)
        self.name = spec.replace(":", "-").replace("=", "")
        self.env, self.relays = {}, []

    def __enter__(self):
        if not self.veth:
            return self
        args = [os.path.join(ROOT, "tools/link.sh"), "up", "vmmlab-%d" % os.getpid()]
        args += (["--rate", self.rate] if self.rate else []) + (["--rtt", self.rtt] if self.rtt else [])
        args += ["--prio", self.prio] if self.prio else []
        r = sh(args)
        if r.returncode:
            raise SystemExit("lab: tools/link.sh up failed: " + r.stderr)
        print(r.stderr.strip(), file=sys.stderr)
        self.env = dict(l.split("=", 1) for l in r.stdout.split("\n") if "=" in l)
        self.env = {k: v.strip('"') for k, v in self.env.items()}
        return self

    def __exit__(self, *exc):
        for p in self.relays:
            p.kill()
            p.wait()
        self.relays = []
        if self.veth:
            sh([os.path.join(ROOT, "tools/link.sh"), "down", "vmmlab-%d" % os.getpid()])

    def src(self, cmd):
        return (["ip", "netns", "exec", self.env["SRC_NS"]] if self.veth else []) + cmd

    def dst(self, cmd):
        return (["ip", "netns", "exec", self.env["DST_NS"]] if self.veth else []) + cmd

    def serve(self, port):
        """(address the destination side listens on, address the source side connects to)"""
        if not self.veth:
            return "127.0.0.1:%d" % port, "127.0.0.1:%d" % port
        ip = self.env["DST_IP"]
        if self.env["DELAY"] != "relay":
            return "%s:%d" % (ip, port), "%s:%d" % (ip, port)
        # No netem: the destination listens on its loopback, our relay adds the delay.
        self.relays.append(subprocess.Popen(self.dst([RELAY, "--listen", "%s:%d" % (ip, port + 1), "--to",
                                                      "127.0.0.1:%d" % port, "--delay-ms", self.env["HALF_MS"]]),
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.2)
        return "127.0.0.1:%d" % port, "%s:%d" % (ip, port + 1)


def baselines(out, link, port):
    path = os.path.join(out, "baselines.json")
    env = dict(os.environ)
    server = None
    if link.veth:  # the TCP floors cross the link: server in the destination namespace
        listen, connect = link.serve(port)
        # Its own process group: `ip netns exec` may fork, and killing only it
        # left a server behind once (parent 1, its namespace gone).
        server = subprocess.Popen(link.dst([os.path.join(ROOT, "build/bench/baselines"), "--serve", listen]),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.3)
        env["VMM_BASELINE_PEER"] = connect
    try:
        r = sh(link.src([os.path.join(ROOT, "build/bench/baselines"), "--benchmark_format=json",
                         "--benchmark_out=" + path, "--benchmark_out_format=json"]), env=env)
    finally:  # also when the client fails: no server outlives its namespace
        if server:
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait()
    base = {}
    for b in json.load(open(path))["benchmarks"]:
        if "p50_us" in b:
            base[b["name"].split("/iterations")[0]] = {"p50_us": b["p50_us"], "p99_us": b["p99_us"]}
        if "mib_per_s" in b:
            base[b["name"].split("/iterations")[0]] = {"mib_per_s": b["mib_per_s"]}
    if r.returncode:
        print("lab: baselines exited %d: %s" % (r.returncode, r.stderr[-500:]), file=sys.stderr)
    return base


def guest_hist(text):
    return {int(m.group(1)): int(m.group(3)) for m in re.finditer(r"HIST lo_us=(\d+) hi_us=(\d+) count=(\d+)", text)}


def lab_key(out):
    """The pre-shared key of the lab's TLS runs (both sides read the same file)."""
    path = os.path.join(out, "lab.key")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.close(fd)
    return path


def migrate(case, out, port, link):
    src, dst, mode, size, seconds = case["src"], case["dst"], case["mode"], case["size"], case["seconds"]
    mem = "1G" if dst == "hugetlb-1g" else "256M"
    name = "%s-to-%s-%s-%dM%s%s" % (src, dst, mode, size, "-tls" if case.get("tls") else "",
                                    "" if link.spec == "loopback" else "-" + link.name)
    tls = ["--psk-file", lab_key(out)] if case.get("tls") else []
    report = os.path.join(out, name + ".report.json")
    listen, connect = link.serve(port)
    d = subprocess.Popen(link.dst([VMM, "receive", "--listen", listen, "--memory", dst, "--report", report] + tls
                                  + vmm_host.ACCEPT_TIMEOUT),
                         cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    src_args = [VMM, "run", "--kernel", GUEST, "--cmdline", "workload=touch size=%d seconds=%d" % (size, seconds),
                "--memory", src, "--mem-size", mem, "--mode", mode, "--migrate-to", connect,
                "--migrate-after", "0.5", "--migrate-after-line", "touch: filled"] + tls  # as tools/qemu-postcopy.py
    if src == "gmem" and mode != "postcopy":
        src_args += ["--gmem-bind", "hva"]
    s = subprocess.run(link.src(src_args), cwd=ROOT, text=True, capture_output=True, timeout=300)
    if s.returncode != 0:  # a source that failed leaves its destination nothing to wait for
        d.terminate()
    dout, derr = d.communicate(timeout=300)
    run = {"name": name, "case": case, "link": link.spec, "src_rc": s.returncode, "dst_rc": d.returncode,
           "verify_ok": "VERIFY OK" in dout, "guest_hist_us": guest_hist(dout)}
    m = re.search(r"TLS 1.3 with the pre-shared key; (.*)", s.stderr)
    if m:  # which TLS path the source took, as it printed it
        run["tls_path"] = m.group(1).strip()
    if os.path.exists(report):
        run["report"] = json.load(open(report))
    else:
        run["error"] = (s.stderr + derr)[-2000:]
    json.dump(run, open(os.path.join(out, name + ".json"), "w"), indent=2)
    return run


def qemu_peer(out, preempt, size, seconds, hugetlb=None):
    args = [sys.executable, os.path.join(ROOT, "tools/qemu-postcopy.py"), "--size", str(size),
            "--seconds", str(seconds), "--precopy", "0"] + (["--preempt"] if preempt else [])
    if hugetlb:  # the same guest RAM as our runs on that page size
        args += ["--hugetlb", hugetlb, "--mem", "1024" if hugetlb == "1G" else "256"]
    r = sh(args, timeout=300)
    try:
        res = json.loads(r.stdout)
    except ValueError:
        res = {"status": "failed", "error": r.stderr[-1000:]}
    res["size"] = size
    name = "qemu-%s%s" % ("hugetlb-" + hugetlb.lower() if hugetlb else "memfd", "-preempt" if preempt else "")
    json.dump(res, open(os.path.join(out, name + ".json"), "w"), indent=2)
    return name, res


def guest_stall(hist, slow_us=32):
    """What the guest itself saw, the same instrument for our VMM and QEMU:
    touches of at least slow_us (faults, plus noise), their summed stall
    (each at its log2 bucket's midpoint, 1.5 x the lower bound) and the
    slowest bucket's lower bound, all in us."""
    slow = {int(lo): c for lo, c in hist.items() if int(lo) >= slow_us and c}
    n = sum(slow.values())
    total = sum(1.5 * lo * c for lo, c in slow.items())
    return {"touches": n, "stall_us": total, "mean_us": total / n if n else 0, "max_bucket_us": max(slow or [0])}


def verdict(value, limit):
    return "PASS" if value <= limit else "MISS (%.2fx the limit)" % (value / limit)


def describe_floors(base):
    floors = ["%s p50 %.0f us / p99 %.0f us" % (k, v["p50_us"], v["p99_us"]) for k, v in sorted(base.items())
              if "p50_us" in v]
    if base.get("tcp_bulk", {}).get("mib_per_s"):
        floors.append("tcp_bulk %.0f MiB/s" % base["tcp_bulk"]["mib_per_s"])
    return ", ".join(floors)


def table(runs, qemu, out):
    lines = ["# Fault-latency lab results", "",
             "Every target is a ratio to floors measured on the same link right before that run; the floors of "
             "the last run on each link:", ""]
    seen = {}
    for r in runs:
        seen[r["link"]] = r.get("baselines", {})
    for link, base in seen.items():
        lines.append("- %s: %s" % (link, describe_floors(base)))
    lines += ["",
             "| run | page | faults | p50 us | p99 us | max us | vCPU blocked ms | mean blocked/fault ms | downtime ms "
             "| push MiB/s | guest | p50 target | p99 target | push target | large-page target |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rep = r.get("report")
        if not rep:
            lines.append("| %s | | | | | | | | | | failed (src %s, dst %s) | | | | |" % (r["name"], r["src_rc"],
                                                                                   r["dst_rc"]))
            continue
        base = r.get("baselines", {})
        tcp = base.get("tcp_rtt_4k", {}).get("p50_us")
        bulk = base.get("tcp_bulk", {}).get("mib_per_s")
        lat = rep["latency_us"]
        page = rep["page_size"]
        targets = ("", "")
        uffd = base.get("uffd_minor/" + rep["dst_backend"].replace("-", "_"), {}).get("p50_us")
        if page == 4096 and tcp and uffd and rep["faults"]:
            floor = tcp + uffd
            targets = (verdict(lat["p50"], P50_TARGET * floor), verdict(lat["p99"], P99_TARGET * floor))
        mean = rep["vcpu_blocked_ms"] / rep["faults"] if rep["faults"] else 0
        push = rep.get("push_mib_per_s", 0)
        # Only a push of real volume says anything about bandwidth.
        push_verdict = ""
        if bulk and rep.get("push_mib", 0) >= 32:
            push_verdict = "PASS" if push >= PUSH_TARGET * bulk else "MISS (%.2fx of bulk)" % (push / bulk)
        large = ""
        # Pages that came during postcopy, each once: a requested page the push
        # delivered (1 GiB pages are never sent twice) is counted by the push only.
        moved = rep.get("pages_answered", rep.get("pages_requested", 0)) + rep.get("pages_pushed", 0)
        if page > 4096 and not rep["faults"]:
            large = "not judged: no fault (the push delivered the page before the guest touched it)"
        elif page > 4096 and tcp and uffd and bulk and moved and "urgent_bytes_received" in rep:
            # Bytes the source actually sent per faulted page (zero chunks stay off the wire): the urgent
            # connection carries requested pages up to 4 MiB; a 1 GiB page travels on the main one.
            requested = rep.get("pages_answered", rep.get("pages_requested", 0))
            if requested and rep["urgent_bytes_received"] >= requested * 4096:
                per_fault = rep["urgent_bytes_received"] / requested
            else:
                per_fault = (rep["urgent_bytes_received"] + rep.get("push_mib", 0) * 1048576) / moved
            limit = LARGE_TARGET * per_fault / (bulk * 1048576 / 1e6) + tcp + uffd
            large = verdict(lat["p50"], limit) + " (limit %.0f us for %.0f KiB sent)" % (limit, per_fault / 1024)
            if page == 1 << 30 and r["case"]["size"] <= 1:
                large += "; mostly-zero 1 GiB < 5 ms: " + verdict(lat["p50"], SPARSE_1G_US)
        label = {4096: "4 KiB", 2 << 20: "2 MiB", 1 << 30: "1 GiB"}.get(page, "%d B" % page)
        lines.append("| %s | %s | %d | %.0f | %.0f | %.0f | %.1f | %.3f | %.2f | %.0f | %s | %s | %s | %s | %s |" % (
            r["name"], label, rep["faults"], lat["p50"], lat["p99"], lat["max"], rep["vcpu_blocked_ms"], mean,
            rep["downtime_ms"], push, "VERIFY OK" if r["verify_ok"] else "no VERIFY OK", targets[0], targets[1],
            push_verdict, large))
    lines += tls_cost(runs)
    lines += ["", "QEMU 7.2 postcopy on the same guest (loopback, postcopy from the start):", "",
              "| peer | status | blocktime ms (sampled) | downtime ms | guest touches >= 32 us | guest stall ms "
              "| guest mean stall/touch us | slowest touch >= us | guest |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, q in qemu:
        g = guest_stall(q.get("guest_hist_us", {}))
        lines.append("| %s | %s | %s | %s | %d | %.1f | %.0f | %d | %s |" % (
            name, q.get("status"), q.get("postcopy_blocktime_ms"), q.get("downtime_ms"), g["touches"],
            g["stall_us"] / 1000, g["mean_us"], g["max_bucket_us"], "VERIFY OK" if q.get("verify_ok") else "-"))
    # Against QEMU, measured by the guest on both sides: the touch histogram.
    lines += ["", "Measured by the guest itself (same touch workload, same histogram) against QEMU:", "",
              "| our run | QEMU run | our guest mean stall/touch us | QEMU's | ratio | target | "
              "our guest stall ms (all slow touches) | QEMU's | our slowest touch >= us | QEMU's |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rep = r.get("report")
        if not rep or rep["mode"] != "postcopy" or r["link"] != "loopback":  # QEMU runs on loopback
            continue
        page = rep["page_size"]
        kind = {1 << 30: "hugetlb-1g", 2 << 20: "hugetlb-2m"}.get(page)
        peers = [(n, q) for n, q in qemu if q.get("status") == "completed" and q.get("size") == r["case"]["size"]
                 and (kind in n if kind else "hugetlb" not in n)]
        if not peers:
            continue
        ours = guest_stall(r["guest_hist_us"])
        # QEMU's best variant: the lowest mean stall.
        best_name, best = min(((n, guest_stall(q.get("guest_hist_us", {}))) for n, q in peers),
                              key=lambda x: x[1]["mean_us"] or float("inf"))
        if page == 1 << 30:
            # QEMU's guest does not time its 1 GiB stall (the vCPU waits outside the timed touches), so
            # the 1 GiB page compares our vCPU blocked time with QEMU's blocktime, sampled during postcopy.
            q = dict(peers)[best_name]
            theirs = float(q.get("postcopy_blocktime_ms") or 0)
            ratio = rep["vcpu_blocked_ms"] / theirs if theirs else 0
            target = ("1 GiB stall <= 0.5x (our vCPU blocked %.0f ms, QEMU blocktime %.0f ms): %s"
                      % (rep["vcpu_blocked_ms"], theirs, "PASS (%.3gx)" % ratio if ratio <= 0.5 else "MISS (%.2fx)" % ratio)
                      if theirs else "not comparable: QEMU reported no blocktime")
        else:
            ratio = ours["mean_us"] / best["mean_us"] if best["mean_us"] else 0
            target = ("<= 0.25x: " + ("PASS" if ratio <= 0.25 else "MISS (%.2fx)" % ratio) if kind is None
                      else "no target for 2 MiB pages (shown beside QEMU's)")
        lines.append("| %s | %s | %.0f | %.0f | %.3g | %s | %.1f | %.1f | %d | %d |" % (
            r["name"], best_name, ours["mean_us"], best["mean_us"], ratio, target, ours["stall_us"] / 1000,
            best["stall_us"] / 1000, ours["max_bucket_us"], best["max_bucket_us"]))
    lines += ["", "A fault's latency in the first table runs from the destination reading the userfaultfd event to the "
              "end of its UFFDIO_CONTINUE. QEMU counts no faults, and its blocktime is sampled during postcopy; the "
              "guest's own touch histogram measures both VMMs the same way (touches >= 32 us are faults plus noise, "
              "each counted at its log2 bucket's midpoint)."]
    open(os.path.join(out, "results.md"), "w").write("\n".join(lines) + "\n")
    return "\n".join(lines)


def tls_cost(runs):
    """Each TLS run beside the plaintext run of the same case on the same link, run right before it."""
    plain = {r["name"]: r for r in runs if not r["case"].get("tls")}
    rows = []
    paths = set()
    for r in runs:
        if not r["case"].get("tls"):
            continue
        p = plain.get(r["name"].replace("-tls", "", 1))
        if r.get("tls_path"):
            paths.add(r["tls_path"])
        if not p or not p.get("report") or not r.get("report"):
            rows.append("| %s | failed or no plaintext run beside it | | | | | |" % r["name"])
            continue
        a, b = p["report"], r["report"]

        def pair(x, y, fmt="%.0f"):
            return (fmt + " / " + fmt + " (%.2fx)") % (x, y, y / x) if x else (fmt + " / " + fmt) % (x, y)

        rows.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            r["name"], {4096: "4 KiB", 2 << 20: "2 MiB", 1 << 30: "1 GiB"}.get(a["page_size"], "?"),
            pair(a["latency_us"]["p50"], b["latency_us"]["p50"]), pair(a["latency_us"]["p99"], b["latency_us"]["p99"]),
            pair(a.get("push_mib_per_s", 0), b.get("push_mib_per_s", 0)),
            pair(a["downtime_ms"], b["downtime_ms"], "%.2f"), "VERIFY OK" if r["verify_ok"] else "no VERIFY OK"))
    if not rows:
        return []
    return ["", "What TLS costs: each TLS run beside the plaintext run of the same case on the same link, run right "
            "before it (plaintext / TLS, and the ratio). TLS path: %s." % ("; ".join(sorted(paths)) or "not printed"),
            "", "| TLS run | page | fault p50 us | fault p99 us | push MiB/s | downtime ms | guest |",
            "|---|---|---|---|---|---|---|"] + rows


def short(name):
    """Plot label: the matrix name without the common source prefix."""
    return name.replace("gmem-to-", "").replace("-veth-", " veth ").replace("_", " ")


def plots(runs, out, qemu=()):
    cdf_series, hist_rows = [], []
    for r in runs:
        rep = r.get("report")
        if not rep or not rep["fault_timeline_ms_us"]:
            continue
        lat = sorted(l for _, l in rep["fault_timeline_ms_us"])
        path = os.path.join(out, r["name"] + ".cdf.dat")
        with open(path, "w") as f:
            for i, l in enumerate(lat):
                f.write("%f %f\n" % (l, (i + 1) / len(lat)))
        tl = os.path.join(out, r["name"] + ".timeline.dat")
        with open(tl, "w") as f:
            for t, l in rep["fault_timeline_ms_us"]:
                f.write("%f %f\n" % (t, l))
        cdf_series.append((r["name"], path, tl))
        vmm_hist = {}
        for l in lat:
            b = 0 if l < 1 else 1 << int(math.log2(l))
            vmm_hist[b] = vmm_hist.get(b, 0) + 1
        # The histogram compares what the guest and the VMM saw for 4 KiB postcopy faults;
        # with every run in it the bars could not be read.
        if rep["page_size"] == 4096 and r["case"]["mode"] == "postcopy":
            hist_rows.append((r["name"], r["guest_hist_us"], vmm_hist))
    if not cdf_series:
        return
    gp = ["set terminal pngcairo size 1000,600" if sh(["gnuplot", "-e", "set terminal pngcairo"]).returncode == 0
          else "set terminal png size 1000,600"]
    gp[0] = gp[0].replace("1000,600", "1200,650")
    gp += ["set output '%s/cdf.png'" % out, "set logscale x", "set xlabel 'fault latency (us)'",
           "set ylabel 'fraction of faults'", "set key outside right font ',9'",
           "set title 'Postcopy fault latency CDF'",
           "plot " + ", ".join("'%s' using 1:2 with steps lw 2 title '%s'" % (p, short(n)) for n, p, _ in cdf_series)]
    gp += ["set output '%s/timeline.png'" % out, "set logscale y", "unset logscale x",
           "set xlabel 'time since first fault (ms)'", "set ylabel 'fault latency (us)'",
           "set key outside right font ',9'", "set title 'Faults over time'",
           "plot " + ", ".join("'%s' using 1:2 with points pt 7 ps 0.5 title '%s'" % (t, short(n))
                               for n, _, t in cdf_series)]
    # QEMU's guest ran the same touch workload: its histogram sits beside ours.
    best = min((q for q in qemu if q[1].get("guest_hist_us") and "hugetlb" not in q[0]),
               key=lambda q: guest_stall(q[1]["guest_hist_us"])["mean_us"], default=None)
    hist_path = os.path.join(out, "histograms.dat")
    if not hist_rows:
        subprocess.run(["gnuplot"], input="\n".join(gp) + "\n", text=True, capture_output=True)
        return
    qh = {int(k): v for k, v in best[1]["guest_hist_us"].items()} if best else {}
    hist_rows = [(n, {int(k): c for k, c in g.items()}, v) for n, g, v in hist_rows]  # JSON keys are strings
    buckets = sorted(b for b in {b for _, g, v in hist_rows for b in list(g) + list(v)} | set(qh) if b >= 16)
    with open(hist_path, "w") as f:
        f.write("bucket " + " ".join("guest:%s vmm:%s" % (n, n) for n, _, _ in hist_rows) + " qemu\n")
        for b in buckets:
            f.write("%d " % b + " ".join("%d %d" % (g.get(b, 0), v.get(b, 0)) for _, g, v in hist_rows) +
                    " %d\n" % qh.get(b, 0))
    cols = []
    for i, (n, _, _) in enumerate(hist_rows):
        cols.append("'%s' using %d:xtic(1) title 'guest, %s'" % (hist_path, 2 + 2 * i, short(n)))
        cols.append("'' using %d title 'VMM faults, %s'" % (3 + 2 * i, short(n)))
    if best:
        cols.append("'' using %d title 'guest under %s (loopback)'" % (2 + 2 * len(hist_rows), best[0]))
    gp += ["set output '%s/histograms.png'" % out, "unset logscale x", "set logscale y", "set style data histograms",
           "set style fill solid 0.8", "set xlabel 'latency bucket lower bound (us, log2)'", "set ylabel 'count'",
           "set yrange [0.8:*]", "set title 'Guest-observed slow touches vs VMM-observed faults (4 KiB postcopy)'",
           "set key outside below font ',9'", "plot " + ", ".join(cols)]
    r = subprocess.run(["gnuplot"], input="\n".join(gp) + "\n", text=True, capture_output=True)
    if r.returncode:
        print("lab: gnuplot: " + r.stderr[-500:], file=sys.stderr)


def guest_view(out, runs, qemus, backend):
    """The control-adjusted comparison and the per-fault waterfall (tools/guest-view.py), appended
    to results.md: both VMMs migrated 0.5 s after the guest prints 'touch: filled'."""
    r = sh([sys.executable, os.path.join(ROOT, "tools/guest-view.py"), "--runs", str(runs), "--qemu", qemus,
            "--backend", backend, "--out", os.path.join(out, "guest-view-" + backend)], timeout=3600)
    text = r.stdout[r.stdout.find("guest-view: touch"):] if r.returncode == 0 else "guest-view failed:\n" + r.stderr[-1500:]
    print(text)
    with open(os.path.join(out, "results.md"), "a") as f:
        f.write("\n## The guest's view on %s, beside QEMU (tools/guest-view.py --backend %s)\n\n```\n%s```\n"
                % (backend, backend, text))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "lab-results"))
    ap.add_argument("--quick", action="store_true", help="a small matrix (CI-sized)")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--guest-view-backends", default="shmem,hugetlb-2m",
                    help="destination backends tools/guest-view.py compares on (shmem, hugetlb-2m, hugetlb-1g)")
    ap.add_argument("--guest-view-runs", type=int, default=3,
                    help="rounds of tools/guest-view.py after the matrix (ours, QEMU 11.1 and 7.2, each beside a "
                         "control run; 0: none; not with --quick)")
    ap.add_argument("--smp-runs", type=int, default=1,
                    help="rounds of tools/smp.py (1 vCPU against 2, disjoint and shared, beside QEMU -smp 2)")
    ap.add_argument("--size-curve-runs", type=int, default=1,
                    help="rounds of tools/size-curve.py (512 MiB to 8 GiB, shmem destination) after the matrix; "
                         "0: none; not with --quick")
    ap.add_argument("--sources", default=None,
                    help="comma list of source backends: gmem, shmem (default gmem, or shmem where this KVM has no "
                         "guest_memfd)")
    ap.add_argument("--sizes", default=None, help="comma list of MiB the touch guest writes (default 64; 16 quick)")
    ap.add_argument("--links", default=None,
                    help="comma list of loopback or veth[:rate=MBIT][:rtt=MS][:prio=off] (default: loopback, and for the full "
                         "matrix also veth:rate=1000:rtt=2)")
    args = ap.parse_args()
    for src in (args.sources or "gmem").split(","):
        if src not in ("gmem", "shmem"):  # the lab reserves hugepages for destinations only
            raise SystemExit("lab: a source backend is gmem or shmem, not %r" % src)
    links = (args.links or ("loopback" if args.quick else "loopback,veth:rate=1000:rtt=2")).split(",")
    for spec in links:
        Link(spec)  # reject a bad spec before anything runs
    if any(Link(l).veth for l in links) and os.geteuid() != 0:
        raise SystemExit("lab: veth links need root (ip netns, tc)")
    os.makedirs(args.out, exist_ok=True)
    if sh(["cmake", "--build", "build", "-j2"]).returncode:
        sh(["cmake", "-S", ".", "-B", "build", "-DVMM_BENCHMARKS=ON"])
        sh(["cmake", "--build", "build", "-j2"], check=True)
    args.sources = args.sources or vmm_host.source_backend(VMM, "lab")
    size, seconds = (16, 4) if args.quick else (64, 6)
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [size]
    dsts = ["shmem"] if args.quick else ["shmem", "hugetlb-2m", "hugetlb-1g"]
    modes = ["postcopy"] if args.quick else ["postcopy", "hybrid"]
    matrix = [{"src": src, "dst": d, "mode": m, "size": sz, "seconds": seconds}
              for src in args.sources.split(",") for sz in sizes for d in dsts for m in modes]
    if not args.quick:  # a 1 GiB page that is mostly zero: the guest writes 1 MiB of it
        matrix.append({"src": args.sources.split(",")[0], "dst": "hugetlb-1g", "mode": "postcopy", "size": 1,
                       "seconds": 4})
    # TLS beside plaintext: the 4 KiB postcopy case (and, in the full matrix,
    # the 1 GiB one), each right after its plaintext twin.
    with_tls = []
    for c in matrix:
        with_tls.append(c)
        if c["mode"] == "postcopy" and c["size"] == sizes[0] and c["dst"] in ("shmem", "hugetlb-1g"):
            with_tls.append(dict(c, tls=True))
    matrix = with_tls
    reserved = []
    # QEMU on 1 GiB pages needs one for each side. Both are reserved now:
    # after the matrix has run, memory here was too fragmented to find a
    # second 1 GiB page, while two were found at the start. QEMU on 2 MiB
    # pages needs 2 x 256 MiB; our runs need 256 MiB.
    qemu_1g = not args.no_qemu and not args.quick
    for size_arg, n in (("1g", 2 if qemu_1g else 1), ("1g", 1), ("2m", 256 if qemu_1g else 160), ("2m", 160)):
        if size_arg == "2m" and any(r[0] == "2m" for r in reserved):
            continue
        if size_arg == "1g" and any(r[0] == "1g" for r in reserved):
            continue
        if sh([HUGEPAGES, "reserve", size_arg, str(n)]).returncode == 0:
            reserved.append((size_arg, n))
    ones = sum(n for r, n in reserved if r == "1g")
    try:
        runs = []
        port = random.randint(20000, 40000)
        for spec in links:
            with Link(spec) as link:
                for case in matrix:
                    base = baselines(args.out, link, port)  # right before each migration, on the same link
                    run = migrate(case, args.out, port + 2, link)
                    port += 4
                    run["baselines"] = base
                    runs.append(run)
                    print("lab: %s -> %s" % (run["name"], "ok" if run.get("report") else "failed"), file=sys.stderr)
        qemu = [] if args.no_qemu else [qemu_peer(args.out, p, size, seconds) for p in (False, True)]
        if qemu_1g:
            if ones >= 2:
                qemu.append(qemu_peer(args.out, True, size, seconds, hugetlb="1G"))
            else:
                print("lab: cannot reserve two 1 GiB pages: no QEMU 1 GiB run", file=sys.stderr)
            if any(r == ("2m", 256) for r in reserved):
                qemu.append(qemu_peer(args.out, True, size, seconds, hugetlb="2M"))
            else:
                print("lab: cannot reserve 256 2 MiB pages: no QEMU 2 MiB run", file=sys.stderr)
        print(table(runs, qemu, args.out))
        plots(runs, args.out, qemu)
        if not args.quick and args.guest_view_runs > 0:
            for backend in args.guest_view_backends.split(","):
                # QEMU 7.2 beside 11.1 on 4 KiB pages; on hugepages the newest is the peer.
                peers = "11.1,7.2" if backend == "shmem" else "11.1"
                guest_view(args.out, args.guest_view_runs, "" if args.no_qemu else peers, backend)
        if not args.quick and args.smp_runs > 0:
            smp = os.path.join(args.out, "smp")
            r = subprocess.run([sys.executable, os.path.join(ROOT, "tools/smp.py"), "--runs", str(args.smp_runs),
                                "--qemu", "" if args.no_qemu else "11.1", "--out", smp])
            if os.path.exists(os.path.join(smp, "smp.md")):
                with open(os.path.join(args.out, "results.md"), "a") as f:
                    f.write("\n## What a second vCPU changes, beside QEMU -smp 2 (tools/smp.py)\n\n")
                    f.write(open(os.path.join(smp, "smp.md")).read())
            else:
                print("lab: tools/smp.py failed (exit %d)" % r.returncode, file=sys.stderr)
        if not args.quick and args.size_curve_runs > 0:
            curve = os.path.join(args.out, "size-curve")
            r = subprocess.run([sys.executable, os.path.join(ROOT, "tools/size-curve.py"), "--runs",
                                str(args.size_curve_runs), "--dsts", "shmem", "--out", curve])
            if os.path.exists(os.path.join(curve, "size-curve.md")):
                with open(os.path.join(args.out, "results.md"), "a") as f:
                    f.write("\n## How the cost grows with guest RAM (tools/size-curve.py)\n\n")
                    f.write(open(os.path.join(curve, "size-curve.md")).read())
            elif r.returncode:
                print("lab: tools/size-curve.py failed (exit %d)" % r.returncode, file=sys.stderr)
        print("\nlab: results in %s (results.md, cdf.png, timeline.png, histograms.png)" % args.out)
    finally:
        for size_arg, n in reserved:
            sh([HUGEPAGES, "release", size_arg, str(n)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
