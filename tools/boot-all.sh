#!/usr/bin/env bash
# Boot the touch guest on every RAM backend (no migration) and print one
# summary line each: exit code, VERIFY verdict, fill time, random touches.
#   tools/boot-all.sh [--size MIB] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=64
SECONDS_TOUCH=2
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE=$2; shift 2 ;;
    --seconds) SECONDS_TOUCH=$2; shift 2 ;;
    -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "boot-all: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

# hugetlb backends need reserved pages: take what the demo needs, give it back on exit.
reserved=()
release() { for r in "${reserved[@]}"; do tools/hugepages.sh release $r >/dev/null || true; done; }
trap release EXIT
mib2=$(( (SIZE + 16 + 2) / 2 * 2 ))
if tools/hugepages.sh reserve 2m $((mib2 / 2 + 8)) >/dev/null; then reserved+=("2m $((mib2 / 2 + 8))"); fi
if tools/hugepages.sh reserve 1g 1 >/dev/null; then reserved+=("1g 1"); fi

summary=()
run_one() {
  local label=$1; shift
  local out rc=0
  echo "== build/vmm run $* --cmdline \"workload=touch size=$SIZE seconds=$SECONDS_TOUCH\""
  out=$(build/vmm run --kernel build/guest/guest.elf --cmdline "workload=touch size=$SIZE seconds=$SECONDS_TOUCH" \
        "$@" 2>&1) || rc=$?
  echo "$out" | grep -vE '^HIST lo_us' || true
  local verify fill touches
  verify=$(echo "$out" | grep -oE 'VERIFY (OK|FAIL)[^ ]*( pages=[0-9]+)?' | head -1)
  fill=$(echo "$out" | grep -oE 'filled [0-9]+ pages in [0-9]+ ms' | grep -oE '[0-9]+ ms' || true)
  touches=$(echo "$out" | grep -oE 'done touches=[0-9]+ .*' | sed 's/done //' || true)
  summary+=("$(printf '%-22s exit=%-3s %-22s fill=%-7s %s' "$label" "$rc" "${verify:-no verdict}" "${fill:--}" "${touches:-}")")
}

if why=$(build/vmm caps --check gmem); then
  run_one "gmem (fd memslot)" --memory gmem --gmem-bind fd
  run_one "gmem (hva memslot)" --memory gmem --gmem-bind hva
else
  summary+=("$(printf '%-22s skipped: %s' gmem "${why#gmem: not usable here: }")")
fi
run_one "shmem" --memory shmem
run_one "hugetlb-2m" --memory hugetlb-2m --mem-size "$((mib2 + 16))M"
run_one "hugetlb-1g" --memory hugetlb-1g

echo
echo "== summary (guest RAM backend, exit code, guest verdict, fill time, random touches)"
printf '%s\n' "${summary[@]}"
