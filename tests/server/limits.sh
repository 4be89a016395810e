# limits.sh - integration test of how `demix serve` bounds what a request
# may cost, and what the job JSON says about waiting:
#  1. Audio whose container states no length (8 ch, 384 kHz FLAC of hours
#     of silence, 2 MB) is not counted on the HTTP thread: the upload is
#     answered at once (202); the worker, in the bounded pool, counts it
#     (and fails it with audio_too_long past the limit, see hostile.sh).
#  2. Job errors shown to clients hold no server path (the log has them).
#  3. Free disk below --min-free-disk: uploads get 507
#     insufficient_storage, /readyz is not ready and says why, /health is
#     degraded, the disk_space_low gauge is 1.
#  4. queue_position: 1 for the next job to run, null unless queued.
#  5. A model being loaded blocks neither GET /models nor jobs on loaded
#     models; concurrent requests for it wait for that one load.
. "$(dirname "$0")/lib.sh"

L="$WORK/server.log"
W3="$GOLDEN/inputs/mix_3s.wav"

# ---- 1. no duration counting on the HTTP thread ----------------------------------------------------
python3 "$(dirname "$0")/mkflac.py" "$WORK/3h.flac" 10800
start "$L" --data-dir "$WORK/d1" --workers 1 --rate-limit 0 --max-duration 3600
get hostile 202 -H "X-Request-ID: hostile-flac" -F "file=@$WORK/3h.flac" -F model_name=tiny4s "$B/separate"
# The server's own time for the request (its log line), not this script's:
# counting 3600 s of 8 x 384 kHz before answering took seconds of CPU.
dt=$(grep '"request_id":"hostile-flac"' "$L" | grep '"event_type":"request"' | grep -o '"duration_seconds":[0-9.e-]*' | cut -d: -f2)
python3 -c "import sys; sys.exit(0 if float('${dt:-99}') < 2 * ${TIME_SCALE:-1} else 1)" && pass "length-less upload answered in $dt s" \
    || fail "length-less upload took ${dt:-?} s to answer"
HID=$(json hostile 'd["id"]')
[ "$(json hostile 'd["audio_seconds"]')" = None ] || fail "audio_seconds: $(cat "$WORK/hostile.body")"
# Its cost is now the worker's (it would end audio_too_long once an hour
# is decoded, as hostile.sh's "lying" FLAC does on a cheaper file); cancel it.
get hostile_del 200 -X DELETE "$B/jobs/$HID"
get hostile_health 200 --max-time 5 "$B/health"

# ---- 2. no server paths in job errors ----------------------------------------------------------------
R="$WORK/repo"
mkdir -p "$R"
cp "$GOLDEN/models/tiny4s.th" "$R/"
head -c 3000 "$GOLDEN/models/tiny4s.th" >"$R/broken.th"
stop_term 30
start "$L" --data-dir "$WORK/d2" --repo "$R" --workers 1 --rate-limit 0 --retries 0
get broken_job 202 -F "file=@$W3" -F model_name=broken "$B/separate"
BID=$(json broken_job 'd["id"]')
[ "$(wait_job "$BID")" = failed ] && grep -q '"code":"model_unavailable"' "$WORK/wait.body" \
    || fail "broken model job: $(cat "$WORK/wait.body")"
cp "$WORK/wait.body" "$WORK/broken_wait.body"
err broken_now 503 model_unavailable -F "file=@$W3" -F model_name=broken -F two_stems=vocals "$B/separate"
for n in broken_wait broken_now; do
    grep -q -e "$WORK" -e "/repo/" -e "d2/" "$WORK/$n.body" && fail "$n: server path shown: $(cat "$WORK/$n.body")" \
        || pass "$n: no server path in the error"
done
grep -q "broken.th" "$WORK/broken_wait.body" || fail "the error should still name the file: $(cat "$WORK/broken_wait.body")"
grep '"model_load"' "$L" | grep -q "$R/broken.th" && pass "the log has the path" || fail "log lacks the path"
stop_term 30

# ---- 3. free disk below the threshold ----------------------------------------------------------------
start "$L" --data-dir "$WORK/d3" --workers 1 --rate-limit 0 --min-free-disk 1000000000 --metrics-interval 0.2
err full 507 insufficient_storage -F "file=@$W3" -F model_name=tiny4s "$B/separate"
[ -z "$(find "$WORK/d3/uploads" "$WORK/d3/jobs" -mindepth 1)" ] || fail "refused upload left files"
err notready 503 not_ready "$B/readyz"
body_has notready "disk"
get health_low 200 "$B/health"
[ "$(json health_low 'd["status"]')" = degraded ] && [ "$(json health_low 'd["disk_low"]')" = True ] \
    && pass "/health degraded on low disk" || fail "/health: $(cat "$WORK/health_low.body")"
# the first system sample comes 0.2 s after the start: poll, do not sleep
for _ in $(seq 100); do
    curl -sS --max-time 10 "$B/metrics" | grep -q '^disk_space_low 1$' && break
    sleep 0.1
done
get metrics_low 200 "$B/metrics"
grep -q '^disk_space_low 1$' "$WORK/metrics_low.body" && pass "disk_space_low 1" || fail "no disk_space_low 1 in /metrics"
stop_term 30
DEMIX_MIN_FREE_DISK=0 start "$L" --data-dir "$WORK/d3" --workers 1 --rate-limit 0 --metrics-interval 0.2
get readyz_ok 200 "$B/readyz"
for _ in $(seq 100); do
    curl -sS --max-time 10 "$B/metrics" | grep -q '^disk_space_low 0$' && break
    sleep 0.1
done
get metrics_ok 200 "$B/metrics"
grep -q '^disk_space_low 0$' "$WORK/metrics_ok.body" && pass "disk_space_low 0" || fail "no disk_space_low 0 in /metrics"
stop_term 30

# ---- 4. queue_position ---------------------------------------------------------------------------
start "$L" --data-dir "$WORK/d4" --workers 1 --rate-limit 0
sox -V1 "$GOLDEN/inputs/mix_12s.wav" "$GOLDEN/inputs/mix_12s.wav" "$WORK/24s.wav"
# Job 1 must still run while positions are read: held (lib.sh), and
# deleted once read so the rest need not wait.
hold
get q1 202 -F "file=@$WORK/24s.wav" -F model_name=tiny4s -F shifts=8 "$B/separate"
get q2 202 -F "file=@$W3" -F model_name=tiny4s "$B/separate"
get q3 202 -F "file=@$W3" -F model_name=tiny4s "$B/separate"
Q1=$(json q1 'd["id"]'); Q2=$(json q2 'd["id"]'); Q3=$(json q3 'd["id"]')
for _ in $(seq 600); do
    get p1 200 "$B/jobs/$Q1" >/dev/null
    [ "$(json p1 'd["status"]')" != queued ] && break
    sleep 0.05
done
get p2 200 "$B/jobs/$Q2"; get p3 200 "$B/jobs/$Q3"
if [ "$(json p1 'd["status"]')" = running ] && [ "$(json p2 'd["status"]')" = queued ]; then
    [ "$(json p1 'd["queue_position"]')" = None ] || fail "running job has a queue_position"
    [ "$(json p2 'd["queue_position"]')" = 1 ] && [ "$(json p3 'd["queue_position"]')" = 2 ] \
        && pass "queue positions 1 and 2" || fail "positions: $(cat "$WORK/p2.body") $(cat "$WORK/p3.body")"
    # The list (newest first) agrees: queued jobs 1.. in submission order.
    get plist 200 "$B/jobs"
    json plist '[j["queue_position"] for j in reversed(d["jobs"]) if j["status"] == "queued"] == list(range(1, 1 + sum(j["status"] == "queued" for j in d["jobs"]))) and all(j["queue_position"] is None for j in d["jobs"] if j["status"] != "queued")' \
        | grep -q True && pass "list positions" || fail "list: $(cat "$WORK/plist.body")"
    get pdel 200 -X DELETE "$B/jobs/$Q2"
    get p3b 200 "$B/jobs/$Q3"
    [ "$(json p3b 'd["queue_position"]')" = 1 ] && pass "position moves up after a DELETE" || fail "after delete: $(cat "$WORK/p3b.body")"
else
    fail "job 1 not running with job 2 queued: $(cat "$WORK/p1.body")"
fi
get p1del 200 -X DELETE "$B/jobs/$Q1"
release
[ "$(wait_job "$Q3" 1200)" = done ] || fail "q3: $(cat "$WORK/wait.body")"
[ "$(json wait 'd["queue_position"]')" = None ] && pass "null once done" || fail "done job: $(cat "$WORK/wait.body")"
stop_term 30

# ---- 5. a slow model load blocks nothing else ------------------------------------------------------
# A FIFO as a model file: opening it blocks until we open its other end,
# which stands for a load that takes long (a big checkpoint, a slow disk).
R5="$WORK/repo5"
mkdir -p "$R5"
cp "$GOLDEN/models/tiny4s.th" "$R5/"
mkfifo "$R5/slow.th"
start "$L" --data-dir "$WORK/d5" --repo "$R5" --workers 1 --rate-limit 0 --retries 0
get warm 200 -F "file=@$W3" -F model_name=tiny4s -F two_stems=vocals "$B/separate?wait=true"
curl -sS -o "$WORK/slow1.body" -w '%{http_code}' -F "file=@$W3" -F model_name=slow -F two_stems=vocals \
    "$B/separate" >"$WORK/slow1.code" 2>/dev/null &
S1=$!
sleep 1
curl -sS -o "$WORK/slow2.body" -w '%{http_code}' -F "file=@$W3" -F model_name=slow -F two_stems=vocals \
    "$B/separate" >"$WORK/slow2.code" 2>/dev/null &
S2=$!
sleep 1
get models_during 200 --max-time 5 "$B/models" && pass "GET /models answers during a load"
get loaded_during 200 --max-time 60 -F "file=@$W3" -F model_name=tiny4s -F two_stems=vocals "$B/separate?wait=true" \
    && pass "a job on a loaded model runs during a load"
kill -0 "$S1" 2>/dev/null && kill -0 "$S2" 2>/dev/null && pass "both requests for the slow model wait" \
    || fail "a slow-model request ended early: $(cat "$WORK/slow1.body" "$WORK/slow2.body")"
# Opens the other end: the load proceeds (and fails). Bounded, so a server
# that never opens the FIFO fails the test instead of hanging it.
# (The server may close it before the bytes are written: a broken pipe is
# fine, only a timeout means it never opened the FIFO.)
rc=0; timeout 600 sh -c "printf 'not a checkpoint' >'$R5/slow.th'" 2>/dev/null || rc=$?
[ "$rc" != 124 ] || fail "the server never opened slow.th"
# Both answer at once now; one still waiting means a second load opened the
# FIFO again (it would wait forever): fail, feed it, and go on.
for _ in $(seq $((600 * ${TIME_SCALE:-1}))); do
    kill -0 "$S1" 2>/dev/null || kill -0 "$S2" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$S1" 2>/dev/null || kill -0 "$S2" 2>/dev/null; then
    fail "a slow-model request still waited after the load ended (a second load?)"
    timeout 5 sh -c "printf x >'$R5/slow.th'" 2>/dev/null
    kill "$S1" "$S2" 2>/dev/null
fi
wait "$S1" "$S2" 2>/dev/null
[ "$(cat "$WORK/slow1.code")" = 503 ] && [ "$(cat "$WORK/slow2.code")" = 503 ] \
    && pass "both got the load's outcome (503)" || fail "slow: $(cat "$WORK/slow1.code") $(cat "$WORK/slow2.code")"
n=$(grep -c '"cannot load model slow"' "$L")
[ "$n" = 1 ] && pass "one load for two requests" || fail "$n loads of the slow model"
stop_term 30
finish
