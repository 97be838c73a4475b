#!/usr/bin/env bash
# Runs every libFuzzer target of a CNF_FUZZ build for a bounded time and prints the number
# of executions per target. Usage: scripts/fuzz.sh BUILD_DIR SECONDS [MAX_RUNS]
# Seeds come from fuzz/corpus/<name>/ (never modified: new inputs go to BUILD_DIR/fuzz/work);
# a crashing input is saved as BUILD_DIR/fuzz/artifacts/<name>-crash-<sha1>; copy it to
# tests/fuzz/<name>/ once the bug is fixed, so cnf_tests replays it forever.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: scripts/fuzz.sh BUILD_DIR SECONDS [MAX_RUNS]}
seconds=${2:?usage: scripts/fuzz.sh BUILD_DIR SECONDS [MAX_RUNS]}
runs=${3:--1}
# A fixed seed makes CI's short run repeatable; FUZZ_SEED=0 lets libFuzzer pick one.
seed=${FUZZ_SEED:-1}
# LibTorch is not instrumented; see scripts/lsan.supp for why its leaks are suppressed.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

mkdir -p "$build/fuzz/artifacts"
status=0
printf '%-12s %12s %10s %8s\n' target executions exec/s result
for bin in "$build"/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin"); name=${name#fuzz_}
  work="$build/fuzz/work/$name"
  mkdir -p "$work"
  log="$build/fuzz/$name.log"
  # -rss_limit_mb / -malloc_limit_mb: a parser that believes a header and allocates
  # gigabytes is a bug too. -timeout: one input may not take more than 10 s.
  seeds=("fuzz/corpus/$name")
  [ -d "tests/fuzz/$name" ] && seeds+=("tests/fuzz/$name")
  "$bin" "$work" "${seeds[@]}" \
    -seed="$seed" -max_total_time="$seconds" -runs="$runs" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$build/fuzz/artifacts/$name-" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  result=ok
  if [ $rc -ne 0 ]; then result="FAILED (rc $rc, see $log)"; status=1; fi
  printf '%-12s %12s %10s %8s\n' "$name" "${execs:-?}" "${rate:-?}" "$result"
done
exit $status
