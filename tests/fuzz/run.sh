#!/usr/bin/env bash
# run.sh BUILD_DIR SECONDS [TARGET...] — run the libFuzzer targets of tests/fuzz, each for SECONDS.
#
# For each target (default: all four): first the committed reproducers in crashes/<target>/ run
# once each (a crash found and fixed stays fixed), then libFuzzer fuzzes for SECONDS starting from
# the committed seeds in corpus/<target>/ plus what earlier runs of this build kept in
# BUILD_DIR/fuzz/corpus/<target>/ (new inputs go there, never into the source tree). A crash, a
# leak, a broken invariant or an input that runs longer than 10 s (a hang) fails the run; its
# input is saved in BUILD_DIR/fuzz/artifacts/<target>/ and named in the output. Prints, per
# target, the executions, the rate and the corpus size; ends with one summary line per target.
# Used by `make fuzz` (FUZZ_SECONDS, default 60) and by ctest in the fuzz build (a few seconds).
set -uo pipefail
if (($# < 2)); then
  echo "usage: $0 BUILD_DIR SECONDS [envelope|ring|reply|api ...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
shift 2
targets=("$@")
((${#targets[@]})) || targets=(envelope ring reply api)
here=$(cd "$(dirname "$0")" && pwd)
status=0
summary=()
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/fuzz_$t"
  if [[ ! -x $bin ]]; then
    echo "fuzz: $bin is not built (cmake -DRK_FUZZ=ON, see docs/testing.md)" >&2
    exit 2
  fi
  work="$build/fuzz/corpus/$t"
  art="$build/fuzz/artifacts/$t"
  log="$build/fuzz/$t.log"
  mkdir -p "$work" "$art"
  # Reproducers of crashes found before: each must now pass.
  if compgen -G "$here/crashes/$t/*" >/dev/null; then
    for c in "$here"/crashes/"$t"/*; do
      [[ -f $c ]] || continue
      if ! "$bin" -timeout=10 "$c" >"$log" 2>&1; then
        echo "fuzz_$t: reproducer $c fails again:" >&2
        tail -n 40 "$log" >&2
        status=1
        summary+=("fuzz_$t: REPRODUCER FAILED ($c)")
        continue 2
      fi
    done
  fi
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$art/" "$work" "$here/corpus/$t" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  units=$(find "$work" -type f | wc -l)
  if ((rc != 0)); then
    status=1
    echo "fuzz_$t: FAILED (exit $rc); the end of its log ($log):" >&2
    tail -n 60 "$log" >&2
    summary+=("fuzz_$t: FAILED after ${execs:-?} executions; input in $art/")
  else
    summary+=("fuzz_$t: ${execs:-?} executions in ${seconds} s (${rate:-?}/s), corpus $units inputs, no crash")
  fi
done
printf '%s\n' "${summary[@]}"
exit $status
