#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/ and runs
# each for SECONDS (default 60), starting from the seeds in tests/fuzz/corpus.
#   tools/fuzz.sh [SECONDS] [TARGET...]
# Prints, per target, the executions run and whether anything was found; a
# crashing input is kept in build-fuzz/findings/TARGET/ and the script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
JOBS=$(nproc)

if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ is missing (tools/install-deps.sh installs it)" >&2
  exit 2
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DVMM_FUZZ=ON -DVMM_TESTS=OFF -DVMM_BENCHMARKS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz --target fuzz_targets -j "$JOBS" >/dev/null

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in build-fuzz/tests/fuzz/fuzz_*; do
    n=$(basename "$f")
    [ "$n" = fuzz_make_seeds ] || [ ! -x "$f" ] || targets+=("$n")
  done
fi

found=0
total=0
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$t findings=build-fuzz/findings/$t
  mkdir -p "$corpus" "$findings"
  [ -d tests/fuzz/corpus/$t ] && cp -n tests/fuzz/corpus/$t/* "$corpus"/ 2>/dev/null || true
  log=build-fuzz/$t.log
  set +e
  "build-fuzz/tests/fuzz/$t" -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 \
    -artifact_prefix="$findings/" -print_final_stats=1 "$corpus" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  total=$((total + ${execs:-0}))
  if [ $rc -ne 0 ] || ls "$findings"/crash-* "$findings"/leak-* "$findings"/timeout-* >/dev/null 2>&1; then
    found=1
    echo "fuzz: $t FOUND something after ${execs:-?} executions (exit $rc): see $log and $findings/"
    grep -m3 -E "ERROR|runtime error|SUMMARY" "$log" || true
  else
    echo "fuzz: $t ${execs:-0} executions in ${SECONDS_EACH} s, coverage ${cov:-?} edges, corpus $(ls "$corpus" | wc -l) inputs, nothing found"
  fi
done
echo "fuzz: ${#targets[@]} targets, $total executions in all, $([ $found = 0 ] && echo nothing found || echo FINDINGS above)"
exit $found
