#!/usr/bin/env bash
# Quick start: install what is needed, build, show what this host can do, then
# boot the touch guest on guest_memfd (on shmem where this KVM has none, saying
# why) and migrate it with postcopy over loopback to destinations on hugetlb
# 1 GiB, hugetlb 2 MiB and shmem (each hugetlb one skipped, saying why, where
# its pages cannot be reserved),
# and print the fault-latency summary next to this host's floors (4 KiB TCP
# round trip, local userfaultfd MINOR round trip) measured in the same run.
#   tools/demo.sh [--size MIB] [--seconds S] [--mode postcopy|hybrid]
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=64
SECS=6
MODE=postcopy
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVMM_BENCHMARKS=ON >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
OUT=$(mktemp -d /tmp/vmm-demo.XXXXXX)
echo "== build/vmm caps"
build/vmm caps
if ! why=$(build/vmm caps --check shmem); then
  echo "demo: nothing can boot on this host: ${why#shmem: not usable here: }" >&2
  exit 1
fi
# The source runs on guest_memfd where this KVM offers it, else on shmem.
if why=$(build/vmm caps --check gmem); then
  SRC=gmem
else
  SRC=shmem
  echo "demo: the source runs on shmem: ${why#gmem: not usable here: }"
fi

reserved=()
cleanup() {
  for r in "${reserved[@]}"; do tools/hugepages.sh release $r >/dev/null || true; done
  jobs -p | xargs -r kill 2>/dev/null || true
}
trap cleanup EXIT
declare -A skipped
for r in "hugetlb-1g 1g 1" "hugetlb-2m 2m 160"; do
  set -- $r
  if why=$(tools/hugepages.sh reserve "$2" "$3" 2>&1 >/dev/null); then
    reserved+=("$2 $3")
  else
    skipped[$1]="${why#hugepages: }"
  fi
done

echo "== baselines on this host (build/bench/baselines)"
build/bench/baselines --benchmark_format=json --benchmark_out="$OUT/baselines.json" \
  --benchmark_out_format=json >/dev/null 2>"$OUT/baselines.err" || cat "$OUT/baselines.err"

PORT=$((20000 + RANDOM % 20000))
migrate() {  # migrate DST_MEMORY MEM_SIZE
  local dst=$1 mem=$2 port=$((PORT++)) src_rc=0 bind=()
  # KVM refuses dirty logging on a KVM_MEM_GUEST_MEMFD memslot: hybrid binds guest_memfd by hva.
  [ "$SRC" != gmem ] || [ "$MODE" = postcopy ] || bind=(--gmem-bind hva)
  if [ -n "${skipped[$dst]:-}" ]; then
    echo "== $dst destination skipped: ${skipped[$dst]}" | tee "$OUT/$dst.skipped"
    return
  fi
  echo "== vmm receive --memory $dst   <-   vmm run --memory $SRC --mode $MODE (guest: touch size=$SIZE seconds=$SECS)"
  build/vmm receive --listen 127.0.0.1:$port --memory "$dst" --report "$OUT/$dst.json" --accept-timeout 30 \
    >"$OUT/$dst.guest" 2>"$OUT/$dst.log" &
  local d=$!
  for _ in $(seq 400); do grep -q listening "$OUT/$dst.log" 2>/dev/null && break; sleep 0.025; done
  build/vmm run --kernel build/guest/guest.elf --cmdline "workload=touch size=$SIZE seconds=$SECS" \
    --memory "$SRC" --mem-size "$mem" --mode "$MODE" --migrate-to 127.0.0.1:$port --migrate-after 1.5 "${bind[@]}" \
    >"$OUT/$dst.src.guest" 2>"$OUT/$dst.src.log" || src_rc=$?
  # A source that failed leaves its destination nothing to wait for.
  [ $src_rc -eq 0 ] || kill $d 2>/dev/null || true
  wait $d || true
  grep -hE "migrate:|switchover|error" "$OUT/$dst.src.log" || true
  sed -n '/=== postcopy summary/,/total/p' "$OUT/$dst.log"
  grep -hE "VERIFY|error" "$OUT/$dst.guest" "$OUT/$dst.log" || true
}
migrate hugetlb-1g 1G
migrate hugetlb-2m 256M
migrate shmem 256M

echo "== summary (all figures from this run; reports and logs in $OUT)"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
base = {}
try:
    for b in json.load(open(os.path.join(out, "baselines.json")))["benchmarks"]:
        if "p50_us" in b:
            base[b["name"].split("/iterations")[0]] = (b["p50_us"], b["p99_us"])
except (OSError, ValueError, KeyError):
    pass
def fmt(k):
    return "p50 %.0f us, p99 %.0f us" % base[k] if k in base else "not measured"
print("  4 KiB TCP round trip (loopback):        " + fmt("tcp_rtt_4k"))
for b in ("shmem", "hugetlb_2m", "hugetlb_1g"):
    print("  local uffd MINOR round trip, %-10s " % (b + ":") + fmt("uffd_minor/" + b))
print()
print("  %-11s %-8s %7s %9s %9s %9s %11s %10s  %s" % ("destination", "page", "faults", "p50 us", "p99 us",
      "max us", "blocked ms", "downtime", "guest"))
for dst in ("hugetlb-1g", "hugetlb-2m", "shmem"):
    path = os.path.join(out, dst + ".json")
    if os.path.exists(os.path.join(out, dst + ".skipped")):
        print("  %-11s skipped: %s" % (dst, open(os.path.join(out, dst + ".skipped")).read().split(": ", 1)[1].strip()))
        continue
    verdict = "VERIFY OK" if "VERIFY OK" in open(os.path.join(out, dst + ".guest")).read() else "no VERIFY OK"
    if not os.path.exists(path):
        why = [l.split("error] ", 1)[1] for l in open(os.path.join(out, dst + ".log")) if "error] " in l]
        print("  %-11s migration did not complete: %s" % (dst, why[-1].strip() if why else "see %s.log" % dst))
        continue
    r = json.load(open(path))
    page = {4096: "4 KiB", 2 << 20: "2 MiB", 1 << 30: "1 GiB"}.get(r["page_size"], str(r["page_size"]))
    l = r["latency_us"]
    print("  %-11s %-8s %7d %9.0f %9.0f %9.0f %11.1f %8.2f ms  %s" % (dst, page, r["faults"], l["p50"], l["p99"],
          l["max"], r["vcpu_blocked_ms"], r["downtime_ms"], verdict))
PY
