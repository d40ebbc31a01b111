#!/usr/bin/env bash
# Builds the project and runs every test (unit + integration) with ctest.
#   tools/test.sh [extra ctest arguments, e.g. -L unit or -R Boot]
# Installs missing Debian packages first (idempotent), so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVMM_TESTS=ON -DVMM_BENCHMARKS=ON -DVMM_WERROR=ON \
  ${VMM_CMAKE_ARGS:-}
cmake --build build -j"$(nproc)"

cd build
rc=0
rm -rf kernel-lab-runs
ctest --output-on-failure "$@" || rc=$?

# ctest hides why a test skipped; GoogleTest wrote it to the log. Show it,
# with the cases a passing test skipped ("[ SKIPPED  ] case: why") and the
# notes tests print about this host ("[   NOTE   ] ...", each once).
[ -z "${VMM_HIDE_GUEST_MEMFD:-}" ] || echo "test: run with VMM_HIDE_GUEST_MEMFD=$VMM_HIDE_GUEST_MEMFD (guest_memfd hidden)"
awk '/^[0-9]+\/[0-9]+ Testing: / { name = $3 }
     /: Skipped$/ { getline reason; print "SKIPPED " name ": " reason }
     /^\[ SKIPPED  \] / { sub(/^\[ SKIPPED  \] /, ""); print "SKIPPED " name " (one case) " $0 }
     /^\[   NOTE   \] / && !seen[$0]++ { sub(/^\[   NOTE   \] /, ""); print "NOTE " $0 }' \
  Testing/Temporary/LastTest.log || true
# The kernel-lab test's runs: what each lab kernel said, in full.
for summary in kernel-lab-runs/*/summary.txt; do
  [ -f "$summary" ] || continue
  echo "--- kernel lab: $summary"
  cat "$summary"
done
exit $rc
