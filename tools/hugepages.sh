#!/usr/bin/env bash
# Reserve and release hugetlb pages for guest RAM (--memory hugetlb-2m / hugetlb-1g).
#
#   tools/hugepages.sh status
#   tools/hugepages.sh reserve 2m|1g COUNT   add COUNT pages to the pool (all or nothing)
#   tools/hugepages.sh release 2m|1g COUNT   give COUNT pages back
#
# reserve/release adjust the pool by COUNT rather than setting it, so that
# several users (tests, benchmarks, a person) can each return what they took.
# Needs root (it writes /sys/kernel/mm/hugepages/*/nr_hugepages).
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

dir_for() {
  case "$1" in
    2m|2M) echo /sys/kernel/mm/hugepages/hugepages-2048kB ;;
    1g|1G) echo /sys/kernel/mm/hugepages/hugepages-1048576kB ;;
    *) echo "hugepages: size must be 2m or 1g, not '$1'" >&2; exit 2 ;;
  esac
}

status() {
  for size in 2m 1g; do
    d=$(dir_for "$size")
    if [ -d "$d" ]; then
      echo "$size: reserved=$(cat "$d/nr_hugepages") free=$(cat "$d/free_hugepages")"
    else
      echo "$size: not offered by this kernel"
    fi
  done
}

adjust() {
  local op=$1 size=$2 count=$3 d before want after
  d=$(dir_for "$size")
  [[ "$count" =~ ^[0-9]+$ ]] || { echo "hugepages: COUNT must be a number, not '$count'" >&2; exit 2; }
  [ -d "$d" ] || { echo "hugepages: this kernel offers no $size hugepages ($d missing)" >&2; exit 1; }
  [ -w "$d/nr_hugepages" ] || { echo "hugepages: cannot write $d/nr_hugepages: run as root" >&2; exit 1; }
  before=$(cat "$d/nr_hugepages")
  if [ "$op" = reserve ]; then
    want=$((before + count))
  else
    want=$((before > count ? before - count : 0))
  fi
  echo "$want" > "$d/nr_hugepages"
  after=$(cat "$d/nr_hugepages")
  if [ "$op" = reserve ] && [ "$after" -lt "$want" ] && [ -w /proc/sys/vm/compact_memory ]; then
    # Memory too fragmented for a contiguous page: compact once and retry.
    echo 1 > /proc/sys/vm/compact_memory
    echo "$want" > "$d/nr_hugepages"
    after=$(cat "$d/nr_hugepages")
  fi
  if [ "$op" = reserve ] && [ "$after" -lt "$want" ]; then
    echo "$before" > "$d/nr_hugepages"
    echo "hugepages: asked for $count more $size pages, the kernel found only $((after - before))" \
         "(memory too fragmented or too small); pool left at $before" >&2
    exit 1
  fi
  echo "hugepages: $size pool $before -> $after (free $(cat "$d/free_hugepages"))"
}

case "${1:-}" in
  status) status ;;
  reserve|release) [ $# -eq 3 ] || usage; adjust "$1" "$2" "$3" ;;
  -h|--help|"") usage ;;
  *) echo "hugepages: unknown command '$1'" >&2; usage ;;
esac
