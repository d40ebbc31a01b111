#!/usr/bin/env bash
# Boot-to-first-serial-line benchmark on every backend (docs/lab/README.md has a run).
#   tools/bench-boot.sh [Google Benchmark flags, e.g. --benchmark_min_time=2]
# Reserves 128 x 2 MiB and 1 x 1 GiB hugepages for the run and releases them after.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DVMM_BENCHMARKS=ON >/dev/null
cmake --build build -j"$(nproc)" --target boot_bench >/dev/null
reserved=()
release() { for r in "${reserved[@]}"; do tools/hugepages.sh release $r >/dev/null || true; done; }
trap release EXIT
if tools/hugepages.sh reserve 2m 128; then reserved+=("2m 128"); fi
if tools/hugepages.sh reserve 1g 1; then reserved+=("1g 1"); fi
build/bench/boot_bench --benchmark_min_time=1 "$@"
