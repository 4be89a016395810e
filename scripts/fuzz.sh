#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer targets (tests/fuzz/, clang) and run them.
#
#   scripts/fuzz.sh [-t SECONDS] [TARGET...]
#
# TARGET: ckpt bagyaml audio alerts http (default: all). Each runs for
# SECONDS (-t, else $FUZZ_SECONDS, else 60) with -max_total_time, one after
# the other, on a work copy of its corpus:
#   $BUILD/fuzz-work/<t>/corpus     seeds from tests/fuzz/corpus/<t> plus what
#                                   earlier runs found (kept between runs)
#   $BUILD/fuzz-work/<t>/artifacts  crash-/leak-/timeout-/oom- inputs of this run
#   $BUILD/fuzz-work/<t>/log        libFuzzer's output
# and a table of the results is printed: executions, exec/s, coverage
# (libFuzzer's cov = edges, ft = features), corpus files and KiB, crashes. Exits 1
# if any target crashed, leaked, hung or ran out of memory: copy the input
# to tests/fuzz/regress/<t>/ once fixed, so ctest replays it.
#
# Environment: BUILD (default build-fuzz), CC (default clang), FUZZ_SECONDS,
# FUZZ_ARGS (extra libFuzzer flags), DEMIX_GOLDEN_DIR (if it holds
# models/tiny4s.th, fuzz_http serves it as a real model).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-60}
ALL=(ckpt bagyaml audio alerts http)

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
targets=()
while (($#)); do
    case $1 in
    -t) SECONDS_EACH=${2:?-t needs a value}; shift 2 ;;
    -t*) SECONDS_EACH=${1#-t}; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; usage 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
((${#targets[@]})) || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
    [[ " ${ALL[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target '$t' (${ALL[*]})" >&2; exit 2; }
done
[[ $SECONDS_EACH =~ ^[0-9]+$ ]] || { echo "fuzz.sh: seconds must be a whole number" >&2; exit 2; }

BUILD=${BUILD:-build-fuzz}
export CC=${CC:-clang}
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$BUILD" -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null

golden=${DEMIX_GOLDEN_DIR:-$ROOT/../shared/golden}
if [[ -f $golden/models/tiny4s.th ]]; then
    export DEMIX_FUZZ_MODEL=$golden/models/tiny4s.th
fi

rows=()
failed=0
for t in "${targets[@]}"; do
    work=$BUILD/fuzz-work/$t
    mkdir -p "$work/corpus"
    rm -rf "$work/artifacts"
    mkdir -p "$work/artifacts"
    cp -n "tests/fuzz/corpus/$t/"* "$work/corpus/" 2>/dev/null || true
    dict=()
    [[ -f tests/fuzz/$t.dict ]] && dict=(-dict="tests/fuzz/$t.dict")
    echo "== fuzz_$t: ${SECONDS_EACH}s" >&2
    set +e
    # shellcheck disable=SC2086
    "$BUILD/tests/fuzz_$t" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$work/artifacts/" "${dict[@]}" \
        ${FUZZ_ARGS:-} "$work/corpus" >"$work/log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$work/log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    files=$(find "$work/corpus" -type f | wc -l)
    kb=$(find "$work/corpus" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", (s + 1023) / 1024}')
    crashes=$(find "$work/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' \
        -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    if ((crashes == 0 && rc != 0)); then crashes=1; fi # died without an artifact
    ((crashes)) && failed=1
    rows+=("$(printf '%-8s %10s %7s %6s %7s %8s %7s %7s' "$t" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "$files" "${kb}K" "$crashes")")
    if ((crashes)); then
        echo "fuzz_$t: FAILED (exit $rc); see $work/log and $work/artifacts/" >&2
        grep -E 'ERROR: |SUMMARY: |runtime error' "$work/log" | head -5 >&2 || true
    fi
done

printf '%-8s %10s %7s %6s %7s %8s %7s %7s\n' target execs exec/s cov ft corpus size crashes
printf '%s\n' "${rows[@]}"
exit $failed
