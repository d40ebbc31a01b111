#!/usr/bin/env bash
# Two "hosts" on this machine joined by a link of a chosen shape, for
# tools/two-hosts.sh and tools/lab.py:
#
#   tools/link.sh up NAME [--rate MBIT] [--rtt MS] [--prio on|off]
#       network namespaces NAME-src (10.213.0.1) and NAME-dst (10.213.0.2)
#       joined by a veth pair; these addresses exist only inside them.
#       --rate MBIT  tc tbf on both veth ends (with netem: netem's rate)
#       --prio on    (default) under tbf, pfifo_fast: packets of socket
#                    priority 6, as vmm's urgent connection marks them
#                    (DSCP EF), leave before queued bulk data, like a
#                    DSCP-aware switch; off: one FIFO for all
#       --rtt MS     tc netem delay where the kernel has sch_netem; otherwise
#                    the caller must route through our user-space delay relay
#                    (build/tools/delay_relay/delay_relay --delay-ms HALF_MS)
#       Prints KEY=VALUE lines for the caller: SRC_NS DST_NS SRC_IP DST_IP
#       DELAY (none|netem|relay) HALF_MS DESCRIBE; says on stderr what it chose.
#   tools/link.sh down NAME
#       deletes both namespaces, with the veth pair and its qdiscs.
# Needs root (ip netns, tc).
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
op=$1 name=$2
shift 2
[ "$(id -u)" -eq 0 ] || { echo "link: needs root (ip netns, tc)" >&2; exit 1; }
SRC_NS=$name-src DST_NS=$name-dst SRC_IP=10.213.0.1 DST_IP=10.213.0.2

if [ "$op" = down ]; then
  ip netns del "$SRC_NS" 2>/dev/null || true
  ip netns del "$DST_NS" 2>/dev/null || true
  exit 0
fi
[ "$op" = up ] || usage

RATE="" RTT="" PRIO=on
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE=${2:?--rate needs Mbit/s}; shift 2 ;;
    --rtt) RTT=${2:?--rtt needs milliseconds}; shift 2 ;;
    --prio) PRIO=${2:?--prio needs on or off}; shift 2 ;;
    *) echo "link: unknown argument '$1'" >&2; usage ;;
  esac
done
[ -z "$RATE" ] || [[ "$RATE" =~ ^[0-9]+$ ]] || { echo "link: --rate takes whole Mbit/s, not '$RATE'" >&2; exit 2; }
[ -z "$RTT" ] || [[ "$RTT" =~ ^[0-9.]+$ ]] || { echo "link: --rtt takes milliseconds, not '$RTT'" >&2; exit 2; }
[ "$PRIO" = on ] || [ "$PRIO" = off ] || { echo "link: --prio takes on or off, not '$PRIO'" >&2; exit 2; }

ip netns add "$SRC_NS"
ip netns add "$DST_NS"
ip link add veth-src netns "$SRC_NS" type veth peer name veth-dst netns "$DST_NS"
ip -n "$SRC_NS" addr add $SRC_IP/30 dev veth-src
ip -n "$DST_NS" addr add $DST_IP/30 dev veth-dst
for ns in "$SRC_NS" "$DST_NS"; do ip -n "$ns" link set lo up; done
ip -n "$SRC_NS" link set veth-src up
ip -n "$DST_NS" link set veth-dst up

DELAY=none HALF_MS=0 describe="veth"
if [ -n "$RTT" ]; then
  HALF_MS=$(awk "BEGIN { print $RTT / 2 }")
  err=$(ip netns exec "$SRC_NS" tc qdisc add dev veth-src root netem delay "${HALF_MS}ms" 2>&1) && ok=1 || ok=0
  if [ $ok = 1 ]; then
    ip netns exec "$DST_NS" tc qdisc add dev veth-dst root netem delay "${HALF_MS}ms"
    DELAY=netem
    describe="$describe, RTT ${RTT} ms by tc netem"
  else
    DELAY=relay
    describe="$describe, RTT ${RTT} ms by the user-space delay relay (tc netem: $(echo "$err" | tr -d '\n'))"
  fi
fi
if [ -n "$RATE" ]; then
  if [ "$DELAY" = netem ]; then
    ip netns exec "$SRC_NS" tc qdisc change dev veth-src root netem delay "${HALF_MS}ms" rate "${RATE}mbit"
    ip netns exec "$DST_NS" tc qdisc change dev veth-dst root netem delay "${HALF_MS}ms" rate "${RATE}mbit"
  else
    for end in "$SRC_NS veth-src" "$DST_NS veth-dst"; do
      set -- $end
      ip netns exec "$1" tc qdisc add dev "$2" root handle 1: tbf rate "${RATE}mbit" burst 256kb latency 100ms
      [ "$PRIO" = off ] || ip netns exec "$1" tc qdisc add dev "$2" parent 1:1 handle 10: pfifo_fast
    done
  fi
  describe="$describe, ${RATE} Mbit/s each way"
  if [ "$DELAY" = netem ]; then
    describe="$describe, one FIFO (netem's rate has no priority bands)"
  elif [ "$PRIO" = on ]; then
    describe="$describe, priority bands (pfifo_fast under tbf)"
  else
    describe="$describe, one FIFO"
  fi
fi
echo "link: $SRC_NS ($SRC_IP) <-> $DST_NS ($DST_IP): $describe" >&2
cat <<EOF
SRC_NS=$SRC_NS
DST_NS=$DST_NS
SRC_IP=$SRC_IP
DST_IP=$DST_IP
DELAY=$DELAY
HALF_MS=$HALF_MS
DESCRIBE="$describe"
EOF
