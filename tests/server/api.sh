# api.sh - integration test of `demix serve`: starts the real server on a
# free loopback port with the golden tiny models and checks every route's
# happy path and error statuses with curl. Environment (tests/server.cmake):
#   DEMIX  the demix binary   GOLDEN  golden fixtures   WORK  scratch folder
. "$(dirname "$0")/lib.sh"

LOG="$WORK/server.log"
start "$LOG" --data-dir "$WORK/data" --workers 1 --max-upload-mb 2
pass "listening on $B"
# the startup line names the OpenBLAS kernels in use (docs/ARCHITECTURE.md)
grep '"event_type":"startup"' "$LOG" | grep -q '"blas_kernels":"[A-Za-z0-9]' \
  && pass "startup log names the BLAS kernels" || fail "startup log lacks blas_kernels"

is_error_json() {
    body_has "$1" '"error":{"code":"'"$2"'"'
    body_has "$1" '"request_id":"'
}

get livez 200 "$B/livez" && body_has livez '"status":"ok"'
get health 200 "$B/health" && body_has health '"version":' && body_has health '"queue_depth":0' \
    && body_has health '"uptime_seconds":'
get readyz 200 "$B/readyz"
get models 200 "$B/models" && body_has models '"name":"tiny4s"' && body_has models '"location":"repo"'
# Sources come from each file (tiny6s has 6, the bag its members' 4), not from the name.
[ "$(json models '[m["sources"] for m in d["models"] if m["name"] in ("tiny6s", "tinybag")]')" = \
  "[['drums', 'bass', 'other', 'vocals', 'guitar', 'piano'], ['drums', 'bass', 'other', 'vocals']]" ] ||
    fail "models: sources of tiny6s / tinybag: $(head -c 600 "$WORK/models.body")"

# Errors: JSON bodies with the right status.
get unknown_job 404 "$B/jobs/0123456789abcdef0123456789abcdef" && is_error_json unknown_job job_not_found
get no_route 404 "$B/nope" && is_error_json no_route not_found
get bad_method 405 -X PUT "$B/health"
get not_multipart 415 -X POST -H 'Content-Type: application/json' -d '{"a":1}' "$B/separate" \
    && is_error_json not_multipart unsupported_media_type
head -c 3000000 /dev/zero >"$WORK/big.bin"
get too_big 413 -F "file=@$WORK/big.bin" "$B/separate" && is_error_json too_big payload_too_large
echo "this is not audio" >"$WORK/text.txt"
get not_audio 422 -F "file=@$WORK/text.txt" -F model_name=tiny4s "$B/separate" \
    && is_error_json not_audio undecodable_audio
get no_file 400 -F model_name=tiny4s "$B/separate" && is_error_json no_file missing_file
get bad_model 400 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=nosuch "$B/separate" \
    && is_error_json bad_model unknown_model
get bad_format 400 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F format=ogg "$B/separate"

# Request id: a valid one is echoed (headers and error body), a bad one replaced.
get rid 404 -H 'X-Request-ID: test-req.42_x' "$B/jobs/x"
grep -qi '^X-Request-ID: test-req.42_x' "$WORK/rid.hdr" || fail "request id not echoed"
body_has rid '"request_id":"test-req.42_x"'
get rid_bad 200 -H 'X-Request-ID: bad id!' "$B/livez"
grep -qi '^X-Request-ID: [0-9a-f]\{32\}' "$WORK/rid_bad.hdr" || fail "invalid request id not replaced"

# Synchronous separation.
if get sync 200 -H 'X-Request-ID: sync-1' -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=tiny4s \
    "$B/separate?wait=true"; then
    body_has sync '"status":"done"'
    body_has sync '"progress":1'
    ID=$(json sync 'd["id"]')
    [[ "$ID" =~ ^[0-9a-f]{32}$ ]] || fail "job id '$ID' is not 128-bit hex"
    for s in drums bass other vocals; do
        body_has sync "\"url\":\"/jobs/$ID/stems/$s\""
        if get "stem_$s" 200 "$B/jobs/$ID/stems/$s"; then
            [ "$(head -c 4 "$WORK/stem_$s.body")" = RIFF ] || fail "stem $s is not a WAV file"
            grep -qi '^Content-Type: audio/wav' "$WORK/stem_$s.hdr" || fail "stem $s content type"
        fi
    done
    get stem_missing 404 "$B/jobs/$ID/stems/guitar"
    get job 200 "$B/jobs/$ID" && body_has job '"status":"done"'
    grep -q '"request_id":"sync-1".*"event_type":"separation"\|"event_type":"separation".*"request_id":"sync-1"' "$LOG" \
        || fail "separation log line lacks the request id"
fi

# Asynchronous separation with two stems, then polling.
if get async 202 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=tiny6s -F two_stems=vocals \
    -F format=flac "$B/separate"; then
    AID=$(json async 'd["id"]')
    grep -qi "^Location: /jobs/$AID" "$WORK/async.hdr" || fail "async: no Location header"
    st=
    for _ in $(seq 300); do
        get poll 200 "$B/jobs/$AID" >/dev/null
        st=$(json poll 'd["status"]')
        case $st in done|failed|cancelled) break ;; esac
        sleep 0.1
    done
    [ "$st" = done ] && pass "async job done" || fail "async job ended as '$st': $(cat "$WORK/poll.body")"
    body_has poll '"name":"vocals"'
    body_has poll '"name":"no_vocals"'
    get async_stem 200 "$B/jobs/$AID/stems/no_vocals"
    [ "$(head -c 4 "$WORK/async_stem.body")" = fLaC ] || fail "no_vocals is not FLAC"
    get jobs 200 "$B/jobs" && body_has jobs "\"id\":\"$AID\""
    get delete 200 -X DELETE "$B/jobs/$AID"
    get deleted 404 "$B/jobs/$AID"
    [ -e "$WORK/data/jobs/$AID" ] && fail "deleted job's files remain"
fi

get metrics 200 "$B/metrics"
for m in http_requests_total http_request_duration_seconds_bucket separations_total \
         separation_duration_seconds_bucket models_loaded active_sessions errors_total \
         demix_build_info; do
    body_has metrics "^$m"
done
body_has metrics 'endpoint="/jobs/{id}"'
body_has metrics 'separations_total{model="tiny4s",status="done"} 1'
grep -q "endpoint=\"/jobs/$ID" "$WORK/metrics.body" && fail "raw job path used as a metric label"
[ -z "$(ls "$WORK/data/uploads")" ] || fail "uploads left behind: $(ls "$WORK/data/uploads")"

# Shutdown on SIGTERM, then every log line must be one JSON object.
stop_term 10
if command -v python3 >/dev/null; then
    python3 -c '
import json, sys
for n, l in enumerate(open(sys.argv[1]), 1):
    o = json.loads(l)
    for k in ("timestamp", "level", "logger", "message", "event_type", "request_id", "fields"):
        assert k in o, "line %d lacks %s" % (n, k)
' "$LOG" && pass "log lines are JSON" || fail "invalid log line"
else
    grep -vq '^{.*}$' "$LOG" && fail "log line that is not a JSON object"
fi
grep -q '"event_type":"request"' "$LOG" || fail "no request log lines"

finish
