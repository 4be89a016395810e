# features.sh - integration test of `demix serve` beyond the basic routes:
# POST /alerts, rate limiting (with X-Forwarded-For from a trusted proxy),
# the model circuit breaker (opens on a corrupt model, recovers through
# half-open), the API key, zip downloads, /openapi.json and /docs, request
# time validation (unknown source, too-long audio), and /metrics: every
# name of issue 5 and `promtool check metrics` when promtool is installed.
. "$(dirname "$0")/lib.sh"

ALERT='{"version":"4","groupKey":"{}:{alertname=\"HighCPU\"}","status":"firing","receiver":"demix",
 "alerts":[{"status":"firing","labels":{"alertname":"HighCPU","severity":"warning","instance":"x"},
   "annotations":{"summary":"CPU above 90%"},"startsAt":"2024-01-01T00:00:00Z","fingerprint":"abc"},
  {"status":"resolved","labels":{"alertname":"DiskFull","severity":"critical"},"annotations":{}}]}'

# ---- 1. alerts, API key, docs, zip, validation, metrics ---------------------------------
REPO="$WORK/repo"
mkdir -p "$REPO" && cp "$GOLDEN/models/tiny4s.th" "$GOLDEN/models/tiny6s.th" "$REPO/"
head -c 5000 /dev/urandom >"$REPO/broken.th"
L1="$WORK/s1.log"
# the breaker's open period leaves a slow (sanitized, loaded) machine time
# for the checks of the open state
BRK_OPEN=$((6 * ${TIME_SCALE:-1}))
DEMIX_API_KEY=s3cret DEMIX_ALERTS_TOKEN=am-t0ken start "$L1" --repo "$REPO" --data-dir "$WORK/d1" --workers 1 \
    --max-duration 2 --breaker-threshold 2 --breaker-open "$BRK_OPEN" --metrics-interval 0.5
AUTH=s3cret
A=(-H "Authorization: Bearer s3cret")
AT=(-H "Authorization: Bearer am-t0ken")

# Counters a dashboard takes increase() of exist at 0 before their first
# event: every model x terminal status, every error a route can answer.
if get m_zero 200 "$B/metrics"; then
    for st in done failed cancelled; do body_has m_zero "^separations_total{model=\"tiny4s\",status=\"$st\"} 0$"; done
    body_has m_zero '^errors_total{type="queue_full",endpoint="/separate"} 0$'
    body_has m_zero '^errors_total{type="job_not_found",endpoint="/jobs/{id}"} 0$'
fi

# The alerts secret (--alerts-token / DEMIX_ALERTS_TOKEN): a bearer token.
get alert_notoken 401 -H 'Content-Type: application/json' --data-binary "$ALERT" "$B/alerts"
get alert_badtoken 401 -H 'Authorization: Bearer am-t0kex' -H 'Content-Type: application/json' --data-binary "$ALERT" "$B/alerts"
get alert_api_key 401 "${A[@]}" -H 'Content-Type: application/json' --data-binary "$ALERT" "$B/alerts"
get alerts 200 "${AT[@]}" -H 'Content-Type: application/json' -H 'X-Request-ID: alert-1' --data-binary "$ALERT" "$B/alerts" \
    && body_has alerts '"received":2'
# Issue 12 bug 2: a label value of 60 x "é" (cut at the label's limit inside
# a character before) and 300 invented names, then a real alert.
E60=$(python3 -c 'print("\u00e9" * 60)')
get alert_utf8 200 "${AT[@]}" -H 'Content-Type: application/json' \
    --data-binary "{\"alerts\":[{\"status\":\"firing\",\"labels\":{\"alertname\":\"$E60\",\"severity\":\"warning\"}}]}" "$B/alerts"
python3 -c 'import json; print(json.dumps({"alerts": [{"status": "firing", "labels": {"alertname": "Invented%d" % i, "severity": "critical"}} for i in range(300)]}))' >"$WORK/invented.json"
get alert_flood 200 "${AT[@]}" -H 'Content-Type: application/json' --data-binary "@$WORK/invented.json" "$B/alerts" \
    && body_has alert_flood '"received":300'
get alert_real 200 "${AT[@]}" -H 'Content-Type: application/json' \
    -d '{"alerts":[{"status":"firing","labels":{"alertname":"DemixDown","severity":"critical"}}]}' "$B/alerts"
grep '"event_type":"alert"' "$L1" | grep -q '"alertname":"HighCPU"' || fail "no alert log line for HighCPU"
grep '"event_type":"alert"' "$L1" | grep -q '"request_id":"alert-1"' || fail "alert log line lacks the request id"
get alert_badjson 400 "${AT[@]}" -H 'Content-Type: application/json' -d '{"alerts":' "$B/alerts" && body_has alert_badjson invalid_json
get alert_noname 400 "${AT[@]}" -H 'Content-Type: application/json' -d '{"alerts":[{"status":"firing","labels":{}}]}' "$B/alerts" \
    && body_has alert_noname invalid_payload
get alert_noarr 400 "${AT[@]}" -H 'Content-Type: application/json' -d '{"status":"firing"}' "$B/alerts"
get alert_ctype 415 "${AT[@]}" -H 'Content-Type: text/plain' -d 'x' "$B/alerts"

# API key: job routes need it, probes and metrics do not.
get noauth 401 "$B/jobs" && body_has noauth '"code":"unauthorized"'
grep -qi '^WWW-Authenticate: Bearer' "$WORK/noauth.hdr" || fail "401 without WWW-Authenticate"
get badauth 401 -H 'Authorization: Bearer nope' "$B/jobs"
get noauth_sep 401 -F "file=@$GOLDEN/inputs/mix_3s.wav" "$B/separate"
get auth_jobs 200 "${A[@]}" "$B/jobs"
get open_health 200 "$B/health"
get open_metrics 200 "$B/metrics"

# OpenAPI and docs cover every route of the table.
if get openapi 200 "$B/openapi.json"; then
    python3 - "$WORK/openapi.body" <<'PY' && pass "openapi covers every route" || fail "openapi incomplete"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["openapi"].startswith("3.")
want = {("get","/livez"),("get","/health"),("get","/readyz"),("get","/models"),("get","/metrics"),
        ("get","/openapi.json"),("get","/docs"),("post","/alerts"),("post","/separate"),("get","/jobs"),
        ("get","/jobs/{id}"),("delete","/jobs/{id}"),("get","/jobs/{id}/stems/{stem}"),("get","/jobs/{id}/zip")}
have = {(m, p) for p, ops in d["paths"].items() for m in ops}
assert want <= have, want - have
assert "requestBody" in d["paths"]["/separate"]["post"]
PY
fi
get docs 200 "$B/docs" && body_has docs '/jobs/{id}/zip' && body_has docs '<html'

# Request-time validation.
get unknown_src 400 "${A[@]}" -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=tiny4s -F two_stems=guitar "$B/separate" \
    && body_has unknown_src '"code":"unknown_source"'
get too_long 422 "${A[@]}" -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=tiny4s "$B/separate" \
    && body_has too_long '"code":"audio_too_long"'

# Zip: wait=true with Accept: application/zip, then GET /jobs/{id}/zip.
sox "$GOLDEN/inputs/mix_3s.wav" "$WORK/short.wav" trim 0 1.5
# Download names: <track>_stems.zip and <track>_<stem>.<ext>, the track being
# the upload's name without its extension (RFC 6266 filename + filename*).
if get zipwait 200 "${A[@]}" -H 'Accept: application/zip' -F "file=@$WORK/short.wav;filename=Ma chanson: é*.wav" -F model_name=tiny4s "$B/separate?wait=true"; then
    grep -qi '^Content-Type: application/zip' "$WORK/zipwait.hdr" || fail "wait=true zip content type"
    cd_want="attachment; filename=\"Ma chanson_ ____stems.zip\"; filename*=UTF-8''Ma%20chanson_%20%C3%A9__stems.zip"
    [ "$(hdr zipwait Content-Disposition)" = "$(printf '%s' "$cd_want" | tr -d ' ')" ] \
        && pass "zip Content-Disposition" || fail "zip Content-Disposition: $(hdr zipwait Content-Disposition)"
    unzip -l "$WORK/zipwait.body" >"$WORK/zipwait.list" 2>&1 || fail "not a zip: $(cat "$WORK/zipwait.list")"
    for s in drums bass other vocals; do grep -q "$s.wav" "$WORK/zipwait.list" || fail "zip lacks $s.wav"; done
    unzip -tq "$WORK/zipwait.body" >/dev/null || fail "zip CRC test failed"
fi
# Held (lib.sh), the zip job cannot be done when its zip is asked for: a
# 409 that no fast machine can turn into a 200 by finishing the job first.
hold
if get zjob 202 "${A[@]}" -F "file=@$WORK/short.wav" -F model_name=tiny4s -F two_stems=vocals "$B/separate"; then
    ZID=$(json zjob 'd["id"]')
    get zip_early 409 "${A[@]}" "$B/jobs/$ZID/zip" && body_has zip_early '"code":"job_not_done"'
    get zstate 200 "${A[@]}" "$B/jobs/$ZID" && case $(json zstate 'd["status"]') in queued|running) true ;; *) false ;; esac \
        || fail "the held zip job should not have ended: $(cat "$WORK/zstate.body")"
    release
    [ "$(wait_job "$ZID")" = done ] || fail "zip job not done"
    get zip 200 "${A[@]}" "$B/jobs/$ZID/zip" && unzip -l "$WORK/zip.body" | grep -q no_vocals.wav \
        || fail "zip lacks no_vocals.wav"
    mkdir -p "$WORK/unz" && (cd "$WORK/unz" && unzip -q "$WORK/zip.body")
    [ "$(hdr zip Content-Disposition)" = "attachment;filename=\"short_stems.zip\";filename*=UTF-8''short_stems.zip" ] \
        && pass "zip download name" || fail "zip download name: $(hdr zip Content-Disposition)"
    get zstem 200 "${A[@]}" "$B/jobs/$ZID/stems/vocals"
    [ "$(hdr zstem Content-Disposition)" = "attachment;filename=\"short_vocals.wav\";filename*=UTF-8''short_vocals.wav" ] \
        && pass "stem download name" || fail "stem download name: $(hdr zstem Content-Disposition)"
    cmp -s "$WORK/zstem.body" "$WORK/unz/vocals.wav" && pass "zip entry equals the stem" || fail "zip entry differs from the stem"
fi
release
get zip_404 404 "${A[@]}" "$B/jobs/0123456789abcdef0123456789abcdef/zip"

# Circuit breaker: the corrupt model fails twice, the breaker opens (503 +
# Retry-After), then a good file in its place closes it through half-open.
for k in 1 2; do
    get "brk$k" 200 "${A[@]}" -F "file=@$WORK/short.wav" -F model_name=broken "$B/separate?wait=true" \
        && body_has "brk$k" '"status":"failed"'
done
if get brk_open 503 "${A[@]}" -F "file=@$WORK/short.wav" -F model_name=broken "$B/separate"; then
    body_has brk_open '"code":"model_unavailable"'
    ra=$(hdr brk_open Retry-After)
    [ -n "$ra" ] && [ "$ra" -ge 1 ] && [ "$ra" -le "$BRK_OPEN" ] && pass "breaker Retry-After $ra" || fail "breaker Retry-After '$ra'"
fi
get health_open 200 "$B/health" && body_has health_open '"model:broken":"open"' && body_has health_open '"status":"degraded"'
get ready_open 503 "$B/readyz"
get m_open 200 "$B/metrics" && body_has m_open 'circuit_breaker_state{breaker="model:broken"} 1'
cp "$GOLDEN/models/tiny4s.th" "$REPO/broken.th"
wait_health health_half '"model:broken":"half_open"' 16 # the open period: 6 s x TIME_SCALE
get brk_probe 200 "${A[@]}" -F "file=@$WORK/short.wav" -F model_name=broken "$B/separate?wait=true" \
    && body_has brk_probe '"status":"done"'
get health_closed 200 "$B/health" && body_has health_closed '"model:broken":"closed"'
get ready_again 200 "$B/readyz"

sleep 1 # one system metrics sample
if get metrics 200 "$B/metrics"; then
    for m in http_requests_total http_request_duration_seconds_bucket separations_total \
             separation_duration_seconds_bucket separation_file_size_bytes_bucket \
             separation_audio_duration_seconds_bucket model_load_duration_seconds_bucket models_loaded \
             model_inference_duration_seconds_bucket cpu_usage_percent memory_usage_bytes \
             memory_available_bytes memory_percent disk_usage_bytes disk_free_bytes active_sessions \
             temp_files temp_storage_bytes errors_total process_cpu_seconds_total \
             process_resident_memory_bytes process_virtual_memory_bytes process_open_fds \
             process_start_time_seconds demix_build_info queue_depth job_queue_wait_seconds_bucket \
             circuit_breaker_state circuit_breaker_transitions_total rate_limited_requests_total \
             retries_total alerts_received_total store_write_failures_total jobs_unsaved; do
        body_has metrics "^$m[{ ]"
    done
    body_has metrics 'alerts_received_total{alertname="HighCPU",severity="warning",status="firing"} 1'
    body_has metrics 'alerts_received_total{alertname="DiskFull",severity="critical",status="resolved"} 1'
    body_has metrics 'alerts_received_total{alertname="DemixDown",severity="critical",status="firing"} 1'
    body_has metrics 'alerts_received_total{alertname="other",severity="critical",status="firing"} 28[0-9]$'
    [ "$(grep -c '^alerts_received_total{' "$WORK/metrics.body")" -le 19 ] && pass "alert series bounded" \
        || fail "alert series: $(grep -c '^alerts_received_total{' "$WORK/metrics.body")"
    # wait=true separations have their own endpoint label (out of the latency panel).
    body_has metrics '^http_request_duration_seconds_count{method="POST",endpoint="/separate?wait=true"} '
    body_has metrics 'circuit_breaker_transitions_total{breaker="model:broken",from="half_open",to="closed"} 1'
    grep -q '^gpu_' "$WORK/metrics.body" && fail "gpu metrics without a GPU"
    if command -v promtool >/dev/null; then
        promtool check metrics <"$WORK/metrics.body" >"$WORK/promtool.out" 2>&1 \
            && pass "promtool check metrics" || fail "promtool: $(cat "$WORK/promtool.out")"
    else
        echo "skip: promtool not installed"
    fi
fi
grep -q '"event_type":"system_metrics"' "$L1" || fail "no system_metrics log line"
stop_term 30

# ---- 2. rate limiting -------------------------------------------------------------------
L2="$WORK/s2.log"
start "$L2" --data-dir "$WORK/d2" --rate-limit 6 --rate-burst 2 --trusted-proxies 127.0.0.1
# Not multipart: each refused with 415, but only after taking a token.
get rl1 415 -H 'X-Forwarded-For: 10.0.0.1' -X POST -d x "$B/separate"
grep -qi '^RateLimit-Policy:' "$WORK/rl1.hdr" || fail "no RateLimit-Policy header"
grep -qi '^RateLimit:' "$WORK/rl1.hdr" || fail "no RateLimit header"
get rl2 415 -H 'X-Forwarded-For: 10.0.0.1' -X POST -d x "$B/separate"
if get rl3 429 -H 'X-Forwarded-For: 10.0.0.1' -X POST -d x "$B/separate"; then
    body_has rl3 '"code":"rate_limited"'
    ra=$(hdr rl3 Retry-After)
    # 6 a minute: one token every 10 s.
    [ -n "$ra" ] && [ "$ra" -ge 1 ] && [ "$ra" -le 10 ] && pass "429 Retry-After $ra" || fail "429 Retry-After '$ra'"
fi
# Another client (as told by the trusted proxy) has its own bucket.
get rl_other 415 -H 'X-Forwarded-For: 203.0.113.7, 10.0.0.2' -X POST -d x "$B/separate"
get rl_metrics 200 "$B/metrics" && body_has rl_metrics '^rate_limited_requests_total 1'
stop_term 30

# ---- 3. a full queue answers 503 + Retry-After, and no accepted job is lost ----
L3="$WORK/s3.log"
start "$L3" --data-dir "$WORK/d3" --workers 1 --queue 1 --rate-limit 600 --rate-burst 50
cpids=()
for i in 1 2 3 4 5; do
    curl -sS --max-time 60 -o "$WORK/q$i.body" -D "$WORK/q$i.hdr" -w '%{http_code}' \
        -F file=@"$GOLDEN/inputs/mix_12s.wav" -F model_name=tiny4s "$B/separate" >"$WORK/q$i.code" &
    cpids+=($!)
done
wait "${cpids[@]}" # not a bare `wait`: the server is a background job too
full=0 accepted=()
for i in 1 2 3 4 5; do
    c=$(cat "$WORK/q$i.code")
    if [ "$c" = 503 ]; then
        full=$((full + 1))
        body_has "q$i" '"code":"queue_full"'
        ra=$(hdr "q$i" Retry-After)
        [ -n "$ra" ] && [ "$ra" -ge 1 ] || fail "queue full without a sane Retry-After ('$ra')"
    elif [ "$c" = 202 ]; then
        accepted+=("$(json "q$i" 'd["id"]')")
    else
        fail "submission $i: HTTP $c"
    fi
done
[ "$full" -ge 1 ] && pass "queue full: $full of 5 submissions got 503 + Retry-After" || fail "the queue never filled"
for id in "${accepted[@]}"; do
    st=$(wait_job "$id" 900)
    [ "$st" = done ] || fail "accepted job $id ended as '$st'"
done
[ "${#accepted[@]}" -ge 1 ] && pass "all ${#accepted[@]} accepted jobs completed"
stop_term 30

python3 -c '
import json, sys
for f in sys.argv[1:]:
    for n, l in enumerate(open(f), 1):
        json.loads(l)
' "$L1" "$L2" "$L3" && pass "log lines are JSON" || fail "invalid log line"
# Every line is valid UTF-8 (the 60 x "é" alert and its cut label among them).
python3 -c '
import sys
for f in sys.argv[1:]: open(f, "rb").read().decode("utf-8")
' "$L1" "$L2" "$L3" && pass "log lines are UTF-8" || fail "a log line is not valid UTF-8"

# ---- 4. --log-format text: a newline in a form field cannot forge a line ------------------
# (lib.sh's start reads the JSON startup line: here the text one.)
L4="$WORK/s4.log"
"$DEMIX" serve --host 127.0.0.1 --port 0 --repo "$GOLDEN/models" --data-dir "$WORK/d4" --log-format text 2>"$L4" &
PID=$!
PIDS+=("$PID")
port=
for _ in $(seq 300); do
    port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$L4" | head -n1 | sed 's/.*://')
    [ -n "$port" ] && break
    sleep 0.1
done
B="http://127.0.0.1:$port"
FORGED='2031-01-01T00:00:00.000Z error   demix.auth [-] admin login'
get forge 400 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F "model_name=x
$FORGED" "$B/separate"
grep -qF "model 'x\\n$FORGED'" "$L4" && pass "text log: the newline shown as \\n" \
    || fail "text log lacks the escaped field: $(grep unknown_model "$L4" | head -n 2)"
awk -v f="$FORGED" 'index($0, f) == 1 { found = 1 } END { exit !found }' "$L4" \
    && fail "text log: a form field forged a log line"
stop_term 30
finish
