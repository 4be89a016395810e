# durability.sh - integration test of what `demix serve` promises about its
# data folder (docs/RELIABILITY.md):
#  1. A job is accepted (202) only once its row is in SQLite. With the
#     database write-locked by another process (a real fault: a backup
#     tool, an operator's sqlite3 shell), POST /separate answers 503
#     store_unavailable with a JSON error and leaves no file behind (and
#     a DELETE is refused the same way, the job left as it was); once the
#     lock is gone jobs are accepted again.
#  2. A job folder no stored job owns (a crash between a row's deletion
#     and its files', or between an upload's move and its row) is removed
#     at the next start; owned folders and other names stay.
#  3. DELETE of a running job followed at once by kill -9: after a restart
#     neither the job nor its folder is left.
#  4. A job past its TTL whose deletion the store refuses (the database
#     write-locked) stays, served as before, with one job_expiry_deferred
#     warning and no job_expired line; once the lock is gone the next sweep
#     removes it and logs job_expired once.
#  5. --history: a submission past it first deletes the oldest finished
#     job (row, then folder); when the store refuses that deletion (a
#     trigger that aborts every DELETE) the submission is refused with 503
#     store_unavailable and nothing changes; --history not above --queue +
#     --workers is refused at start, and so is one the stored unfinished
#     jobs fill (none dropped; a larger one re-queues and finishes them);
#     the rows a start leaves out go, ties on creation time included.
#  6. a job's end written while another process holds the database locked:
#     reads answer at once meanwhile; the janitor writes the row afterwards.
. "$(dirname "$0")/lib.sh"

D="$WORK/data"
L="$WORK/server.log"
W3="$GOLDEN/inputs/mix_3s.wav"
job_dirs() { find "$D/jobs" -mindepth 1 -maxdepth 1 | wc -l; }

# ---- 1. no 202 without a stored row ------------------------------------------------------
start "$L" --data-dir "$D" --workers 1 --rate-limit 0
get first 202 -F "file=@$W3" -F model_name=tiny4s "$B/separate"
FIRST=$(json first 'd["id"]')
[ "$(wait_job "$FIRST")" = done ] || fail "first job: $(cat "$WORK/wait.body")"
n_before=$(job_dirs)
# Another process takes the database's write lock and holds it until
# unlock_db (or 60 s).
lock_db() { # DB
    rm -f "$WORK/locked" "$WORK/unlock"
    python3 - "$1" "$WORK/locked" "$WORK/unlock" <<'PY' &
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
open(sys.argv[2], "w").close()
for _ in range(600):
    if os.path.exists(sys.argv[3]):
        break
    time.sleep(0.1)
db.execute("ROLLBACK")
PY
    LOCKER=$!
    for _ in $(seq 100); do [ -e "$WORK/locked" ] && break; sleep 0.1; done
    [ -e "$WORK/locked" ] || fail "could not lock the database"
}
unlock_db() { touch "$WORK/unlock"; wait "$LOCKER"; }
lock_db "$D/demix.db"
err locked 503 store_unavailable -F "file=@$W3" -F model_name=tiny4s "$B/separate"
[ -n "$(hdr locked Retry-After)" ] || fail "locked: no Retry-After"
[ "$(job_dirs)" = "$n_before" ] && pass "refused job left no folder" || fail "refused job left a folder: $(ls "$D/jobs")"
[ -z "$(ls -A "$D/uploads")" ] && pass "refused job left no upload" || fail "upload left: $(ls "$D/uploads")"
get locked_list 200 "$B/jobs"
[ "$(json locked_list 'd["total"]')" = 1 ] && pass "refused job not listed" || fail "jobs: $(cat "$WORK/locked_list.body")"
# A DELETE the store cannot record is refused too, and changes nothing.
err locked_del 503 store_unavailable -X DELETE "$B/jobs/$FIRST"
get locked_kept 200 "$B/jobs/$FIRST" && [ "$(json locked_kept 'd["status"]')" = done ] \
    && pass "a DELETE the store refused left the job as it was" || fail "after the refused DELETE: $(cat "$WORK/locked_kept.body")"
unlock_db
get after 202 -F "file=@$W3" -F model_name=tiny4s "$B/separate"
AFTER=$(json after 'd["id"]')
[ "$(wait_job "$AFTER")" = done ] && pass "accepted again once the lock is gone" || fail "after: $(cat "$WORK/wait.body")"
[ "$(sqlite3 "$D/demix.db" "SELECT count(*) FROM jobs")" = 2 ] || fail "rows: $(sqlite3 "$D/demix.db" 'SELECT id, state FROM jobs')"
kill -9 "$PID"; wait "$PID" 2>/dev/null

# ---- 2. folders no row owns are swept at start-up ------------------------------------------
ORPHAN=0123456789abcdef0123456789abcdef
mkdir -p "$D/jobs/$ORPHAN" "$D/jobs/notajob"
echo x >"$D/jobs/$ORPHAN/input"
echo x >"$D/jobs/$ORPHAN/vocals.wav.part"
start "$L" --data-dir "$D" --workers 1 --rate-limit 0
[ -e "$D/jobs/$ORPHAN" ] && fail "orphaned job folder survived the restart" || pass "orphaned job folder removed"
[ -d "$D/jobs/notajob" ] && pass "a folder that is not a job's is left alone" || fail "notajob removed"
grep -q '"event_type":"orphan_removed"' "$L" || fail "no orphan_removed log line"
[ -d "$D/jobs/$FIRST" ] && get first_stem 200 "$B/jobs/$FIRST/stems/vocals" >/dev/null \
    && pass "owned folder kept and served" || fail "owned folder of $FIRST lost"

# ---- 3. DELETE a running job, then kill -9 at once ---------------------------------------------
sox -V1 "$GOLDEN/inputs/mix_12s.wav" "$GOLDEN/inputs/mix_12s.wav" "$WORK/24s.wav"
hold # (lib.sh) still running when deleted, however fast the machine
get run 202 -F "file=@$WORK/24s.wav" -F model_name=tiny4s -F shifts=2 "$B/separate"
RID=$(json run 'd["id"]')
wait_running rpoll "$RID"
get del 200 -X DELETE "$B/jobs/$RID"
kill -9 "$PID"; wait "$PID" 2>/dev/null
release
start "$L" --data-dir "$D" --workers 1 --rate-limit 0
get del_gone 404 "$B/jobs/$RID"
[ -e "$D/jobs/$RID" ] && fail "deleted job's folder leaked across the crash" || pass "deleted job's folder gone after the crash"
[ "$(sqlite3 "$D/demix.db" "SELECT count(*) FROM jobs WHERE id = '$RID'")" = 0 ] || fail "deleted job's row came back"
stop_term 30

# ---- 4. an expiry the store refuses is deferred, logged once -------------------------------
D4="$WORK/d4"
L4="$WORK/server4.log"
# --ttl 3 (times TIME_SCALE): the janitor sweeps every quarter of it; the
# lock is taken as soon as the job is done, well inside that
TS=${TIME_SCALE:-1}
start "$L4" --data-dir "$D4" --workers 1 --rate-limit 0 --ttl $((3 * TS))
get ttl 200 -F "file=@$W3" -F model_name=tiny4s "$B/separate?wait=true"
TTL_ID=$(json ttl 'd["id"]')
[ "$(json ttl 'd["status"]')" = done ] || fail "ttl job: $(cat "$WORK/ttl.body")"
lock_db "$D4/demix.db"
# past the TTL and through two refused sweeps (each waits out SQLite's 5 s
# busy timeout)
for _ in $(seq $((300 * TS))); do
    [ "$(grep -c '"event_type":"job_expiry_deferred"' "$L4")" -ge 1 ] && break
    sleep 0.1
done
sleep $((7 * TS))
get ttl_kept 200 "$B/jobs/$TTL_ID" && [ "$(json ttl_kept 'd["status"]')" = done ] \
    && pass "an expired job the store would not delete is still served" \
    || fail "refused expiry: $(cat "$WORK/ttl_kept.body")"
[ -d "$D4/jobs/$TTL_ID" ] || fail "refused expiry: the job's folder went"
n_def=$(grep -c '"event_type":"job_expiry_deferred"' "$L4")
n_exp=$(grep -c '"event_type":"job_expired"' "$L4")
[ "$n_def" = 1 ] && [ "$n_exp" = 0 ] && pass "refused expiry logged once, not as expired" \
    || fail "refused expiry: $n_def job_expiry_deferred, $n_exp job_expired lines"
unlock_db
# the job leaves the list inside the deletion; the log line and the folder
# follow it: poll for all three
for _ in $(seq $((200 * TS))); do
    [ "$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$B/jobs/$TTL_ID")" = 404 ] \
        && [ ! -e "$D4/jobs/$TTL_ID" ] && grep -q '"event_type":"job_expired"' "$L4" && break
    sleep 0.1
done
get ttl_gone 404 "$B/jobs/$TTL_ID"
[ -e "$D4/jobs/$TTL_ID" ] && fail "expired job's folder remains after the lock"
[ "$(grep -c '"event_type":"job_expired"' "$L4")" = 1 ] && pass "expired once the lock was gone, logged once" \
    || fail "job_expired lines: $(grep -c '"event_type":"job_expired"' "$L4")"
[ "$(sqlite3 "$D4/demix.db" "SELECT count(*) FROM jobs")" = 0 ] || fail "expired job's row remains"
stop_term 30

# ---- 5. the history bound --------------------------------------------------------------------
timeout 10 "$DEMIX" serve --host 127.0.0.1 --port 0 --data-dir "$WORK/d5" --queue 2 --workers 1 \
    --history 3 >"$WORK/hist_bad.out" 2>&1 \
    && fail "--history 3 with --queue 2 --workers 1 accepted" \
    || { grep -q -- "--history must exceed" "$WORK/hist_bad.out" && pass "--history too small refused at start" \
         || fail "--history refusal: $(cat "$WORK/hist_bad.out")"; }
# not given, the history goes above a queue longer than its 10000
start "$WORK/server5q.log" --data-dir "$WORK/d5q" --workers 1 --queue 20000
get q_health 200 "$B/health" >/dev/null && pass "--queue 20000 without --history starts"
stop_term 30
D5="$WORK/d5"
start "$WORK/server5.log" --data-dir "$D5" --workers 1 --queue 1 --history 3 --rate-limit 0
H=()
for i in 1 2 3; do
    get "h$i" 200 -F "file=@$W3" -F model_name=tiny4s "$B/separate?wait=true"
    H+=("$(json "h$i" 'd["id"]')")
done
rows() { sqlite3 "$D5/demix.db" "SELECT count(*) FROM jobs"; }
[ "$(rows)" = 3 ] || fail "history rows: $(rows)"
# The store refuses every deletion: the submission that needs one is refused.
sqlite3 "$D5/demix.db" "CREATE TRIGGER no_delete BEFORE DELETE ON jobs BEGIN SELECT RAISE(ABORT, 'no deletes'); END;"
err h_refused 503 store_unavailable -F "file=@$W3" -F model_name=tiny4s "$B/separate"
get h_list 200 "$B/jobs"
[ "$(json h_list 'd["total"]')" = 3 ] && [ "$(rows)" = 3 ] && [ -d "$D5/jobs/${H[0]}" ] \
    && get h_oldest 200 "$B/jobs/${H[0]}/stems/vocals" >/dev/null \
    && pass "a history eviction the store refused refused the job, nothing changed" \
    || fail "refused eviction: list $(cat "$WORK/h_list.body"), rows $(rows)"
[ -z "$(ls -A "$D5/uploads")" ] || fail "refused job left an upload: $(ls "$D5/uploads")"
[ "$(find "$D5/jobs" -mindepth 1 -maxdepth 1 | wc -l)" = 3 ] || fail "refused job left a folder: $(ls "$D5/jobs")"
sqlite3 "$D5/demix.db" "DROP TRIGGER no_delete"
get h4 200 -F "file=@$W3" -F model_name=tiny4s "$B/separate?wait=true"
H4=$(json h4 'd["id"]')
get h_list2 200 "$B/jobs"
get h_gone 404 "$B/jobs/${H[0]}"
[ "$(json h_list2 'd["total"]')" = 3 ] && [ "$(rows)" = 3 ] && [ ! -e "$D5/jobs/${H[0]}" ] \
    && [ "$(sqlite3 "$D5/demix.db" "SELECT count(*) FROM jobs WHERE id = '${H[0]}'")" = 0 ] \
    && pass "past --history the oldest job went, row and folder" \
    || fail "eviction: list $(cat "$WORK/h_list2.body"), rows $(rows)"
get h4_kept 200 "$B/jobs/$H4"
stop_term 30
# Unfinished jobs are never what a smaller --history drops at a restart:
# three of them stored (one running, held, two queued; kill -9), a start
# with --history 3 is refused, one with 4 re-queues and finishes them all.
start "$WORK/server5.log" --data-dir "$D5" --workers 1 --queue 2 --history 4 --rate-limit 0
hold
U=()
for i in 1 2 3; do
    get "u$i" 202 -F "file=@$W3" -F model_name=tiny4s "$B/separate"
    U+=("$(json "u$i" 'd["id"]')")
done
wait_running upoll "${U[0]}"
kill -9 "$PID"; wait "$PID" 2>/dev/null
release
unfinished() { sqlite3 "$D5/demix.db" "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"; }
[ "$(unfinished)" = 3 ] || fail "unfinished rows before the restart: $(unfinished)"
timeout $((20 * TS)) "$DEMIX" serve --host 127.0.0.1 --port 0 --repo "$GOLDEN/models" \
    --data-dir "$D5" --workers 1 --queue 1 --history 3 >"$WORK/hist_small.out" 2>&1 \
    && fail "a start with --history 3 and 3 unfinished jobs stored ran" \
    || { grep -q "unfinished jobs" "$WORK/hist_small.out" \
         && pass "a --history the unfinished jobs fill is refused at start" \
         || fail "small --history start: $(tail -c 600 "$WORK/hist_small.out")"; }
[ "$(unfinished)" = 3 ] && [ -e "$D5/jobs/${U[0]}/input" ] && [ -e "$D5/jobs/${U[2]}/input" ] \
    && pass "the refused start dropped no job" || fail "after the refused start: $(unfinished) unfinished rows"
start "$WORK/server5.log" --data-dir "$D5" --workers 1 --queue 2 --history 4 --rate-limit 0
n_done=0
for u in "${U[@]}"; do [ "$(wait_job "$u")" = done ] && n_done=$((n_done + 1)); done
[ "$n_done" = 3 ] && pass "the three stored jobs re-queued and done" || fail "re-queued jobs done: $n_done of 3"
stop_term 30
# Rows a start leaves out of its history go, ties included: with every
# row's creation time equal, a start with --history 3 keeps the 3 rows it
# loads (ties by id) and deletes the others, row then folder (a deletion by
# creation time alone kept them: rows never listed, whose folders the
# start-up sweep does not own).
sqlite3 "$D5/demix.db" "UPDATE jobs SET created = 1700000000"
n5=$(rows)
[ "$n5" -ge 4 ] || fail "rows before the tie test: $n5"
KEEP5=$(sqlite3 "$D5/demix.db" "SELECT id FROM jobs ORDER BY id DESC LIMIT 3" | sort)
DROP5=$(sqlite3 "$D5/demix.db" "SELECT id FROM jobs ORDER BY id DESC LIMIT -1 OFFSET 3")
start "$WORK/server5.log" --data-dir "$D5" --workers 1 --queue 1 --history 3 --rate-limit 0
get tie_list 200 "$B/jobs"
[ "$(sqlite3 "$D5/demix.db" "SELECT id FROM jobs ORDER BY id")" = "$KEEP5" ] \
    && [ "$(json tie_list 'd["total"]')" = 3 ] \
    && pass "equal creation times: the $((n5 - 3)) row(s) past --history 3 deleted, the 3 listed kept" \
    || fail "tie: rows $(sqlite3 "$D5/demix.db" "SELECT id FROM jobs ORDER BY id" | tr '\n' ' '), list $(json tie_list 'd["total"]')"
left5=$(echo "$DROP5" | while read -r id; do [ -e "$D5/jobs/$id" ] && echo "$id"; done)
[ -z "$left5" ] && pass "and their folders" || fail "folders of rows past the history: $left5"
stop_term 30

# ---- 6. a locked database stalls no reader; a refused write comes later ---------------------
# A job ends while another process holds the database's write lock: the
# end's row write waits out SQLite's 5 s busy timeout and fails, and
# meanwhile every read (the job, the list, /health) answers at once; the
# job shows done once its write was tried, and the janitor (every quarter
# of --ttl) writes the row once the lock is gone.
D6="$WORK/d6"
start "$WORK/server6.log" --data-dir "$D6" --workers 1 --rate-limit 0 --ttl $((40 * TS))
hold
get s6 202 -F "file=@$W3" -F model_name=tiny4s "$B/separate"
ID6=$(json s6 'd["id"]')
wait_running s6poll "$ID6"
row6() { sqlite3 "$D6/demix.db" "SELECT state FROM jobs WHERE id = '$ID6'"; }
for _ in $(seq 100); do [ "$(row6)" = running ] && break; sleep 0.1; done
[ "$(row6)" = running ] || fail "row of the running job: $(row6)"
lock_db "$D6/demix.db"
release
slowest=0
st6=
for _ in $(seq 40); do
    for u in "$B/jobs/$ID6" "$B/jobs" "$B/health"; do
        t=$(curl -sS --max-time 30 -o "$WORK/r6.body" -w '%{time_total}' "$u")
        slowest=$(python3 -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "$slowest" "$t")
    done
    st6=$(curl -sS --max-time 30 "$B/jobs/$ID6" | python3 -c "import json, sys; print(json.load(sys.stdin)['status'])")
    [ "$st6" = done ] && break
    sleep 0.25
done
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 2.5 else 1)" "$slowest" \
    && pass "reads answered within ${slowest} s while a row write waited for the lock" \
    || fail "a read took ${slowest} s while the database was locked"
[ "$st6" = done ] && pass "the job shows done once its end's write was tried" || fail "job during the lock: $st6"
[ "$(row6)" = running ] || fail "the row changed under another process's lock: $(row6)"
grep -q 'sqlite: save failed' "$WORK/server6.log" && pass "the refused write logged" || fail "no log of the refused write"
get m6 200 "$B/metrics"
body_has m6 '^store_write_failures_total 1$'
body_has m6 '^jobs_unsaved 1$'
unlock_db
for _ in $(seq $((300 * TS))); do [ "$(row6)" = done ] && break; sleep 0.1; done
[ "$(row6)" = done ] && pass "the janitor wrote the job's end once the lock was gone" \
    || fail "row after the lock: $(row6)"
get m6b 200 "$B/metrics"
body_has m6b '^jobs_unsaved 0$'
body_has m6b '^store_write_failures_total 1$'
stop_term 30
finish
