#!/usr/bin/env bash
# Migrate between two "hosts" on this machine: two network namespaces joined
# by a veth pair (10.213.0.1 = source, 10.213.0.2 = destination; these
# addresses exist only inside the namespaces). Optionally shape the link:
#   --rate MBIT   tc tbf on both veth ends
#   --rtt MS      tc netem delay where the kernel has sch_netem; otherwise our
#                 user-space delay relay (build/tools/delay_relay/delay_relay)
#                 inside the destination namespace. The script says which.
#   --prio off    with --rate, one FIFO for all packets; by default pfifo_fast
#                 under tbf sends the urgent connection's (socket priority 6,
#                 DSCP EF) ahead of the push, like a DSCP-aware network
# Everything is torn down on exit or Ctrl-C: processes, namespaces (with the
# veth pair and its qdiscs) and the hugepages it reserved.
#
# The source's RAM is guest_memfd where this KVM offers it, else shmem (it says
# why); --src-memory chooses.
#
#   tools/two-hosts.sh [--src-memory gmem] [--dst-memory hugetlb-1g] [--mode postcopy]
#                      [--mem-size 1G] [--size 64] [--seconds 6] [--rate MBIT] [--rtt MS]
#                      [--prio on|off] [--report FILE.json]
set -euo pipefail
cd "$(dirname "$0")/.."

SRC_MEM=; DST_MEM=shmem; MODE=postcopy; MEM_SIZE=256M; SIZE=64; SECS=6
RATE=""; RTT=""; PRIO=on; REPORT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --src-memory) SRC_MEM=$2; shift 2 ;;
    --dst-memory) DST_MEM=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --mem-size) MEM_SIZE=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --rtt) RTT=$2; shift 2 ;;
    --prio) PRIO=$2; shift 2 ;;
    --report) REPORT=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "two-hosts: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "two-hosts: needs root (ip netns, tc)" >&2; exit 1; }

VMM=build/vmm
RELAY=build/tools/delay_relay/delay_relay
[ -x "$VMM" ] && [ -x "$RELAY" ] || { cmake -S . -B build >/dev/null; cmake --build build -j"$(nproc)" >/dev/null; }

if [ -z "$SRC_MEM" ]; then
  if why=$("$VMM" caps --check gmem); then
    SRC_MEM=gmem
  else
    SRC_MEM=shmem
    echo "two-hosts: the source runs on shmem: ${why#gmem: not usable here: }"
  fi
fi
bind=()
# KVM refuses dirty logging on a KVM_MEM_GUEST_MEMFD memslot: hybrid binds guest_memfd by hva.
[ "$SRC_MEM" != gmem ] || [ "$MODE" = postcopy ] || bind=(--gmem-bind hva)

LINK=vmm-$$; PORT=4444; RELAY_PORT=5555
OUT=$(mktemp -d /tmp/vmm-two-hosts.XXXXXX)
REPORT=${REPORT:-$OUT/report.json}
reserved=()
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  tools/link.sh down "$LINK"
  for r in "${reserved[@]}"; do tools/hugepages.sh release $r >/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

link_args=()
[ -z "$RATE" ] || link_args+=(--rate "$RATE")
[ -z "$RTT" ] || link_args+=(--rtt "$RTT")
link_args+=(--prio "$PRIO")
eval "$(tools/link.sh up "$LINK" "${link_args[@]}" 2>/dev/null)"
[ -n "${SRC_NS:-}" ] || { echo "two-hosts: could not set up the link (tools/link.sh up $LINK)" >&2; exit 1; }
echo "two-hosts: source $SRC_NS ($SRC_IP) <-veth-> destination $DST_NS ($DST_IP)"
[ -z "$RATE" ] || echo "two-hosts: link rate ${RATE} Mbit/s each way"
case "$DELAY" in
  none) delay_by=none ;;
  netem) delay_by="tc netem (${HALF_MS} ms each way)" ;;
  relay) delay_by="user-space delay relay (${HALF_MS} ms each way; ${DESCRIBE#*tc netem: }" ;;
esac
half=$HALF_MS
echo "two-hosts: added delay: $delay_by"

case "$MEM_SIZE" in
  *G) mem_mib=$(( ${MEM_SIZE%G} * 1024 )) ;;
  *M) mem_mib=${MEM_SIZE%M} ;;
  *) echo "two-hosts: --mem-size takes a number with M or G, not '$MEM_SIZE'" >&2; exit 2 ;;
esac
case "$DST_MEM" in
  hugetlb-2m) need="2m $(( mem_mib / 2 ))" ;;
  hugetlb-1g) need="1g $(( (mem_mib + 1023) / 1024 ))" ;;
  *) need="" ;;
esac
if [ -n "$need" ] && tools/hugepages.sh reserve $need >/dev/null; then reserved+=("$need"); fi

ip netns exec "$DST_NS" "$VMM" receive --listen "127.0.0.1:$PORT" --memory "$DST_MEM" --report "$REPORT" --accept-timeout 30 \
  >"$OUT/destination.out" 2>"$OUT/destination.log" &
dst_pid=$!; pids+=($dst_pid)
target="$DST_IP:$RELAY_PORT"
if [[ "$delay_by" == user-space* ]]; then
  ip netns exec "$DST_NS" "$RELAY" --listen "$DST_IP:$RELAY_PORT" --to "127.0.0.1:$PORT" --delay-ms "$half" \
    >"$OUT/relay.log" 2>&1 &
else
  ip netns exec "$DST_NS" "$RELAY" --listen "$DST_IP:$RELAY_PORT" --to "127.0.0.1:$PORT" --delay-ms 0 \
    >"$OUT/relay.log" 2>&1 &
fi
pids+=($!)
sleep 0.5
echo "two-hosts: vmm run --memory $SRC_MEM --mem-size $MEM_SIZE --mode $MODE -> $target (destination on $DST_MEM)"
src_rc=0
ip netns exec "$SRC_NS" "$VMM" run --kernel build/guest/guest.elf \
  --cmdline "workload=touch size=$SIZE seconds=$SECS" --memory "$SRC_MEM" --mem-size "$MEM_SIZE" \
  --mode "$MODE" --migrate-to "$target" --migrate-after 1.5 "${bind[@]}" >"$OUT/source.out" 2>"$OUT/source.log" \
  || src_rc=$?
# A source that failed leaves its destination nothing to wait for.
[ $src_rc -eq 0 ] || kill $dst_pid 2>/dev/null || true
dst_rc=0
wait $dst_pid || dst_rc=$?
grep -hE "migrate:|switchover|error" "$OUT/source.log" || true
sed -n '/=== postcopy summary/,/total/p' "$OUT/destination.log"
grep -hE "VERIFY|error" "$OUT/destination.out" "$OUT/destination.log" || true
echo "two-hosts: source exit $src_rc, destination exit $dst_rc; report $REPORT, logs in $OUT"
[ $src_rc -eq 0 ] && [ $dst_rc -eq 0 ]
