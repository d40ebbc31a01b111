#!/usr/bin/env python3
"""QEMU's own postcopy on the same guest, as the peer to compare with.

Runs two qemu-system-x86_64 -accel kvm processes on this machine (source and
-incoming destination), RAM on memory-backend-memfd share=on (or hugetlb with
--hugetlb 2M|1G), the same guest.elf and command line as our VMM, QMP with
postcopy-ram + postcopy-blocktime (and postcopy-preempt with --preempt).
--qemu 7.2 is Debian 12's QEMU; --qemu 11.1 runs QEMU 11.1 from the chroot
that tools/qemu-peer.sh sets up.

The migration starts --migrate-after seconds after the source guest prints
"touch: filled" (QEMU's firmware takes ~3.75 s to reach the workload here,
our VMM 0.11 s: the same point of the guest's work, not the same time after
start). It switches to postcopy after --precopy seconds and prints one JSON
object: QEMU's own figures (blocktime; QEMU 11.1 also postcopy-latency,
postcopy-vcpu-latency and postcopy-latency-dist, which its destination
reports only once the migration completed) and the guest's: its touch
histogram and its slow-touch record (SLOW line: the slowest touch, records
of touches >= record_us). --control runs the source alone for the same
guest, without migrating: the baseline a migration's figures are judged on.

  tools/qemu-postcopy.py [--qemu 7.2|11.1] [--size 64] [--seconds 6] [--mem 512] [--preempt]
                         [--hugetlb 2M|1G] [--control]
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Qmp:
    def __init__(self, path, timeout=30):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")
        json.loads(self.file.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.file.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.file.flush()
        while True:
            msg = json.loads(self.file.readline())
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError("%s: %s" % (name, msg["error"].get("desc")))


def qemu_command(version):
    if version == "7.2":
        return ["qemu-system-x86_64"]
    return [os.path.join(ROOT, "tools/qemu-peer.sh"), "run"]


def qemu(args, name, tmp, mem_mib, hugetlb, cmdline, extra):
    if hugetlb:
        path = "/dev/hugepages" if os.path.isdir("/dev/hugepages") else tmp
        backend = "memory-backend-memfd,id=ram,size=%dM,share=on,hugetlb=on,hugetlbsize=%s" % (mem_mib, hugetlb)
    else:
        backend = "memory-backend-memfd,id=ram,size=%dM,share=on" % mem_mib
    cmd = qemu_command(args.qemu) + ["-accel", "kvm", "-m", "%dM" % mem_mib, "-object", backend,
           "-machine", "pc,memory-backend=ram", "-smp", str(args.smp), "-kernel", args.kernel, "-append", cmdline,
           "-device", "isa-debug-exit,iobase=0x501", "-display", "none", "-nodefaults", "-no-reboot",
           "-serial", "file:%s/%s.serial" % (tmp, name), "-qmp", "unix:%s/%s.qmp,server=on,wait=off" % (tmp, name)]
    return subprocess.Popen(cmd + extra, stdout=subprocess.DEVNULL, stderr=open("%s/%s.log" % (tmp, name), "w"))


def slow_summary(serial):
    """The guest's SLOW line (touch.c) and its records [(t_us, page, us)]."""
    m = re.search(r"^SLOW (.*)$", serial, re.M)
    if not m:
        return {}, []
    summary = {k: (int(v, 16) if k == "buffer_gpa" else int(v))
               for k, v in (kv.split("=") for kv in m.group(1).split())}
    recs = [tuple(map(int, r.split(":"))) for line in re.findall(r"^SLOWREC (.*)$", serial, re.M)
            for r in line.split()]
    return summary, recs


def exit_cost(serial):
    """The guest's EXITCOST line (touch.c): what one vCPU exit costs it, in ns."""
    m = re.search(r"^EXITCOST (.*)$", serial, re.M)
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())} if m else {}


def free_port():
    """A loopback port the kernel just handed out (and took back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(path, text, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if text in open(path, errors="replace").read():
                return time.time()
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError("the guest did not print %r within %.0f s (see %s)" % (text, timeout, path))


def histogram(serial):
    hist = {}
    for m in re.finditer(r"HIST lo_us=(\d+) hi_us=(\d+) count=(\d+)", serial):
        hist[int(m.group(1))] = int(m.group(3))
    return hist


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default=os.path.join(ROOT, "build/guest/guest.elf"))
    ap.add_argument("--size", type=int, default=64, help="touch buffer MiB")
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--mem", type=int, default=512, help="guest RAM MiB")
    ap.add_argument("--qemu", choices=["7.2", "11.1"], default="7.2",
                    help="7.2: Debian 12's; 11.1: tools/qemu-peer.sh's chroot")
    ap.add_argument("--migrate-after", type=float, default=0.5,
                    help="seconds after the source guest prints 'touch: filled'")
    ap.add_argument("--control", action="store_true", help="run the source alone, no migration")
    ap.add_argument("--record-us", type=int, default=32, help="the guest records touches at least this slow")
    ap.add_argument("--precopy", type=float, default=0.5, help="seconds of precopy before postcopy")
    ap.add_argument("--preempt", action="store_true", help="enable postcopy-preempt")
    ap.add_argument("--hugetlb", choices=["2M", "1G"])
    ap.add_argument("--slow-us", type=int, default=32, help="count guest touches at least this slow")
    ap.add_argument("--smp", type=int, default=1, help="vCPUs (-smp N)")
    ap.add_argument("--share", choices=["disjoint", "shared"], default="disjoint",
                    help="the touch guest's share= with several vCPUs")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="qemu-postcopy.")
    cmdline = "workload=touch size=%d seconds=%d record_us=%d share=%s" % (args.size, args.seconds, args.record_us,
                                                                          args.share)
    if args.control:
        return control(args, tmp, cmdline)
    port = free_port()
    caps = [{"capability": "postcopy-ram", "state": True}, {"capability": "postcopy-blocktime", "state": True}]
    if args.preempt:
        caps.append({"capability": "postcopy-preempt", "state": True})
    procs = []
    try:
        dst = qemu(args, "dst", tmp, args.mem, args.hugetlb, cmdline, ["-incoming", "defer"])
        procs.append(dst)
        dq = Qmp("%s/dst.qmp" % tmp)
        dq.cmd("migrate-set-capabilities", capabilities=caps)
        dq.cmd("migrate-incoming", uri="tcp:127.0.0.1:%d" % port)
        src = qemu(args, "src", tmp, args.mem, args.hugetlb, cmdline, [])
        procs.append(src)
        sq = Qmp("%s/src.qmp" % tmp)
        sq.cmd("migrate-set-capabilities", capabilities=caps)
        t_filled = wait_for_line("%s/src.serial" % tmp, "touch: filled", 60)
        time.sleep(max(0.0, t_filled + args.migrate_after - time.time()))
        t0 = time.time()
        sq.cmd("migrate", uri="tcp:127.0.0.1:%d" % port)
        time.sleep(args.precopy)
        sq.cmd("migrate-start-postcopy")
        info, dinfo = {}, {}
        # The destination forgets its blocktime once its incoming state is
        # torn down after completion: keep the last figures it reported.
        while time.time() - t0 < 120:
            d = dq.cmd("query-migrate")
            if "postcopy-blocktime" in d or "postcopy-latency" in d:
                dinfo = d
            info = sq.cmd("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.02)
        total_ms = (time.time() - t0) * 1000
        # QEMU 11.1's destination reports its latency figures only once
        # complete, and the guest may exit (ending QEMU) soon after.
        for _ in range(100):
            try:
                d = dq.cmd("query-migrate")
            except (OSError, ValueError, RuntimeError):
                break
            if "postcopy-blocktime" in d or "postcopy-latency" in d:
                dinfo = d
            if d.get("status") == "completed" and (args.qemu == "7.2" or "postcopy-latency" in d):
                break
            time.sleep(0.02)
        dst.wait(timeout=args.seconds + 60)
        serial = open("%s/dst.serial" % tmp, errors="replace").read()
        hist = histogram(serial)
        faults = sum(c for lo, c in hist.items() if lo >= args.slow_us)
        blocktime = dinfo.get("postcopy-blocktime", 0)
        slow, recs = slow_summary(serial)
        print(json.dumps({
            "peer": "qemu", "qemu": args.qemu, "smp": args.smp, "share": args.share, "preempt": args.preempt, "trigger": "touch: filled + %gs" % args.migrate_after, "backend": "memfd" + ("-hugetlb-" + args.hugetlb if args.hugetlb else ""),
            "status": info.get("status"), "downtime_ms": info.get("downtime"), "total_ms": round(total_ms),
            "postcopy_blocktime_ms": blocktime, "postcopy_vcpu_blocktime_ms": dinfo.get("postcopy-vcpu-blocktime"),
            "guest_slow_touches": faults, "guest_slow_us": args.slow_us,
            "postcopy_latency_ns": dinfo.get("postcopy-latency"),  # QEMU documents ns
            "postcopy_vcpu_latency_ns": dinfo.get("postcopy-vcpu-latency"),
            "postcopy_latency_dist": dinfo.get("postcopy-latency-dist"),
            "guest_slow": slow, "guest_slow_records": recs, "guest_exit_cost_ns": exit_cost(serial),
            "verify_ok": "VERIFY OK" in serial, "guest_hist_us": hist, "qemu_exit": dst.returncode,
            "logs": tmp}, indent=2))
        return 0 if info.get("status") == "completed" and "VERIFY OK" in serial else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def control(args, tmp, cmdline):
    """The same guest under the same QEMU, without a migration."""
    src = qemu(args, "src", tmp, args.mem, args.hugetlb, cmdline, [])
    try:
        src.wait(timeout=args.seconds + 60)
    finally:
        if src.poll() is None:
            src.kill()
    serial = open("%s/src.serial" % tmp, errors="replace").read()
    slow, recs = slow_summary(serial)
    print(json.dumps({"peer": "qemu", "qemu": args.qemu, "control": True,
                      "backend": "memfd" + ("-hugetlb-" + args.hugetlb if args.hugetlb else ""),
                      "verify_ok": "VERIFY OK" in serial, "guest_hist_us": histogram(serial),
                      "guest_slow": slow, "guest_slow_records": recs, "guest_exit_cost_ns": exit_cost(serial),
                      "logs": tmp}, indent=2))
    return 0 if "VERIFY OK" in serial else 1


if __name__ == "__main__":
    sys.exit(main())
