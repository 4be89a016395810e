#!/usr/bin/env bash
# bench/load.sh - load test of `demix serve`: numbers and PASS/FAIL against
# the service targets (docs/RELIABILITY.md). Not a ctest test; builds nothing.
#
#   bench/load.sh                       # uses build/demix
#   DEMIX=build-l/demix bench/load.sh   # another binary
#   LOAD_SECONDS=5 LOAD_CLIENTS=50 bench/load.sh
#
# 1. /health on an idle server: wrk, 2 threads, 16 keep-alive connections.
#    Target >= 10,000 req/s and p99 < 10 ms.
# 2. 100 concurrent clients (one curl process, --parallel) each submit
#    LOAD_JOBS small jobs (mix_3s.wav, tiny4s); every answer is timed; then
#    every accepted job (202) is followed until it ends. Targets: no
#    errors, every 202 ends "done".
# 3. The full-size htdemucs_6s_random model separating on both cores (two
#    workers, the queue full behind them): /metrics under wrk (1 thread,
#    4 connections, like a few scrapers). Target p99 < 50 ms.
# 4. Queue full (same moment): 50 concurrent submissions are all answered
#    503 with Retry-After, none slower than 2 s, no timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMIX=${DEMIX:-build/demix}
GOLDEN=${DEMIX_GOLDEN_DIR:-$(cd .. && pwd)/shared/golden}
SECS=${LOAD_SECONDS:-10}
CLIENTS=${LOAD_CLIENTS:-100}
JOBS=${LOAD_JOBS:-1}
BURST=${LOAD_BURST:-50}
[ -x "$DEMIX" ] || { echo "load.sh: $DEMIX not found (build first, or set DEMIX)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "load.sh: wrk not installed" >&2; exit 2; }
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# start NAME ARGS...: `demix serve` on a free port; sets B and PID.
start() {
    local name=$1; shift
    mkdir -p "$TMP/$name"
    "$DEMIX" serve --host 127.0.0.1 --port 0 --repo "$GOLDEN/models" \
        --data-dir "$TMP/$name/data" --rate-limit 0 --max-connections-per-ip 0 "$@" 2>"$TMP/$name/log" &
    PID=$!
    PIDS+=("$PID")
    local port=
    for _ in $(seq 300); do
        port=$(grep -m1 '"event_type":"startup"' "$TMP/$name/log" | grep -o '"port":[0-9]*' | cut -d: -f2 || true)
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "server did not start:" >&2; cat "$TMP/$name/log" >&2; exit 1; }
    B="http://127.0.0.1:$port"
}

# wrk's latency percentile (50%, 99%) in ms, requests/s, errors.
wrk_pct() { awk -v p="$2" '$1 == p {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    m = (u == "us") ? 0.001 : (u == "s") ? 1000 : (u == "m") ? 60000 : 1; printf "%.2f", v * m}' "$1"; }
wrk_rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$1"; }
wrk_err() { awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10}
    END {print n + 0}' "$1"; }
# pct FILE P: the P-th percentile (nearest rank) of a column of seconds, in ms.
pct() { sort -g "$1" | awk -v p="$2" '{a[NR] = $1} END {if (!NR) {print "-"; exit}
    k = int((p * NR + 99) / 100); if (k < 1) k = 1; printf "%.1f", a[k] * 1000}'; }
health() { curl -sS --max-time 5 "$B/health"; }
jfield() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', ''))"; }

# Per-transfer options: curl's `next` resets them for every URL of a config.
CFG='write-out = "%{http_code} %{time_total}\\n"
max-time = 120'
ROWS=()
ok=1
row() { # test, measured, target, pass(0/1)
    local v=FAIL
    [ "$4" = 1 ] && v=PASS || ok=0
    ROWS+=("$(printf '| %-34s | %-62s | %-28s | %-4s |' "$1" "$2" "$3" "$v")")
}

# ---- 1. /health, idle -----------------------------------------------------------
start jobs --workers 2 --queue $((CLIENTS * JOBS + 16))
wrk -t2 -c16 -d"${SECS}s" --latency "$B/health" >"$TMP/health.wrk"
rps=$(wrk_rps "$TMP/health.wrk"); p50=$(wrk_pct "$TMP/health.wrk" 50%); p99=$(wrk_pct "$TMP/health.wrk" 99%)
err=$(wrk_err "$TMP/health.wrk")
pass=$(awk -v r="$rps" -v p="$p99" -v e="$err" 'BEGIN {print (r >= 10000 && p < 10 && e == 0) ? 1 : 0}')
row "/health, idle (wrk -t2 -c16)" "$rps req/s, p50 $p50 ms, p99 $p99 ms, errors $err" ">= 10000 req/s, p99 < 10 ms" "$pass"

# ---- 2. many clients submitting small jobs -------------------------------------
n=$((CLIENTS * JOBS))
mkdir -p "$TMP/sub"
for i in $(seq "$n"); do
    [ "$i" = 1 ] || echo next
    printf 'url = "%s/separate"\nform = "file=@%s"\nform = "model_name=tiny4s"\noutput = "%s/sub/%d.json"\n%s\n' \
        "$B" "$GOLDEN/inputs/mix_3s.wav" "$TMP" "$i" "$CFG"
done >"$TMP/sub.cfg"
t0=$(date +%s.%N)
curl -sS --parallel --parallel-immediate --parallel-max "$CLIENTS" -K "$TMP/sub.cfg" \
    >"$TMP/sub.out" 2>"$TMP/sub.err" || true
t1=$(date +%s.%N)
awk '{print $2}' "$TMP/sub.out" >"$TMP/sub.t"
accepted=$(awk '$1 == 202' "$TMP/sub.out" | wc -l)
errors=$((n - accepted))
rps=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", n / (b - a)}')
ids=$(cat "$TMP"/sub/*.json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin.read().replace("}{", "}\n{").splitlines():
    try: d = json.loads(line)
    except ValueError: continue
    if d.get("id") and d.get("status") in ("queued", "running", "done"): print(d["id"])' | sort -u) || true
# Follow every accepted job through the job list (one request per poll).
completed=0 failed=0
for _ in $(seq 600); do
    curl -sS --max-time 10 "$B/jobs?limit=1000" >"$TMP/list.json" || true
    read -r completed failed pending < <(python3 -c '
import json, sys
ids = set(sys.argv[2].split())
jobs = {j["id"]: j["status"] for j in json.load(open(sys.argv[1])).get("jobs", [])}
st = [jobs.get(i, "lost") for i in ids]
print(st.count("done"), sum(s in ("failed", "cancelled", "lost") for s in st),
      sum(s in ("queued", "running") for s in st))' "$TMP/list.json" "$ids")
    [ "$pending" = 0 ] && break
    sleep 0.5
done
t2=$(date +%s.%N)
drain=$(awk -v a="$t1" -v b="$t2" 'BEGIN {printf "%.0f", b - a}')
row "$CLIENTS clients x $JOBS jobs (tiny4s, 3 s)" \
    "$rps req/s, p50 $(pct "$TMP/sub.t" 50) ms, p99 $(pct "$TMP/sub.t" 99) ms, errors $errors" \
    "errors 0" "$([ "$errors" = 0 ] && echo 1 || echo 0)"
row "  accepted jobs -> done" "$accepted accepted, $completed done, $failed failed/lost (drained in ${drain} s)" \
    "every 202 ends done" "$([ "$accepted" -gt 0 ] && [ "$completed" = "$accepted" ] && echo 1 || echo 0)"
kill -9 "$PID" 2>/dev/null || true
wait "$PID" 2>/dev/null || true

# ---- 3. /metrics while both cores separate --------------------------------------
QUEUE=4
start full --workers 2 --queue "$QUEUE"
for i in $(seq $((QUEUE + 2))); do
    curl -sS --max-time 60 -o /dev/null -F file=@"$GOLDEN/inputs/mix_12s.wav" \
        -F model_name=htdemucs_6s_random -F shifts=2 "$B/separate"
done
for _ in $(seq 300); do [ "$(health | jfield active_jobs)" = 2 ] && break; sleep 0.2; done
wrk -t1 -c4 -d"${SECS}s" --latency "$B/metrics" >"$TMP/metrics.wrk"
busy=$(health)
active=$(echo "$busy" | jfield active_jobs)
depth=$(echo "$busy" | jfield queue_depth)
rps=$(wrk_rps "$TMP/metrics.wrk"); p50=$(wrk_pct "$TMP/metrics.wrk" 50%); p99=$(wrk_pct "$TMP/metrics.wrk" 99%)
err=$(wrk_err "$TMP/metrics.wrk")
pass=$(awk -v p="$p99" -v e="$err" -v a="$active" 'BEGIN {print (p < 50 && e == 0 && a == 2) ? 1 : 0}')
row "/metrics, 2 jobs separating (-c4)" "$rps req/s, p50 $p50 ms, p99 $p99 ms, errors $err; active jobs $active" \
    "p99 < 50 ms" "$pass"

# ---- 4. queue full ---------------------------------------------------------------
for i in $(seq "$BURST"); do
    [ "$i" = 1 ] || echo next
    printf 'url = "%s/separate"\nform = "file=@%s"\nform = "model_name=tiny4s"\noutput = "/dev/null"\ndump-header = "%s/burst.%d.hdr"\n%s\n' \
        "$B" "$GOLDEN/inputs/mix_3s.wav" "$TMP" "$i" "${CFG/120/10}"
done >"$TMP/burst.cfg"
curl -sS --parallel --parallel-immediate --parallel-max "$BURST" -K "$TMP/burst.cfg" \
    >"$TMP/burst.out" 2>"$TMP/burst.err" || true
awk '{print $2}' "$TMP/burst.out" >"$TMP/burst.t"
n503=$(awk '$1 == 503' "$TMP/burst.out" | wc -l)
nra=$(cat "$TMP"/burst.*.hdr 2>/dev/null | grep -ci '^retry-after:' || true)
tout=$((BURST - $(awk '$1 != "000"' "$TMP/burst.out" | wc -l)))
tmax=$(pct "$TMP/burst.t" 100)
pass=$(awk -v a="$n503" -v b="$nra" -v n="$BURST" -v t="$tout" -v m="$tmax" \
    'BEGIN {print (a == n && b == n && t == 0 && m < 2000) ? 1 : 0}')
row "queue full ($depth queued): $BURST submissions" \
    "503: $n503, Retry-After: $nra, p50 $(pct "$TMP/burst.t" 50) ms, max $tmax ms, timeouts $tout" \
    "all 503 + Retry-After, < 2 s" "$pass"

echo
printf '| %-34s | %-62s | %-28s | %-4s |\n' "test" "measured" "target" "ok"
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..36})" "$(printf -- '-%.0s' {1..64})" \
    "$(printf -- '-%.0s' {1..30})" "------"
printf '%s\n' "${ROWS[@]}"
echo
echo "$(nproc) cores; $("$DEMIX" --version 2>/dev/null | head -n1)"
[ "$ok" = 1 ]
