# persist.sh - integration test of `demix serve`'s durability and limits:
# kill -9 during a job then restart -> the job finishes and earlier results
# stay downloadable; the TTL janitor; SIGTERM drains (a running job
# finishes within the grace period, or is checkpointed as queued and runs
# after a restart); the per-job wall limit; the upload idle timeout; and
# the server's stems equal `demix separate`'s for the same input.
. "$(dirname "$0")/lib.sh"

D="$WORK/data"
L="$WORK/server.log"
# A longer input, so a job is still running when we strike.
cp "$GOLDEN/inputs/mix_12s.wav" "$WORK/long.wav"

# ---- stems equal the CLI's ------------------------------------------------------------
start "$L" --data-dir "$D" --workers 1
if get sync 200 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=tiny4s "$B/separate?wait=true"; then
    SID=$(json sync 'd["id"]')
    "$DEMIX" separate --repo "$GOLDEN/models" -n tiny4s -o "$WORK/cli" "$GOLDEN/inputs/mix_3s.wav" \
        >"$WORK/cli.log" 2>&1 || fail "demix separate failed: $(cat "$WORK/cli.log")"
    for s in drums bass other vocals; do
        get "stem_$s" 200 "$B/jobs/$SID/stems/$s"
        cmp -s "$WORK/stem_$s.body" "$WORK/cli/tiny4s/mix_3s/$s.wav" \
            && pass "stem $s equals the CLI's" || fail "stem $s differs from the CLI's"
    done
fi

# ---- kill -9 during a job, restart ------------------------------------------------------
# held (lib.sh): still running when polled and killed, however fast the machine
hold
get long 202 -F "file=@$WORK/long.wav" -F model_name=tiny4s -F shifts=4 "$B/separate"
LID=$(json long 'd["id"]')
get queued 202 -F "file=@$WORK/long.wav" -F model_name=tiny4s "$B/separate"
QID=$(json queued 'd["id"]')
st=
for _ in $(seq 600); do
    get poll 200 "$B/jobs/$LID" >/dev/null
    st=$(json poll 'd["status"]')
    [ "$st" != queued ] && break
    sleep 0.05
done
[ "$st" = running ] && pass "job running before kill -9" || fail "job was '$st' before kill -9"
kill -9 "$PID"; wait "$PID" 2>/dev/null
release
start "$L" --data-dir "$D" --workers 1 --grace 0.5
# The held job was running (the other one queued): it must come back.
tail -n 20 "$L" | grep -q '"event_type":"recovery".*"requeued":[12]' || fail "interrupted job not re-queued"
[ "$(wait_job "$LID" 1200)" = done ] && pass "interrupted job finished after restart" || fail "interrupted job: $(cat "$WORK/wait.body")"
[ "$(wait_job "$QID")" = done ] && pass "queued job finished after restart" || fail "queued job: $(cat "$WORK/wait.body")"
get old_stem 200 "$B/jobs/$SID/stems/vocals"
cmp -s "$WORK/old_stem.body" "$WORK/stem_vocals.body" && pass "finished job downloadable after restart" \
    || fail "stem changed across the restart"
get list 200 "$B/jobs" && body_has list "$SID"

# ---- SIGTERM with a short grace: checkpointed as queued, runs after restart -------------
# held: still running when SIGTERM's 0.5 s grace ends, however fast the machine
hold
get term 202 -F "file=@$WORK/long.wav" -F model_name=tiny4s -F shifts=4 "$B/separate"
TID=$(json term 'd["id"]')
wait_running tpoll "$TID"
stop_term 60
grep -q '"checkpointed as queued"\|checkpointing' "$L" && pass "running job checkpointed" || fail "no checkpoint on SIGTERM"
release
start "$L" --data-dir "$D" --workers 1
[ "$(wait_job "$TID" 1200)" = done ] && pass "SIGTERM'd job done after restart" || fail "SIGTERM'd job: $(cat "$WORK/wait.body")"
stop_term 30

# ---- TTL janitor, job timeout, idle timeout ---------------------------------------------
start "$L" --data-dir "$WORK/d2" --workers 1 --ttl 1 --job-timeout 0.5 --idle-timeout 2
# held: past its 0.5 s limit on any machine (a fast one separates 12 s in ~1 s)
hold
get tmo 200 -F "file=@$WORK/long.wav" -F model_name=tiny4s "$B/separate?wait=true" \
    && body_has tmo '"code":"timeout"' && body_has tmo '"status":"failed"'
TMO=$(json tmo 'd["id"]')
release
# --ttl 1, the janitor every 0.25 s: gone about 1.25 s after the end
for _ in $(seq 100); do
    [ "$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$B/jobs/$TMO")" = 404 ] && break
    sleep 0.1
done
get expired 404 "$B/jobs/$TMO"
[ -e "$WORK/d2/jobs/$TMO" ] && fail "expired job's files remain"
# A client that sends half an upload and goes silent is dropped.
python3 - "$B" <<'PY' && pass "stalled upload dropped" || fail "stalled upload kept open"
import socket, sys, time
host, port = sys.argv[1].split("//")[1].split(":")
s = socket.create_connection((host, int(port)))
s.sendall(b"POST /separate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
          b"Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc")
s.settimeout(15)
t = time.time()
try:
    while s.recv(4096):
        pass
except socket.timeout:
    sys.exit(1)
sys.exit(0 if time.time() - t < 12 else 1)
PY
empty_soon "$WORK/d2/uploads" || fail "stalled upload left a file"
stop_term 30

python3 -c '
import json, sys
for n, l in enumerate(open(sys.argv[1]), 1):
    json.loads(l)
' "$L" && pass "log lines are JSON" || fail "invalid log line"
finish
