#!/usr/bin/env bash
# The whole test suite: builds mailproto twice, normally and with AddressSanitizer + UndefinedBehaviorSanitizer,
# and runs the unit tests (CUnit, through ctest) and the integration tests (pytest, the real mailprotod over
# real sockets) against each build. Prints one closing line "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
top=$PWD
jobs=$(nproc)
passed=0 failed=0
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$top/tests/lsan.supp:print_suppressions=0

suite() {
  local name=$1 build=$2; shift 2
  echo "== $name: build ($build)"
  if ! { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null && cmake --build "$build" -j"$jobs" >"$build.log" 2>&1; }; then
    cat "$build.log"; echo "== $name: BUILD FAILED"; failed=$((failed + 1)); return
  fi
  echo "== $name: unit tests"
  local out
  out=$(cd "$build" && ctest --output-on-failure 2>&1); echo "$out"
  local t f
  t=$(sed -n 's/.* tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2/p' <<<"$out")
  f=$(sed -n 's/.* tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1/p' <<<"$out")
  passed=$((passed + ${t:-0} - ${f:-0})); failed=$((failed + ${f:-1}))
  echo "== $name: integration tests"
  out=$(MAILPROTO_BUILD="$top/$build" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration 2>&1); echo "$out"
  local line; line=$(tail -n 1 <<<"$out")
  t=$(grep -o '[0-9]* passed' <<<"$line" | cut -d' ' -f1)
  f=$(grep -o '[0-9]* \(failed\|error\)' <<<"$line" | cut -d' ' -f1 | paste -sd+ | bc 2>/dev/null)
  [ -n "$t$f" ] || f=1
  passed=$((passed + ${t:-0})); failed=$((failed + ${f:-0}))
}

suite plain build
suite sanitizers build-asan -DMAILPROTO_SANITIZE=ON
echo "tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
