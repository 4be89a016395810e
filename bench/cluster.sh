#!/usr/bin/env bash
# bench/cluster.sh - throughput and claim latency of a demix cluster (issue
# 13) on this machine: a throwaway PostgreSQL (tests/server/pglib.sh), one
# API node (`demix serve --no-workers`) and 1, 2, then 3 `demix worker`s
# (--threads 1 each) on one data dir. Not a test: it prints numbers and
# fails only when a job does not end `done`. Builds nothing.
#
#   bench/cluster.sh                         # build/demix, 30 jobs per round
#   BENCH_JOBS=10 BENCH_LATENCY_JOBS=10 bench/cluster.sh
#   DEMIX=build-rel/demix bench/cluster.sh
#
# 1. Throughput: for N = 1, 2, 3 workers, BENCH_JOBS jobs (mix_3s.wav, 3 s
#    of audio, tiny4s) submitted at once; jobs/minute = jobs / (last
#    finished - first created) from the rows. Also the queue wait
#    (started - created) p50/p99, which here is mostly time in the queue.
# 2. Claim latency: with 3 idle workers, BENCH_LATENCY_JOBS jobs submitted
#    one at a time, each after the previous one is done, so the time from
#    the row's created to its started is how fast an idle worker is woken
#    (LISTEN/NOTIFY) and claims it: p50/p99.
# The numbers depend on the machine (and on whatever else runs on it).
set -uo pipefail
cd "$(dirname "$0")/.."
export DEMIX=${DEMIX:-$PWD/build/demix}
export GOLDEN=${DEMIX_GOLDEN_DIR:-$(cd .. && pwd)/shared/golden}
export WORK=${BENCH_WORK:-$(mktemp -d /tmp/demix-bench-cluster.XXXXXX)}
JOBS=${BENCH_JOBS:-30}
LAT_JOBS=${BENCH_LATENCY_JOBS:-20}
[ -x "$DEMIX" ] || { echo "cluster.sh: $DEMIX not found (build first, or set DEMIX)" >&2; exit 2; }
. tests/server/lib.sh
. tests/server/pglib.sh
trap 'all_cleanup; rm -rf "$WORK"' EXIT
IN=$GOLDEN/inputs/mix_3s.wav

# round NAME N_WORKERS: a fresh database NAME, an API node, N workers; sets
# API (its URL), NODES (their pids).
round() {
    "$PGBIN/createdb" -h "$PGT" -U demix "$1" || exit 1
    local uri="postgresql://demix@/$1?host=$PGT" w
    OPTS=(--store "$uri" --data-dir "$WORK/data_$1")
    NODES=()
    start_as serve "$WORK/$1_api.log" --no-workers "${OPTS[@]}"
    API=$B; NODES+=("$PID")
    for w in $(seq "$2"); do
        start_as worker "$WORK/$1_w$w.log" --threads 1 --workers 1 "${OPTS[@]}"
        NODES+=("$PID")
        for _ in $(seq 300); do
            [ "$(curl -sS -o /dev/null -w '%{http_code}' "$B/readyz")" = 200 ] && break
            sleep 0.2
        done
    done
    DB=$1
}
stop_round() {
    local p
    for p in "${NODES[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${NODES[@]}"; do wait "$p" 2>/dev/null; done
}
q() { "$PGBIN/psql" -h "$PGT" -U demix -d "$DB" -Atq -c "$1"; }
submit() {
    local code
    for _ in $(seq 100); do
        code=$(curl -sS -o /dev/null -w '%{http_code}' -F "file=@$IN" -F model_name=tiny4s "$API/separate")
        [ "$code" = 202 ] && return 0
        sleep 0.2
    done
    echo "submission refused: HTTP $code" >&2
    exit 1
}
# wait_done N: until N rows are done (fails after 20 minutes or on a failed row).
wait_done() {
    for _ in $(seq 6000); do
        [ "$(q "SELECT count(*) FROM jobs WHERE state = 'done'")" -ge "$1" ] && return 0
        [ "$(q "SELECT count(*) FROM jobs WHERE state IN ('failed', 'cancelled')")" = 0 ] \
            || { echo "a job failed: $(q "SELECT id, error FROM jobs WHERE state <> 'done'")" >&2; exit 1; }
        sleep 0.2
    done
    echo "jobs not done after 20 minutes" >&2
    exit 1
}
# pct: p50 and p99 (nearest rank) of the numbers on stdin, in ms.
pct() {
    python3 -c '
import math, sys
v = sorted(float(x) for x in sys.stdin.read().split())
r = lambda p: v[max(0, math.ceil(p / 100 * len(v)) - 1)] * 1000
print("p50 %.0f ms, p99 %.0f ms (n=%d)" % (r(50), r(99), len(v)))'
}

echo "demix cluster bench: $JOBS jobs of 3 s audio (tiny4s) per round, $(nproc) CPUs"
for n in 1 2 3; do
    round "bench$n" "$n"
    for _ in $(seq "$JOBS"); do submit; done
    wait_done "$JOBS"
    span=$(q "SELECT max(finished) - min(created) FROM jobs")
    rate=$(python3 -c "print('%.1f' % ($JOBS / $span * 60))")
    wait=$(q "SELECT started - created FROM jobs" | pct)
    printf '%d worker(s): %5s jobs/minute (%d jobs in %.1f s); queue wait %s\n' "$n" "$rate" "$JOBS" "$span" "$wait"
    stop_round
done

round latency 3
for _ in $(seq "$LAT_JOBS"); do
    submit
    wait_done "$(q "SELECT count(*) FROM jobs")"
done
echo "claim latency (submit -> running, idle workers): $(q "SELECT started - created FROM jobs" | pct)"
stop_round
