# cluster.sh - a demix cluster on one machine (issue 13): one throwaway
# PostgreSQL (pglib.sh), two API nodes (`demix serve --no-workers`), three
# `demix worker`s, one shared --data-dir. 30 jobs (short clips on the tiny
# model, plus one longer job that is the kill target) are submitted
# round-robin to both API nodes, as a load balancer would: a submission
# refused (503) or cut off is retried on the other node. During the run:
# the worker running the long job is killed -9 mid-job, API node 2 is
# restarted (SIGTERM, start again), PostgreSQL is restarted (pg_ctl restart
# -m fast). Then:
#   - every accepted job (202) ends `done`, read from BOTH API nodes (w3
#     renews its leases late on purpose: DEMIX_TEST_RENEW_DELAY);
#   - each exactly once: one row per accepted job, every row `done`, the
#     attempts column within --max-attempts (the killed job's attempts >= 2),
#     and across all worker logs exactly one `separation` event with status
#     done per job (no job ran to completion twice);
#   - its stems are byte-identical to `demix separate` on the same input
#     with the same options (WAV float: deterministic bytes);
#   - no orphaned files in the data dir: no temporary or partial files
#     (*.part, *.tmp, *.upload), nothing left in uploads/, no jobs/ID folder
#     without a row, nothing in a job's folder but its input and stems;
#   - every node survived the PostgreSQL restart and is ready again (and no
#     node logged a sanitizer report); the
#     cluster metrics agree (2 live workers, queue empty, >= 1 lease
#     expiration, demix_node_info's roles).
# A summary is printed at the end. Exit 77 (skipped) without PostgreSQL.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pglib.sh"
T_START=$(date +%s)
N_JOBS=${CLUSTER_JOBS:-30}
LEASE=${CLUSTER_LEASE:-4}
MAX_ATTEMPTS=3
D="$WORK/data"
mkdir -p "$D" "$WORK/in"
M=(--repo "$GOLDEN/models")
NODE_OPTS=(--store "$URI" --data-dir "$D" --lease-seconds "$LEASE" --heartbeat-seconds 1
           --max-attempts "$MAX_ATTEMPTS")

# ---- inputs and the CLI's stems ---------------------------------------------------------
# Six distinct 1.5 s clips of mix_12s (a mix-up between jobs shows as a
# wrong stem), and the long job: all of mix_12s with shifts=2.
CLIPS=(); CLIP_FILES=()
for k in 0 1 2 3 4 5; do
    ffmpeg -v error -y -ss "$((k * 2)).$((k % 2 * 5))" -t 1.5 -i "$GOLDEN/inputs/mix_12s.wav" \
        -c:a pcm_f32le "$WORK/in/clip$k.wav" || { echo "ffmpeg failed" >&2; exit 1; }
    CLIPS+=("clip$k"); CLIP_FILES+=("$WORK/in/clip$k.wav")
done
cp "$GOLDEN/inputs/mix_12s.wav" "$WORK/in/long.wav"
# The CLI's stems, made in the background while the cluster runs (one
# process, the clips then the long one); compared at the end.
(
    set -e
    "$DEMIX" separate "${M[@]}" -n tiny4s -o "$WORK/cli" "${CLIP_FILES[@]}"
    "$DEMIX" separate "${M[@]}" -n tiny4s --shifts 2 -o "$WORK/cli" "$WORK/in/long.wav"
) >"$WORK/cli.log" 2>&1 &
CLI_PID=$!

# ---- the nodes ---------------------------------------------------------------------------
declare -A NODE_PID NODE_URL
# node NAME SUBCOMMAND ARGS...: starts a node logging to $WORK/NAME.log.
node() {
    local name=$1 sub=$2; shift 2
    start_as "$sub" "$WORK/$name.log" "$@"
    NODE_PID[$name]=$PID
    NODE_URL[$name]=$B
}
# every submission comes from 127.0.0.1: no per-client rate limit here
API_OPTS=(--no-workers --rate-limit 100000 --rate-burst 1000)
node api1 serve "${API_OPTS[@]}" "${NODE_OPTS[@]}"
node api2 serve "${API_OPTS[@]}" "${NODE_OPTS[@]}"
node w1 worker --threads 1 --workers 1 "${NODE_OPTS[@]}"
node w2 worker --threads 1 --workers 1 "${NODE_OPTS[@]}"
# w3's heartbeat waits 0.7 s between listing its running jobs and renewing
# their leases, so a job ends and the next one starts inside that window:
# a renewal that finds the first job's row finished must not stop the next
# one (it once did when the next job's memory sat at the same address).
DEMIX_TEST_RENEW_DELAY=0.7 node w3 worker --threads 1 --workers 1 "${NODE_OPTS[@]}"
WORKERS=(w1 w2 w3)

# ready NAME SECONDS: polls the node's /readyz until 200.
ready() {
    local i code=
    for i in $(seq $(($2 * 5))); do
        code=$(curl -sS --max-time 10 -o "$WORK/ready_$1.body" -w '%{http_code}' "${NODE_URL[$1]}/readyz" 2>/dev/null)
        [ "$code" = 200 ] && return 0
        sleep 0.2
    done
    fail "$1 not ready after $2 s: HTTP $code $(head -c 300 "$WORK/ready_$1.body" 2>/dev/null)"
    return 1
}
for n in api1 api2 w1 w2 w3; do ready "$n" 120; done
for n in w1 w2 w3; do
    code=$(curl -sS -o /dev/null -w '%{http_code}' "${NODE_URL[$n]}/jobs")
    [ "$code" = 404 ] && pass "$n serves no API (GET /jobs: 404)" || fail "$n answered GET /jobs with $code"
done

# ---- submission --------------------------------------------------------------------------
IDS=()      # accepted job ids, in submission order
declare -A INPUT SHIFTS VIA
RETRIES=0
APIS=(api1 api2)
# submit INPUT SHIFTS: POST /separate to the next API node in turn; a 503
# or a failed connection moves on to the other node (up to 300 tries).
# Anything else but 202 is a failure.
RR=0
submit() {
    local in=$1 shifts=$2 try code n
    for try in $(seq 300); do
        n=${APIS[$((RR % 2))]}
        RR=$((RR + 1))
        code=$(curl -sS --max-time 60 -o "$WORK/submit.body" -w '%{http_code}' \
            -F "file=@$WORK/in/$in.wav" -F model_name=tiny4s -F shifts="$shifts" \
            "${NODE_URL[$n]}/separate" 2>/dev/null)
        case $code in
            202)
                local id
                id=$(sed -n 's/^{"id":"\([0-9a-f]*\)".*/\1/p' "$WORK/submit.body")
                [ -n "$id" ] || { fail "202 without an id: $(head -c 200 "$WORK/submit.body")"; return 1; }
                IDS+=("$id"); INPUT[$id]=$in; SHIFTS[$id]=$shifts; VIA[$id]=$n
                return 0 ;;
            503|000) RETRIES=$((RETRIES + 1)); sleep 0.2 ;;
            *) fail "POST /separate to $n: HTTP $code $(head -c 300 "$WORK/submit.body")"; return 1 ;;
        esac
    done
    fail "POST /separate: no node accepted $in in 300 tries"
    return 1
}

# worker_of ID: the worker whose log says it started job ID (last one).
worker_of() {
    local w found=
    for w in "${WORKERS[@]}"; do
        grep '"event_type":"separation_start"' "$WORK/$w.log" | grep -q "\"job\":\"$1\"" && found=$w
    done
    echo "$found"
}
# finished_lines ID [LOG...]: how many `separation ... done` events name job ID.
finished_lines() {
    local id=$1; shift
    cat "$@" 2>/dev/null | grep '"event_type":"separation"' | grep "\"job\":\"$id\"" \
        | grep -c '"status":"done"'
}

# 1. the long job first, then a third of the short ones; kill -9 the worker
#    that runs the long job while it runs.
submit long 2
LONG=${IDS[0]}
KILLED=
for _ in $(seq 1200); do
    KILLED=$(worker_of "$LONG")
    [ -n "$KILLED" ] && break
    sleep 0.1
done
if [ -n "$KILLED" ]; then
    kill -9 "${NODE_PID[$KILLED]}"; wait "${NODE_PID[$KILLED]}" 2>/dev/null
    if [ "$(finished_lines "$LONG" "$WORK/$KILLED.log")" = 0 ]; then
        pass "worker $KILLED killed -9 while running job $LONG"
    else
        fail "job $LONG finished on $KILLED before the kill (not mid-job)"
    fi
    WORKERS_LIVE=()
    for w in "${WORKERS[@]}"; do [ "$w" = "$KILLED" ] || WORKERS_LIVE+=("$w"); done
else
    fail "no worker started the long job $LONG in 120 s"
    WORKERS_LIVE=("${WORKERS[@]}")
fi
N_SHORT=$((N_JOBS - 1))
i=0
for _ in $(seq $((N_SHORT / 3))); do submit "${CLIPS[$((i % 6))]}" 1; i=$((i + 1)); done

# 2. API node 2 restarted while submissions go on (they fall over to api1).
kill -TERM "${NODE_PID[api2]}"
for _ in $(seq $((N_SHORT / 3 / 2))); do submit "${CLIPS[$((i % 6))]}" 1; i=$((i + 1)); done
for _ in $(seq 300); do kill -0 "${NODE_PID[api2]}" 2>/dev/null || break; sleep 0.1; done
kill -0 "${NODE_PID[api2]}" 2>/dev/null && fail "api2 still running 30 s after SIGTERM"
wait "${NODE_PID[api2]}" 2>/dev/null
node api2 serve "${API_OPTS[@]}" "${NODE_OPTS[@]}"
ready api2 120 && pass "api2 restarted and ready"
while [ $i -lt $((N_SHORT * 2 / 3)) ]; do submit "${CLIPS[$((i % 6))]}" 1; i=$((i + 1)); done

# 3. PostgreSQL restarted while jobs run and submissions go on.
QUEUED_BEFORE=$(sql "SELECT count(*) FROM jobs WHERE state IN ('queued','running')")
pgrestart || { fail "pg_ctl restart failed"; tail -n 20 "$PGT/pg.log" >&2; }
pass "PostgreSQL restarted with $QUEUED_BEFORE job(s) queued or running"
while [ $i -lt "$N_SHORT" ]; do submit "${CLIPS[$((i % 6))]}" 1; i=$((i + 1)); done
T_SUBMITTED=$(date +%s)

# ---- every accepted job ends done ----------------------------------------------------------
[ "${#IDS[@]}" = "$N_JOBS" ] && pass "$N_JOBS jobs accepted ($RETRIES submission(s) retried)" \
    || fail "${#IDS[@]} of $N_JOBS jobs accepted"
# Until no row is queued or running (the database is the queue), at most
# 10 minutes.
for _ in $(seq 3000); do
    [ "$(sql "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')" 2>/dev/null)" = 0 ] && break
    sleep 0.2
done
T_DONE=$(date +%s)
# status ID NODE: the job's status as NODE answers it.
status() {
    curl -sS --max-time 10 "${NODE_URL[$2]}/jobs/$1" | grep -o '"status":"[a-z]*"' | head -n1 | cut -d'"' -f4
}
for n in api1 api2; do
    bad=0
    for id in "${IDS[@]}"; do
        st=$(status "$id" "$n")
        [ "$st" = done ] || { bad=$((bad + 1)); [ $bad -le 3 ] && fail "$n: job $id is '$st'"; }
    done
    [ $bad = 0 ] && pass "all $N_JOBS jobs read as done from $n"
done

# ---- exactly once ------------------------------------------------------------------------
[ "$(sql "SELECT count(*) FROM jobs")" = "${#IDS[@]}" ] && pass "one row per accepted job" \
    || fail "rows: $(sql "SELECT count(*) FROM jobs"), accepted: ${#IDS[@]}"
[ "$(sql "SELECT count(*) FROM jobs WHERE state <> 'done'")" = 0 ] && pass "every row done" \
    || fail "rows not done: $(sql "SELECT id, state, error FROM jobs WHERE state <> 'done'")"
if [ "$(sql "SELECT count(*) FROM information_schema.columns WHERE table_name = 'jobs' AND column_name = 'attempts'")" = 1 ]; then
    over=$(sql "SELECT count(*) FROM jobs WHERE attempts < 1 OR attempts > $MAX_ATTEMPTS")
    [ "$over" = 0 ] && pass "attempts within 1..$MAX_ATTEMPTS" \
        || fail "attempts out of range: $(sql "SELECT id, attempts FROM jobs WHERE attempts < 1 OR attempts > $MAX_ATTEMPTS")"
    la=$(sql "SELECT attempts FROM jobs WHERE id = '$LONG'")
    [ "${la:-0}" -ge 2 ] && pass "the killed job ran again (attempts $la)" || fail "killed job's attempts: '$la'"
    ATTEMPTS_SUMMARY=$(sql "SELECT attempts || ' attempt(s): ' || count(*) FROM jobs GROUP BY attempts ORDER BY attempts" | paste -sd, -)
else
    fail "the jobs table has no attempts column"
    ATTEMPTS_SUMMARY="(no attempts column)"
fi
LOGS=()
for w in "${WORKERS[@]}"; do LOGS+=("$WORK/$w.log"); done
twice=0; never=0
for id in "${IDS[@]}"; do
    c=$(finished_lines "$id" "${LOGS[@]}")
    [ "$c" = 0 ] && never=$((never + 1))
    if [ "$c" -gt 1 ]; then twice=$((twice + 1)); fail "job $id ran to completion $c times"; fi
done
[ $twice = 0 ] && [ $never = 0 ] && pass "each job ran to completion exactly once (worker logs)" \
    || fail "$never job(s) never logged as finished, $twice more than once"

# ---- stems equal the CLI's -----------------------------------------------------------------
wait "$CLI_PID" || fail "demix separate failed: $(tail -n 5 "$WORK/cli.log")"
diff_stems=0; k=0
for id in "${IDS[@]}"; do
    n=${APIS[$((k % 2))]}; k=$((k + 1))
    for s in drums bass other vocals; do
        curl -sS --max-time 60 -o "$WORK/stem.wav" "${NODE_URL[$n]}/jobs/$id/stems/$s"
        if ! cmp -s "$WORK/stem.wav" "$WORK/cli/tiny4s/${INPUT[$id]}/$s.wav"; then
            diff_stems=$((diff_stems + 1))
            [ $diff_stems -le 3 ] && fail "job $id (${INPUT[$id]}) stem $s from $n differs from demix separate's"
        fi
    done
done
[ $diff_stems = 0 ] && pass "all $((${#IDS[@]} * 4)) stems byte-identical to demix separate's"

# ---- no orphaned files ---------------------------------------------------------------------
orph=$(find "$D" -type f \( -name '*.part' -o -name '*.tmp' -o -name '*.tmp.*' -o -name '.*' -o -name '*.upload' \) | head -n 20)
[ -z "$orph" ] && pass "no temporary or partial files in the data dir" || fail "temporary files left: $orph"
left=$(find "$D/uploads" -mindepth 1 2>/dev/null | head -n 5)
[ -z "$left" ] && pass "uploads/ empty" || fail "uploads/ holds: $left"
rows=$(sql "SELECT id FROM jobs" | sort)
dirs=$(find "$D/jobs" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort)
extra=$(comm -13 <(echo "$rows") <(echo "$dirs"))
[ -z "$extra" ] && pass "every folder under jobs/ has a row" || fail "folders without a row: $extra"
# A done job's folder holds its input and its four stems, nothing else (no
# run folder of an attempt left behind, no zip made on the side).
stray=$(find "$D/jobs" -mindepth 2 \( -type d -o \( ! -name input ! -name drums.wav ! -name bass.wav \
    ! -name other.wav ! -name vocals.wav \) \) | head -n 10)
[ -z "$stray" ] && pass "each job folder holds its input and stems only" || fail "left in job folders: $stray"
missing=$(comm -23 <(echo "$rows") <(echo "$dirs"))
[ -z "$missing" ] || fail "done jobs without a folder: $missing"

# ---- nodes and metrics ---------------------------------------------------------------------
for n in api1 api2 "${WORKERS_LIVE[@]}"; do
    kill -0 "${NODE_PID[$n]}" 2>/dev/null || fail "$n died"
done
for n in api1 api2 "${WORKERS_LIVE[@]}"; do ready "$n" 60; done
pass "every node alive and ready after the PostgreSQL restart"
# metric NAME NODE: the sum of NAME's samples on NODE's /metrics.
metric() {
    curl -sS --max-time 10 "${NODE_URL[$2]}/metrics" | awk -v m="$1" \
        '$1 == m || index($1, m "{") == 1 { s += $NF; n++ } END { if (n) print s + 0 }'
}
live=
for _ in $(seq 100); do
    live=$(metric demix_cluster_workers_live api1)
    [ "$live" = 2 ] && break
    sleep 0.3
done
[ "$live" = 2 ] && pass "demix_cluster_workers_live 2 (the killed worker's heartbeat expired)" \
    || fail "demix_cluster_workers_live on api1: '$live'"
for n in api1 api2 "${WORKERS_LIVE[@]}"; do
    q=$(metric demix_cluster_queue_depth "$n")
    [ "$q" = 0 ] || fail "demix_cluster_queue_depth on $n: '$q'"
done
exp=0
for n in api1 api2 "${WORKERS_LIVE[@]}"; do
    e=$(metric demix_lease_expirations_total "$n")
    exp=$(awk -v a="$exp" -v b="${e:-0}" 'BEGIN { print a + b }')
done
# expirations LOG...: expired leases the nodes logged (re-queued + failed).
expirations() {
    cat "$@" | grep '"event_type":"lease_expired"' | grep -o '"requeued":[0-9]*,"failed":[0-9]*' \
        | tr -c '0-9\n' ' ' | awk '{ s += $1 + $2 } END { print s + 0 }'
}
# since_start LOG: the log from the node's last startup on.
since_start() { awk '/"event_type":"cluster_start"/ { n = NR } { l[NR] = $0 } END { for (i = n; i <= NR; i++) print l[i] }' "$1"; }
logged=$(expirations "$WORK"/api1.log "$WORK"/api2.log "${LOGS[@]}")
[ "$logged" -ge 1 ] && pass "$logged expired lease(s) logged (the killed worker's job)" \
    || fail "no lease_expired event in any node's log"
cur=0
for n in api1 api2 "${WORKERS_LIVE[@]}"; do
    cur=$((cur + $(since_start "$WORK/$n.log" | expirations)))
done
[ "$exp" = "$cur" ] && pass "demix_lease_expirations_total over the live nodes ($exp) = their logged expirations" \
    || fail "demix_lease_expirations_total over the live nodes: $exp, logged since their start: $cur"
for n in api1 api2 "${WORKERS_LIVE[@]}"; do
    want=api; [ "${n#w}" != "$n" ] && want=worker
    curl -sS --max-time 10 -o "$WORK/metrics_$n.txt" "${NODE_URL[$n]}/metrics"
    grep -q "^demix_node_info{.*role=\"$want\"" "$WORK/metrics_$n.txt" \
        || fail "$n: no demix_node_info{role=\"$want\"}"
done

# Under ASan/UBSan a report goes to the node's stderr (its log), also from
# a node that exited (api2's first run: LeakSanitizer at exit).
san=$(grep -l 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:\|WARNING: ThreadSanitizer' \
    "$WORK"/api1.log "$WORK"/api2.log "${LOGS[@]}" 2>/dev/null)
[ -z "$san" ] || fail "sanitizer reports in: $san"

# ---- summary -------------------------------------------------------------------------------
echo "---- cluster summary ----"
echo "jobs accepted:        ${#IDS[@]} (api1 $(for id in "${IDS[@]}"; do echo "${VIA[$id]}"; done | grep -c api1), api2 $(for id in "${IDS[@]}"; do echo "${VIA[$id]}"; done | grep -c api2)), submissions retried: $RETRIES"
for w in "${WORKERS[@]}"; do
    echo "finished on $w:       $(grep '"event_type":"separation"' "$WORK/$w.log" | grep -c '"status":"done"')$([ "$w" = "$KILLED" ] && echo " (killed -9 running $LONG)")"
done
echo "attempts:             $ATTEMPTS_SUMMARY"
echo "lease expirations:    $logged logged, $exp counted by the live nodes"
echo "submit phase:         $((T_SUBMITTED - T_START)) s; all done after $((T_DONE - T_START)) s"
finish
