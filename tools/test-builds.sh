#!/usr/bin/env bash
# The other two ways the project is built, as CI checks them after tools/test.sh:
#   1. Release (-O3, NDEBUG), every target, warnings as errors: the build a user
#      makes with -DCMAKE_BUILD_TYPE=Release must compile on Debian 12's GCC.
#   2. AddressSanitizer + UndefinedBehaviorSanitizer (-DVMM_SANITIZE=ON), then the
#      unit tests (ctest -L unit) under the sanitizers; any report fails the run.
#   3. ThreadSanitizer (-DVMM_TSAN=ON), then the unit tests, among them the
#      postcopy core's threads (page states and their mapper, the fault
#      resolver, the page server, the destination's link); any report fails.
# Usage: tools/test-builds.sh [release] [sanitize] [tsan]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(release sanitize tsan)
for w in "${want[@]}"; do
  case "$w" in release|sanitize|tsan) ;; *) echo "test-builds: unknown build '$w' (release, sanitize, tsan)" >&2; exit 2 ;; esac
done

tools/install-deps.sh
jobs=$(nproc)

for w in "${want[@]}"; do
  t0=$SECONDS
  case "$w" in
    release)
      echo "test-builds: Release build in build-release/"
      cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DVMM_WERROR=ON -DVMM_TESTS=ON -DVMM_BENCHMARKS=ON >/dev/null
      cmake --build build-release -j"$jobs"
      ;;
    sanitize)
      echo "test-builds: ASan/UBSan build in build-sanitize/, unit tests under the sanitizers"
      cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Debug -DVMM_SANITIZE=ON -DVMM_WERROR=ON \
        -DVMM_TESTS=ON -DVMM_BENCHMARKS=OFF >/dev/null
      cmake --build build-sanitize -j"$jobs" --target vmm_unit_tests migration_unit_tests
      # halt_on_error: a report is a failure, not a line in a log nobody reads.
      ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        ctest --test-dir build-sanitize --output-on-failure -L unit
      ;;
    tsan)
      echo "test-builds: ThreadSanitizer build in build-tsan/, unit tests under it"
      cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DVMM_TSAN=ON -DVMM_WERROR=ON \
        -DVMM_TESTS=ON -DVMM_BENCHMARKS=OFF >/dev/null
      cmake --build build-tsan -j"$jobs" --target vmm_unit_tests migration_unit_tests
      TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        ctest --test-dir build-tsan --output-on-failure -L unit
      ;;
  esac
  echo "test-builds: $w passed in $((SECONDS - t0)) s"
done
