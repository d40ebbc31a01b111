#!/usr/bin/env python3
"""QEMU's own postcopy on the same guest, as the peer to compare with.

Runs two qemu-system-x86_64 -accel kvm processes on this machine (source and
-incoming destination), RAM on memory-backend-memfd share=on (or hugetlb with
--hugetlb 2M|1G), the same guest.elf and command line as our VMM, QMP with
postcopy-ram + postcopy-blocktime (and postcopy-preempt with --preempt).
Migrates over loopback after --migrate-after seconds, switches to postcopy
after --precopy seconds, and prints one JSON object: QEMU's blocktime (the
last figure the destination reported during postcopy: it forgets it once the
incoming side is torn down) and the guest's touch histogram on the
destination. QEMU does not count faults; guest_slow_touches (touches of at
least --slow-us over the whole run) is an upper bound, noise included.

  tools/qemu-postcopy.py [--size 64] [--seconds 6] [--mem 512] [--preempt] [--hugetlb 2M|1G]
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


def qemu(args, name, tmp, mem_mib, hugetlb, cmdline, extra):
    if hugetlb:
        path = "/dev/hugepages" if os.path.isdir("/dev/hugepages") else tmp
        backend = "memory-backend-memfd,id=ram,size=%dM,share=on,hugetlb=on,hugetlbsize=%s" % (mem_mib, hugetlb)
    else:
        backend = "memory-backend-memfd,id=ram,size=%dM,share=on" % mem_mib
    cmd = ["qemu-system-x86_64", "-accel", "kvm", "-m", "%dM" % mem_mib, "-object", backend,
           "-machine", "pc,memory-backend=ram", "-kernel", args.kernel, "-append", cmdline,
           "-device", "isa-debug-exit,iobase=0x501", "-display", "none", "-nodefaults", "-no-reboot",
           "-serial", "file:%s/%s.serial" % (tmp, name), "-qmp", "unix:%s/%s.qmp,server=on,wait=off" % (tmp, name)]
    return subprocess.Popen(cmd + extra, stdout=subprocess.DEVNULL, stderr=open("%s/%s.log" % (tmp, name), "w"))


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
    ap.add_argument("--migrate-after", type=float, default=1.5)
    ap.add_argument("--precopy", type=float, default=0.5, help="seconds of precopy before postcopy")
    ap.add_argument("--preempt", action="store_true", help="enable postcopy-preempt")
    ap.add_argument("--hugetlb", choices=["2M", "1G"])
    ap.add_argument("--slow-us", type=int, default=32, help="count guest touches at least this slow")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="qemu-postcopy.")
    cmdline = "workload=touch size=%d seconds=%d" % (args.size, args.seconds)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
        time.sleep(args.migrate_after)
        t0 = time.time()
        sq.cmd("migrate", uri="tcp:127.0.0.1:%d" % port)
        time.sleep(args.precopy)
        sq.cmd("migrate-start-postcopy")
        info, dinfo = {}, {}
        # The destination forgets its blocktime once its incoming state is
        # torn down after completion: keep the last figures it reported.
        while time.time() - t0 < 120:
            d = dq.cmd("query-migrate")
            if "postcopy-blocktime" in d:
                dinfo = d
            info = sq.cmd("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.02)
        total_ms = (time.time() - t0) * 1000
        try:
            d = dq.cmd("query-migrate")
            if "postcopy-blocktime" in d:
                dinfo = d
        except (OSError, ValueError, RuntimeError):
            pass
        dst.wait(timeout=args.seconds + 60)
        serial = open("%s/dst.serial" % tmp, errors="replace").read()
        hist = histogram(serial)
        faults = sum(c for lo, c in hist.items() if lo >= args.slow_us)
        blocktime = dinfo.get("postcopy-blocktime", 0)
        print(json.dumps({
            "peer": "qemu", "preempt": args.preempt, "backend": "memfd" + ("-hugetlb-" + args.hugetlb if args.hugetlb else ""),
            "status": info.get("status"), "downtime_ms": info.get("downtime"), "total_ms": round(total_ms),
            "postcopy_blocktime_ms": blocktime, "postcopy_vcpu_blocktime_ms": dinfo.get("postcopy-vcpu-blocktime"),
            "guest_slow_touches": faults, "guest_slow_us": args.slow_us,
            "verify_ok": "VERIFY OK" in serial, "guest_hist_us": hist, "qemu_exit": dst.returncode,
            "logs": tmp}, indent=2))
        return 0 if info.get("status") == "completed" and "VERIFY OK" in serial else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
