# pg_queue.sh - the shared job queue of the clustered mode on a real,
# throwaway PostgreSQL (pglib.sh): one API node (`demix serve --no-workers`)
# and two `demix worker`s on one database and one data folder. Checks:
# the role refusals (SQLite + --no-workers, a worker without PostgreSQL, a
# heartbeat not below the lease); a worker answers only the probes and
# /metrics, with the cluster gauges; NOTIFY wakes an idle worker far sooner
# than its poll period; a burst of jobs is shared by both workers and no job
# is claimed twice (SKIP LOCKED); the API node never runs a job; a job's
# queue position comes from the database; DELETE on the API node stops the
# job on its worker and removes its files; a worker killed -9 mid-job loses
# only that run (its lease expires, the other worker re-runs it); an expired
# lease past --max-attempts fails the job with worker_lost; a worker whose
# lease was taken over does not write the job's end (the final write checks
# the lease); the database going away makes workers not ready, not dead; a
# worker stopped (SIGTERM) past --grace puts its job back as queued, and the
# next worker runs it; a node starts while another transaction holds the
# jobs table; the janitor keeps the newest --history jobs and expires
# finished jobs past --ttl, each with its files.
# Exit 77 (skipped) when PostgreSQL is not installed.
. "$(dirname "$0")/lib.sh"

# refuse PATTERN CMD ARGS...: demix must exit non-zero, printing PATTERN.
refuse() {
    local pat=$1; shift
    if timeout 120 "$DEMIX" "$@" >"$WORK/refuse.log" 2>&1; then
        fail "demix $* started"
    else
        grep -q -- "$pat" "$WORK/refuse.log" && pass "refused: $pat" \
            || fail "refusal without '$pat': $(tail -n 3 "$WORK/refuse.log")"
    fi
}
refuse "no-workers needs --store postgresql" serve --port 0 --data-dir "$WORK/d0" --no-workers
refuse "no-workers needs --store postgresql" serve --port 0 --data-dir "$WORK/d0" \
    --store "sqlite:$WORK/d0/x.db" --no-workers
refuse "demix worker needs --store postgresql" worker --data-dir "$WORK/d0"

. "$(dirname "$0")/pglib.sh"
refuse "heartbeat-seconds must be below --lease-seconds" worker --data-dir "$WORK/d0" \
    --store "$URI" --lease-seconds 2 --heartbeat-seconds 2

D="$WORK/data"
cp "$GOLDEN/inputs/mix_12s.wav" "$WORK/long.wav"
# Short leases so that a lost worker is noticed within seconds (longer under
# the sanitizers, where a heartbeat can stall that long); a long poll
# period so that only NOTIFY can wake an idle worker quickly.
CL=(--store "$URI" --data-dir "$D" --repo "$GOLDEN/models" --lease-seconds $((3 * ${TIME_SCALE:-1}))
    --heartbeat-seconds 0.5 --poll-seconds 30 --max-attempts 3)

# worker LOG: starts `demix worker` (1 worker thread); sets WPID, WB, WID.
worker() {
    local log=$1 n0=0
    [ -f "$log" ] && n0=$(wc -l <"$log")
    "$DEMIX" worker --host 127.0.0.1 --workers 1 "${CL[@]}" 2>>"$log" &
    WPID=$!
    PIDS+=("$WPID")
    local port=
    for _ in $(seq 300); do
        port=$(tail -n +$((n0 + 1)) "$log" | grep '"event_type":"startup"' | grep -o '"port":[0-9]*' | head -n1 | cut -d: -f2)
        [ -n "$port" ] && break
        kill -0 "$WPID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "worker did not start:" >&2; cat "$log" >&2; exit 1; }
    WB="http://127.0.0.1:$port"
    WID=$(tail -n +$((n0 + 1)) "$log" | grep '"event_type":"cluster_start"' | grep -o '"worker":"[^"]*"' | head -n1 | cut -d'"' -f4)
}
# runs LOG: how many jobs the node logging to LOG started.
runs() { grep -c '"event_type":"separation_start"' "$1"; }
submit() { # submit NAME FILE [FIELDS...]: 202, sets ID
    local name=$1 file=$2; shift 2
    get "$name" 202 -F "file=@$file" -F model_name=tiny4s "$@" "$B/separate" && ID=$(json "$name" 'd["id"]')
}
row() { sql "SELECT $2 FROM jobs WHERE id = '$1'"; }
# wait_row ID COLUMN VALUE SECONDS: polls the database.
wait_row() {
    for _ in $(seq $(($4 * 10))); do
        [ "$(row "$1" "$2")" = "$3" ] && return 0
        sleep 0.1
    done
    return 1
}

start "$WORK/api.log" "${CL[@]}" --no-workers
API_B=$B
worker "$WORK/w1.log"; W1PID=$WPID; W1B=$WB; W1=$WID
worker "$WORK/w2.log"; W2PID=$WPID; W2B=$WB; W2=$WID
grep '"event_type":"startup"' "$WORK/api.log" | grep -q '"role":"api"' && pass "API node: role api" \
    || fail "API startup line: $(grep '"event_type":"startup"' "$WORK/api.log")"

# ---- a node (re)connecting takes no lock on the tables (no DDL once migrated) ------------
# A transaction holding the jobs table (as another node's claim does) must
# not hold up a node's start: an ALTER TABLE on every connection waited for
# it (and deadlocked with claims).
"$PGBIN/psql" -h "$PGT" -U demix -d demix -Atq \
    -c "BEGIN; LOCK TABLE jobs IN ROW EXCLUSIVE MODE; SELECT pg_sleep(10); COMMIT" >/dev/null &
LOCKER=$!
sleep 1
t0=$(date +%s)
worker "$WORK/w0.log"
[ $(($(date +%s) - t0)) -lt 7 ] && pass "a worker starts while the jobs table is held" \
    || fail "a worker's start waited $(($(date +%s) - t0)) s for a lock on the jobs table"
kill -TERM "$WPID"; wait "$WPID" 2>/dev/null
wait "$LOCKER"

# ---- a worker's HTTP: probes and /metrics only ----------------------------------------
get w_live 200 "$W1B/livez"
get w_ready 200 "$W1B/readyz"
get w_jobs 404 "$W1B/jobs"
get w_sep 404 -F "file=@$GOLDEN/inputs/mix_3s.wav" "$W1B/separate"
# a heartbeat and a metrics refresh (seconds; more under the sanitizers)
for _ in $(seq 150); do
    curl -sS --max-time 10 "$W1B/metrics" 2>/dev/null | grep -q '^demix_cluster_workers_live 2' && break
    sleep 0.2
done
get w_metrics 200 "$W1B/metrics"
body_has w_metrics 'demix_node_info{role="worker"} 1'
body_has w_metrics 'demix_cluster_workers_live 2'
body_has w_metrics 'demix_cluster_queue_depth 0'
body_has w_metrics 'demix_lease_expirations_total 0'
get a_metrics 200 "$API_B/metrics"
body_has a_metrics 'demix_node_info{role="api"} 1'
body_has a_metrics 'demix_cluster_workers_live 2'
[ "$(sql "SELECT count(*) FROM workers")" = 2 ] && pass "workers table: 2 rows (the API node has none)" \
    || fail "workers table: $(sql "SELECT worker_id, role FROM workers")"

# ---- NOTIFY: an idle worker (poll period 30 s) claims within a second ---------------------
sleep 1
submit n1 "$GOLDEN/inputs/mix_3s.wav"
wait_row "$ID" state done 60 && pass "job done" || fail "job: $(row "$ID" state)"
lat=$(row "$ID" "started - created")
# (a bound well below the poll period, with room for a slow, sanitized start)
python3 -c "import sys; sys.exit(0 if 0 <= float(sys.argv[1]) < 2 * ${TIME_SCALE:-1} else 1)" "$lat" \
    && pass "claimed ${lat}s after submission (poll period 30 s: woken by NOTIFY)" \
    || fail "claim latency ${lat}s"

# ---- a burst: both workers busy, no job run twice (SKIP LOCKED) ----------------------------
# held until both workers run one: a fast worker must not take the whole
# burst before the other has claimed any
hold
IDS=()
for i in $(seq 8); do submit burst$i "$GOLDEN/inputs/mix_3s.wav" && IDS+=("$ID"); done
running=
for _ in $(seq $((600 * ${TIME_SCALE:-1}))); do
    running=$(sql "SELECT count(*) FROM jobs WHERE state = 'running'")
    [ "$running" = 2 ] && break
    sleep 0.1
done
[ "$running" = 2 ] && pass "burst: both workers run a job" || fail "burst: $running jobs running, not 2"
# the later ones are queued behind the others: their place comes from the database
get pos 200 "$API_B/jobs/${IDS[7]}"
python3 - "$WORK/pos.body" <<'PY' && pass "queue_position from the database" || fail "queue_position: $(head -c 300 "$WORK/pos.body")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["status"] != "queued" or d["queue_position"] >= 1, d
PY
release
for id in "${IDS[@]}"; do wait_row "$id" state done 300 || fail "burst job $id: $(row "$id" state)"; done
[ "$(sql "SELECT count(*) FROM jobs WHERE attempts <> 1 AND state = 'done'")" = 0 ] \
    && pass "every job claimed once" || fail "claimed more than once: $(sql "SELECT id, attempts FROM jobs WHERE attempts <> 1")"
r1=$(runs "$WORK/w1.log"); r2=$(runs "$WORK/w2.log")
[ $((r1 + r2)) = 9 ] && pass "9 runs for 9 jobs (w1 $r1, w2 $r2)" || fail "runs: w1 $r1, w2 $r2 for 9 jobs"
[ "$r1" -gt 0 ] && [ "$r2" -gt 0 ] && pass "both workers took jobs" || fail "one worker took every job: w1 $r1, w2 $r2"
ids_run=$(cat "$WORK/w1.log" "$WORK/w2.log" | grep '"event_type":"separation_start"' | grep -o '"job":"[0-9a-f]*"' | sort | uniq -d)
[ -z "$ids_run" ] && pass "no job started on two workers" || fail "started twice: $ids_run"
[ "$(runs "$WORK/api.log")" = 0 ] && pass "the --no-workers node ran no job" || fail "the API node ran jobs"
# the list comes from the database: pages, newest first, the total counted
# there (past the last page too)
N_ROWS=$(sql "SELECT count(*) FROM jobs")
get list 200 "$API_B/jobs?limit=3&offset=1"
python3 - "$WORK/list.body" "$N_ROWS" "${IDS[6]}" <<'PY' && pass "GET /jobs pages from the database" || fail "list: $(head -c 400 "$WORK/list.body")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["total"] == int(sys.argv[2]) and d["limit"] == 3 and d["offset"] == 1, d
assert len(d["jobs"]) == 3 and d["jobs"][0]["id"] == sys.argv[3], d  # newest first, one skipped
PY
get list_end 200 "$API_B/jobs?limit=3&offset=1000"
python3 - "$WORK/list_end.body" "$N_ROWS" <<'PY' && pass "past the last page: no jobs, the total still counted" || fail "list past the end: $(head -c 300 "$WORK/list_end.body")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["jobs"] == [] and d["total"] == int(sys.argv[2]), d
PY
# a job's result is readable through the API node (shared data folder)
get stem 200 "$API_B/jobs/${IDS[0]}/stems/vocals"
get zip 200 "$API_B/jobs/${IDS[0]}/zip"

# ---- DELETE on the API node reaches the worker ---------------------------------------------
hold # (lib.sh) running until the DELETE stops it, however fast the machine
submit del "$WORK/long.wav" -F shifts=4
DID=$ID
wait_row "$DID" state running 60 || fail "job not running before DELETE"
get delete 200 -X DELETE "$API_B/jobs/$DID"
body_has delete '"deleted":true'
# the worker sees the row gone at its next heartbeat, the engine stops at
# its next check (slow under the sanitizers), then the folder goes, then
# the run's `separation` event (it follows the final write)
for _ in $(seq 1200); do
    cat "$WORK/w1.log" "$WORK/w2.log" | grep -q "\"event_type\":\"job_deleted\".*$DID\|$DID.*\"event_type\":\"job_deleted\"" \
        && [ ! -e "$D/jobs/$DID" ] \
        && cat "$WORK/w1.log" "$WORK/w2.log" | grep '"event_type":"separation"' | grep -q "$DID" && break
    sleep 0.1
done
cat "$WORK/w1.log" "$WORK/w2.log" | grep '"event_type":"separation"' | grep "$DID" | grep -q '"status":"cancelled"' \
    && pass "the worker stopped the deleted job" || fail "deleted job not cancelled on its worker"
[ ! -e "$D/jobs/$DID" ] && pass "the deleted job's folder is gone" || fail "folder left: $(ls "$D/jobs/$DID")"
get gone 404 "$API_B/jobs/$DID"
release

# ---- a worker killed -9 mid-job: the other one re-runs it after the lease ------------------
hold # the victim cannot finish first, however fast the machine
submit kill "$WORK/long.wav" -F shifts=2
KID=$ID
wait_row "$KID" state running 60 || fail "job not running before kill -9"
owner=$(row "$KID" worker_id)
if [ "$owner" = "$W1" ]; then victim=$W1PID; else victim=$W2PID; fi
kill -9 "$victim"; wait "$victim" 2>/dev/null
release
wait_row "$KID" state done 600 && pass "the killed worker's job done on the other" \
    || fail "killed worker's job: $(sql "SELECT state, attempts, worker_id, error FROM jobs WHERE id = '$KID'")"
[ "$(row "$KID" attempts)" = 2 ] && pass "run twice: attempts 2" || fail "attempts: $(row "$KID" attempts)"
exp=0
for u in "$API_B" "$W1B" "$W2B"; do
    n=$(curl -sS --max-time 5 "$u/metrics" 2>/dev/null | grep '^demix_lease_expirations_total' | cut -d' ' -f2)
    exp=$((exp + ${n:-0}))
done
[ "$exp" = 1 ] && pass "one lease expiration counted" || fail "lease expirations counted: $exp"
if [ "$victim" = "$W1PID" ]; then worker "$WORK/w1.log"; W1PID=$WPID; W1B=$WB; W1=$WID
else worker "$WORK/w2.log"; W2PID=$WPID; W2B=$WB; W2=$WID; fi

# ---- attempts are bounded: a lost lease at --max-attempts fails the job ---------------------
GHOST=$(printf 'f%.0s' $(seq 32))
mkdir -p "$D/jobs/$GHOST" && cp "$GOLDEN/inputs/mix_3s.wav" "$D/jobs/$GHOST/input"
sql "INSERT INTO jobs (id, model, format, shifts, overlap, state, created, started, attempts, worker_id, lease_expires)
     VALUES ('$GHOST', 'tiny4s', 'wav', 1, 0.25, 'running', extract(epoch from now()), extract(epoch from now()), 3, 'ghost', 0)"
wait_row "$GHOST" state failed 30 && pass "lease expired at max attempts: failed" || fail "ghost job: $(row "$GHOST" state)"
[ "$(row "$GHOST" error_code)" = worker_lost ] && pass "error code worker_lost" || fail "error_code: $(row "$GHOST" error_code)"
[ "$(row "$GHOST" error)" = "lease expired 3 times (worker lost)" ] && pass "error names the lost worker" \
    || fail "error: $(row "$GHOST" error)"
get ghost 200 "$API_B/jobs/$GHOST" && body_has ghost '"code":"worker_lost"'

# ---- a stale lease: the final write of a worker whose job was taken over is refused ----------
submit stale "$WORK/long.wav" -F shifts=4
SID=$ID
wait_row "$SID" state running 60 || fail "job not running before the takeover"
sql "UPDATE jobs SET worker_id = 'thief', attempts = attempts + 1, lease_expires = extract(epoch from now()) + 3600 WHERE id = '$SID'"
# seen at the next heartbeat, stopped at the engine's next check (slow
# under the sanitizers), then its final write is refused
for _ in $(seq 1200); do
    cat "$WORK/w1.log" "$WORK/w2.log" | grep '"event_type":"lease_lost"' | grep -q "$SID" && break
    sleep 0.1
done
cat "$WORK/w1.log" "$WORK/w2.log" | grep '"event_type":"lease_lost"' | grep -q "$SID" \
    && pass "the worker saw its lease taken over" || fail "no lease_lost for $SID"
[ "$(sql "SELECT state || ' ' || worker_id FROM jobs WHERE id = '$SID'")" = "running thief" ] \
    && pass "its final write was refused: the row is the new holder's" \
    || fail "row after the takeover: $(sql "SELECT state, worker_id FROM jobs WHERE id = '$SID'")"
sql "DELETE FROM jobs WHERE id = '$SID'"
rm -rf "$D/jobs/$SID" # (orphaned by this test's hand; the janitor's sweep waits 10 minutes)

# ---- the database away: workers not ready, alive; back: ready, jobs run ----------------------
pgstop || fail "pg_ctl stop failed"
code=
for _ in $(seq 100); do
    code=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' "$W1B/readyz")
    [ "$code" = 503 ] && break
    sleep 0.2
done
[ "$code" = 503 ] && pass "worker not ready without the database" || fail "worker readyz: $code"
sleep 3
kill -0 "$W1PID" && kill -0 "$W2PID" && kill -0 "$PID" && pass "every node alive without the database" \
    || fail "a node died without the database"
pgstart || fail "PostgreSQL did not restart"
for _ in $(seq 150); do
    code=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' "$W1B/readyz")
    [ "$code" = 200 ] && break
    sleep 0.2
done
[ "$code" = 200 ] && pass "worker ready again" || fail "worker readyz after the restart: $code"
for _ in $(seq 150); do
    code=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' "$API_B/readyz")
    [ "$code" = 200 ] && break
    sleep 0.2
done
[ "$code" = 200 ] && pass "API node ready again" || fail "API readyz after the restart: $code"
B=$API_B
submit after "$GOLDEN/inputs/mix_3s.wav"
wait_row "$ID" state done 120 && pass "a job runs after the database restart" || fail "after: $(row "$ID" state)"

# ---- SIGTERM on a worker past --grace: its job goes back to the queue, not counted ----------------
kill -TERM "$W1PID" "$W2PID"; wait "$W1PID" "$W2PID" 2>/dev/null
CL+=(--grace 0)
worker "$WORK/w3.log"
hold
submit term "$WORK/long.wav" -F shifts=4
TID=$ID
wait_row "$TID" state running 60 || fail "job not running before SIGTERM"
kill -TERM "$WPID"; wait "$WPID" 2>/dev/null
release
[ "$(sql "SELECT state || ' ' || attempts || ' ' || coalesce(worker_id, '-') FROM jobs WHERE id = '$TID'")" = "queued 0 -" ] \
    && pass "checkpointed as queued by the stopping worker (attempt not counted)" \
    || fail "row after SIGTERM: $(sql "SELECT state, attempts, worker_id FROM jobs WHERE id = '$TID'")"
worker "$WORK/w4.log"
wait_row "$TID" state done 600 && pass "run to the end by the next worker" || fail "term job: $(row "$TID" state)"
[ "$(row "$TID" attempts)" = 1 ] && pass "attempts 1" || fail "attempts: $(row "$TID" attempts)"
kill -TERM "$WPID"; wait "$WPID" 2>/dev/null

# ---- the janitor (one node, under the advisory lock): the history cap -------------------------
# --history N in a cluster: the janitor keeps the newest N jobs (by
# submission; the unfinished always), removing the finished ones past them
# with their folders, whatever their age.
stop_term 60
KEEP=3
FIN="state IN ('done', 'failed', 'cancelled')"
GONE=$(sql "SELECT id FROM (SELECT id, $FIN AS fin, row_number() OVER (ORDER BY created DESC, id DESC) AS r
            FROM jobs) x WHERE r > $KEEP AND fin ORDER BY id")
STAY=$(sql "SELECT id FROM jobs ORDER BY id" | grep -vxF -f <(echo "$GONE") || true)
[ "$(echo "$GONE" | grep -c .)" -ge 2 ] || fail "fewer than 2 finished jobs past the newest $KEEP"
GONE_DIRS=$(echo "$GONE" | while read -r id; do [ -d "$D/jobs/$id" ] && echo "$id"; done)
[ -n "$GONE_DIRS" ] || fail "none of the jobs to expire has a folder"
KEPT_DIRS=$(sql "SELECT id FROM jobs WHERE $FIN" | grep -vxF -f <(echo "$GONE") |
    while read -r id; do [ -d "$D/jobs/$id" ] && echo "$id"; done || true)
start "$WORK/api_hist.log" "${CL[@]}" --no-workers --history "$KEEP" --ttl 86400
for _ in $(seq 150); do
    [ "$(sql "SELECT id FROM jobs ORDER BY id")" = "$STAY" ] && break
    sleep 0.2
done
[ "$(sql "SELECT id FROM jobs ORDER BY id")" = "$STAY" ] \
    && pass "--history $KEEP: the $(echo "$GONE" | grep -c .) finished jobs past the newest $KEEP removed, the rest kept" \
    || fail "rows after the history cap: $(sql "SELECT id, state FROM jobs ORDER BY created DESC") (kept should be: $STAY)"
left=$(echo "$GONE_DIRS" | while read -r id; do [ -d "$D/jobs/$id" ] && echo "$id"; done)
[ -z "$left" ] && pass "their folders removed with them" || fail "folders left of expired jobs: $left"
kept=$(echo "$KEPT_DIRS" | while read -r id; do [ -z "$id" ] || [ -d "$D/jobs/$id" ] || echo "$id"; done)
[ -z "$kept" ] && pass "the kept finished jobs keep their folders ($(echo "$KEPT_DIRS" | grep -c .))" \
    || fail "folders gone of kept jobs: $kept"
stop_term 60

# ---- the janitor: TTL with the files ---------------------------------------------------------
DONE=$(sql "SELECT count(*) FROM jobs WHERE state IN ('done', 'failed', 'cancelled')")
[ "$DONE" -gt 0 ] || fail "no finished job to expire"
start "$WORK/api2.log" "${CL[@]}" --no-workers --ttl 2
for _ in $(seq 150); do
    [ "$(sql "SELECT count(*) FROM jobs WHERE state IN ('done', 'failed', 'cancelled')")" = 0 ] && break
    sleep 0.2
done
[ "$(sql "SELECT count(*) FROM jobs WHERE state IN ('done', 'failed', 'cancelled')")" = 0 ] \
    && pass "$DONE finished job(s) past --ttl removed" || fail "finished rows left: $(sql "SELECT count(*) FROM jobs")"
left=$(ls "$D/jobs" | while read -r id; do [ "$(sql "SELECT count(*) FROM jobs WHERE id = '$id'")" = 0 ] && echo "$id"; done)
[ -z "$left" ] && pass "their folders removed with them" || fail "folders without a row: $left"
grep -q '"event_type":"job_expired"' "$WORK/api2.log" && pass "expiry logged" || fail "no job_expired event"
finish
