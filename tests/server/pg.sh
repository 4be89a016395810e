# pg.sh - `demix serve --store postgresql://...` against a real, throwaway
# PostgreSQL cluster this script starts itself: initdb in a temporary folder
# as an unprivileged user (nobody when run as root: PostgreSQL refuses
# root), listening only on a Unix socket in that folder. Checks: the schema
# and its version row are created; a job's row is in PostgreSQL; kill -9 of
# demix mid-job, restart -> the job's lease expires, it is re-queued from
# PostgreSQL and finishes (attempt 2); PostgreSQL stopped mid-run ->
# /readyz not ready, submissions and lookups 503 while it is away, demix
# alive, the running job runs to the end; started again -> ready again, the
# final states written once (the running job's by its worker, which still
# holds the lease: attempt 1), the queued one run, nothing re-run on a
# restart. pglib.sh makes (and removes) the cluster. Exit 77 (skipped) when
# PostgreSQL is not installed. (The shared queue itself: pg_queue.sh.)
. "$(dirname "$0")/lib.sh"

# ---- --store parsing and the SQLite schema version (no PostgreSQL needed) -------------
# refuse NAME ARGS...: demix serve must exit non-zero, logging NAME's pattern.
refuse() {
    local pat=$1; shift
    if timeout 120 "$DEMIX" serve --host 127.0.0.1 --port 0 --repo "$GOLDEN/models" "$@" \
        >"$WORK/refuse.log" 2>&1; then
        fail "demix serve $* started"
    else
        grep -q -- "$pat" "$WORK/refuse.log" && pass "refused: $pat" \
            || fail "refusal without '$pat': $(tail -n 3 "$WORK/refuse.log")"
    fi
}
refuse "expected sqlite:PATH or postgresql" --data-dir "$WORK/d0" --store "mysql://x"
refuse "expected sqlite:PATH or postgresql" --data-dir "$WORK/d0" --store "sqlite:"
# A demix.db from before schema_version (the jobs table only) is version 1.
mkdir -p "$WORK/old"
python3 - "$WORK/old/demix.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, request_id TEXT, model TEXT NOT NULL, two_stems TEXT,"
          " format TEXT NOT NULL, shifts INTEGER, overlap REAL, upload_name TEXT, state TEXT NOT NULL,"
          " error TEXT, error_code TEXT, stems TEXT, file_size INTEGER, audio_seconds REAL,"
          " created REAL, started REAL, finished REAL)")
c.commit()
PY
start "$WORK/old.log" --data-dir "$WORK/old" --store "sqlite:$WORK/old/demix.db"
get old_ready 200 "$B/readyz"
grep '"event_type":"startup"' "$WORK/old.log" | grep -q '"store":"sqlite"' && pass "startup line: sqlite" \
    || fail "startup line: $(grep '"event_type":"startup"' "$WORK/old.log")"
stop_term 60
sq() { python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall())" "$@"; }
[ "$(sq "$WORK/old/demix.db" 'SELECT version FROM schema_version')" = "[(1,)]" ] \
    && pass "old SQLite file migrated to schema version 1" || fail "sqlite schema_version: $(sq "$WORK/old/demix.db" 'SELECT * FROM schema_version')"
python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('UPDATE schema_version SET version = 99'); c.commit()" "$WORK/old/demix.db"
refuse "newer than this demix" --data-dir "$WORK/old"

. "$(dirname "$0")/pglib.sh"
# row_state ID: the job's state as PostgreSQL has it.
row_state() { sql "SELECT state FROM jobs WHERE id = '$1'"; }

D="$WORK/data"
L="$WORK/server.log"
cp "$GOLDEN/inputs/mix_12s.wav" "$WORK/long.wav"

# state_after_queued ID: polls until the job leaves "queued"; prints its state
# (lib.sh's wait_running NAME ID instead fails unless it runs).
state_after_queued() {
    local st=
    for _ in $(seq 2400); do
        curl -sS --max-time 10 -o "$WORK/run.body" "$B/jobs/$1" || break
        st=$(json run 'd.get("status", "")' 2>/dev/null)
        [ "$st" != queued ] && break
        sleep 0.05
    done
    echo "$st"
}
# wait_ready WANT_CODE SECONDS: polls /readyz until it answers WANT_CODE.
wait_ready() {
    local code= i
    for i in $(seq $(($2 * 5))); do
        code=$(curl -sS --max-time 20 -o "$WORK/ready.body" -w '%{http_code}' "$B/readyz")
        [ "$code" = "$1" ] && return 0
        sleep 0.2
    done
    echo "readyz: last HTTP $code: $(cat "$WORK/ready.body")" >&2
    return 1
}

# ---- schema, a job's row ------------------------------------------------------------
# (a sanitized heartbeat can stall for seconds: the lease grows with TIME_SCALE)
LEASE=(--lease-seconds $((3 * ${TIME_SCALE:-1})) --heartbeat-seconds 0.5)
start "$L" --data-dir "$D" --workers 1 --store "$URI" "${LEASE[@]}"
grep -qF "$URI" "$L" && fail "the connection URI is in the log"
grep '"event_type":"startup"' "$L" | grep -q '"store":"postgresql"' && pass "startup line names the store" \
    || fail "startup line: $(grep '"event_type":"startup"' "$L")"
[ "$(sql 'SELECT version FROM schema_version')" = 2 ] && pass "schema_version is 2" \
    || fail "schema_version: '$(sql 'SELECT * FROM schema_version')'"
get ready0 200 "$B/readyz"
if get sync 200 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=tiny4s "$B/separate?wait=true"; then
    SID=$(json sync 'd["id"]')
    [ "$(row_state "$SID")" = done ] && pass "finished job stored in PostgreSQL" \
        || fail "job row in PostgreSQL: '$(row_state "$SID")'"
    [ "$(sql "SELECT stems FROM jobs WHERE id = '$SID'")" = "drums,bass,other,vocals" ] \
        && pass "stems stored" || fail "stems: '$(sql "SELECT stems FROM jobs WHERE id = '$SID'")'"
fi
# Hostile values travel as parameters, never as SQL.
get quote 202 -F "file=@$GOLDEN/inputs/mix_3s.wav;filename=it's'); DROP TABLE jobs --.wav" \
    -F model_name=tiny4s "$B/separate"
QUOTE=$(json quote 'd["id"]')
[ "$(sql "SELECT count(*) FROM jobs WHERE id = '$QUOTE'")" = 1 ] && pass "quoted file name stored" \
    || fail "job with a quote in its file name not stored"
[ "$(wait_job "$QUOTE" 1200)" = done ] || fail "quoted job: $(cat "$WORK/wait.body")"

# ---- kill -9 of demix mid-job: re-queued from PostgreSQL ------------------------------
hold # (lib.sh) still running when killed, however fast the machine
get long 202 -F "file=@$WORK/long.wav" -F model_name=tiny4s -F shifts=4 "$B/separate"
LID=$(json long 'd["id"]')
st=$(state_after_queued "$LID")
[ "$st" = running ] && pass "job running before kill -9" || fail "job was '$st' before kill -9"
[ "$(row_state "$LID")" = running ] && pass "running state in PostgreSQL" \
    || fail "row state before kill: '$(row_state "$LID")'"
kill -9 "$PID"; wait "$PID" 2>/dev/null
release
start "$L" --data-dir "$D" --workers 1 --store "$URI" "${LEASE[@]}"
[ "$(wait_job "$LID" 3000)" = done ] && pass "interrupted job finished after restart" \
    || fail "interrupted job: $(cat "$WORK/wait.body")"
grep -q '"event_type":"lease_expired"' "$L" && pass "its lease expired and it was re-queued" \
    || fail "no lease_expired event: $(tail -n 5 "$L")"
[ "$(row_state "$LID")" = done ] && pass "re-run job done in PostgreSQL" || fail "row: '$(row_state "$LID")'"
[ "$(sql "SELECT attempts FROM jobs WHERE id = '$LID'")" = 2 ] && pass "run twice: attempts 2" \
    || fail "attempts: $(sql "SELECT attempts FROM jobs WHERE id = '$LID'")"
get old 200 "$B/jobs/$SID"

# ---- PostgreSQL restart mid-run --------------------------------------------------------
hold # (lib.sh) R1 still running when PostgreSQL stops, however fast the machine
get r1 202 -F "file=@$WORK/long.wav" -F model_name=tiny4s -F shifts=4 "$B/separate"
R1=$(json r1 'd["id"]')
get r2 202 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=tiny4s "$B/separate"
R2=$(json r2 'd["id"]')
[ "$(state_after_queued "$R1")" = running ] || fail "job not running before the database restart"
pgstop || fail "pg_ctl stop failed"
wait_ready 503 120 && pass "/readyz not ready while PostgreSQL is away" || fail "/readyz stayed ready"
grep -q '"job store is unreachable\|the job store is unreachable' "$WORK/ready.body" \
    && pass "readyz names the store" || fail "readyz body: $(cat "$WORK/ready.body")"
get refused 503 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=tiny4s "$B/separate"
err lookup_away 503 store_unavailable "$B/jobs/$R1"
kill -0 "$PID" 2>/dev/null && pass "demix alive without its database" || fail "demix died"
release
# The running job runs to its end meanwhile (its final write waits for
# the database: final_write_waiting; its `separation` event follows the
# write); the queued one waits in the database.
waiting() { grep '"event_type":"final_write_waiting"' "$L" | grep -q "\"job\":\"$R1\""; }
for _ in $(seq 1200); do
    waiting && break
    sleep 0.1
done
waiting && pass "running job finished while PostgreSQL is away" \
    || fail "job $R1 did not finish while PostgreSQL was away: $(tail -n 3 "$L")"
[ "$(row_state "$R1" 2>/dev/null)" = "" ] || fail "psql answered while PostgreSQL was stopped"
kill -0 "$PID" 2>/dev/null && pass "demix alive after its job ended without the database" || fail "demix died"
pgstart || { fail "PostgreSQL did not restart"; cat "$PGT/pg.log" >&2; }
wait_ready 200 180 && pass "/readyz ready again after PostgreSQL came back" || fail "/readyz not ready again"
for id in "$R1" "$R2"; do
    [ "$(wait_job "$id" 3000)" = done ] && pass "job $id done after the outage" \
        || fail "job $id: $(cat "$WORK/wait.body")"
    [ "$(row_state "$id")" = done ] && pass "job $id done in PostgreSQL" || fail "job $id row: '$(row_state "$id")'"
done
[ "$(sql "SELECT attempts FROM jobs WHERE id = '$R1'")" = 1 ] \
    && pass "the running job's result written once by its worker (attempt 1)" \
    || fail "R1 attempts: $(sql "SELECT attempts FROM jobs WHERE id = '$R1'")"
get r1_after 200 "$B/jobs/$R1" && body_has r1_after '"status":"done"'
[ "$(sql "SELECT count(*) FROM jobs")" = 5 ] && pass "5 accepted jobs stored, none refused" \
    || fail "rows: $(sql "SELECT id, state FROM jobs")"
# After a demix restart the jobs come back from PostgreSQL as they ended.
stop_term 60
n0=$(grep -c '"event_type":"separation_start"' "$L")
start "$L" --data-dir "$D" --workers 1 --store "$URI" "${LEASE[@]}"
get r2_after 200 "$B/jobs/$R2" && body_has r2_after '"status":"done"'
get after 200 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=tiny4s "$B/separate?wait=true"
[ "$(grep -c '"event_type":"separation_start"' "$L")" = $((n0 + 1)) ] \
    && pass "nothing re-run after the restart, the new job ran" \
    || fail "runs after the restart: $(grep '"event_type":"separation_start"' "$L" | tail -n 3)"
stop_term 60
# Rows a start leaves out of its history go (pg_delete_past: the statement
# SQLite's store runs, through libpq): with every creation time equal, a
# start with --history 3 keeps the 3 rows it loads (ties by id) and deletes
# the others, row then folder.
sql "UPDATE jobs SET created = 1700000000"
n6=$(sql "SELECT count(*) FROM jobs")
[ "$n6" -ge 4 ] || fail "rows before the history test: $n6"
KEEP6=$(sql "SELECT id FROM jobs ORDER BY id DESC LIMIT 3" | sort)
DROP6=$(sql "SELECT id FROM jobs ORDER BY id DESC OFFSET 3")
start "$L" --data-dir "$D" --workers 1 --queue 1 --history 3 --store "$URI" "${LEASE[@]}"
get hist_list 200 "$B/jobs"
[ "$(sql "SELECT id FROM jobs" | sort)" = "$KEEP6" ] && [ "$(json hist_list 'd["total"]')" = 3 ] \
    && pass "PostgreSQL: the $((n6 - 3)) row(s) past --history 3 deleted, the 3 listed kept" \
    || fail "history: rows $(sql "SELECT id FROM jobs" | tr '\n' ' '), list $(json hist_list 'd["total"]')"
left6=$(echo "$DROP6" | while read -r id; do [ -e "$D/jobs/$id" ] && echo "$id"; done)
[ -z "$left6" ] && pass "and their folders" || fail "folders of rows past the history: $left6"
stop_term 60
# A database whose schema is newer than this binary is refused.
sql "UPDATE schema_version SET version = 99"
refuse "newer than this demix" --data-dir "$D" --store "$URI"
finish
