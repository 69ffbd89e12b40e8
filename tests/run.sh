#!/usr/bin/env bash
# The whole test suite: builds mailproto twice, normally and with AddressSanitizer + UndefinedBehaviorSanitizer,
# and runs the unit tests (CUnit, through ctest) and the integration tests (pytest, the real mailprotod over
# real sockets) against each build, then runs the fuzz targets briefly. Prints one closing line
# "tests: N passed, N failed".
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

# The libFuzzer targets (tests/fuzz/), built with clang, each run for FUZZ_SECONDS on its seed corpus: a
# crash, a leak or a sanitizer report fails the run.
fuzz() {
  command -v clang >/dev/null || { echo "== fuzz: clang not installed, skipped"; return; }
  echo "== fuzz: build (build-fuzz)"
  if ! { cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DMAILPROTO_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null &&
         cmake --build build-fuzz -j"$jobs" --target fuzz_smtp fuzz_lmtp fuzz_pop3 >build-fuzz.log 2>&1; }; then
    cat build-fuzz.log; echo "== fuzz: BUILD FAILED"; failed=$((failed + 1)); return
  fi
  local t corpus
  for t in fuzz_smtp fuzz_lmtp fuzz_pop3; do
    corpus=build-fuzz/corpus-$t; mkdir -p "$corpus"
    seeds=tests/fuzz/corpus/${t#fuzz_}; [ -d "$seeds" ] || seeds=
    if build-fuzz/tests/fuzz/$t -max_total_time="${FUZZ_SECONDS:-20}" -timeout=10 "$corpus" $seeds >"build-fuzz/$t.log" 2>&1; then
      echo "== fuzz: $t ok ($(grep -o 'Done [0-9]* runs' "build-fuzz/$t.log"))"; passed=$((passed + 1))
    else
      tail -40 "build-fuzz/$t.log"; echo "== fuzz: $t FAILED"; failed=$((failed + 1))
    fi
  done
}

suite plain build
suite sanitizers build-asan -DMAILPROTO_SANITIZE=ON
fuzz
echo "tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
