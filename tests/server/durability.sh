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
# Another process takes the database's write lock and holds it.
python3 - "$D/demix.db" "$WORK/locked" "$WORK/unlock" <<'PY' &
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
touch "$WORK/unlock"
wait "$LOCKER"
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
finish
