# http_edges.sh - integration test of the HTTP front end's edges (issue 12):
# a body sent with GET/DELETE is refused before the route acts (and only
# responses really sent are logged and counted); each 405 lists the
# route's own methods in Allow; uploads are named by the server, not by
# the client's X-Request-ID; X-Forwarded-For is read whole, every line,
# and normalised; an empty DEMIX_API_KEY refuses to start; idle sockets
# from one address do not lock out the probes.
. "$(dirname "$0")/lib.sh"

W3="$GOLDEN/inputs/mix_3s.wav"
D="$WORK/data"
L="$WORK/server.log"
start "$L" --data-dir "$D" --workers 1 --rate-limit 0

# ---- 405: Allow lists what the route has ----------------------------------------------
allow() { # NAME WANT CURL_ARGS...
    local name=$1 want=$2; shift 2
    get "$name" 405 "$@" || return
    [ "$(hdr "$name" Allow)" = "$want" ] && pass "$name: Allow: $want" \
        || fail "$name: Allow is '$(hdr "$name" Allow)', expected '$want'"
}
allow a_job "GET,HEAD,DELETE" -X PUT "$B/jobs/abc"
allow a_health "GET,HEAD" -X POST "$B/health"
allow a_separate "POST" -X GET "$B/separate"
allow a_alerts "POST" -X DELETE "$B/alerts"
allow a_zip "GET,HEAD" -X DELETE "$B/jobs/abc/zip"

# ---- a body on GET or DELETE -----------------------------------------------------------
sox "$W3" "$WORK/s1.wav" trim 0 1
get job 200 -F "file=@$WORK/s1.wav" -F model_name=tiny4s "$B/separate?wait=true"
ID=$(json job 'd["id"]')
if get del_body 400 -X DELETE -H 'X-Request-ID: delbody' -d 'please=1' "$B/jobs/$ID"; then
    [ "$(json del_body 'd["error"]["code"]')" = invalid_argument ] || fail "del_body: $(cat "$WORK/del_body.body")"
fi
get still_there 200 "$B/jobs/$ID" && [ "$(json still_there 'd["status"]')" = done ] \
    || fail "the DELETE with a body deleted the job"
sleep 0.5 # (the log line may follow the response by a moment)
grep '"request_id":"delbody"' "$L" | grep -q '"status":200' && fail "a DELETE with a body was logged as 200"
get get_body 400 -X GET -d 'hello' "$B/health"
body_has get_body "takes no request body"
# Over 64 KiB announced: 413 at once; chunked: the connection is closed.
head -c 100000 /dev/zero | tr '\0' a >"$WORK/big"
get get_big 413 -X GET --data-binary "@$WORK/big" "$B/health"
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H 'Transfer-Encoding: chunked' \
    --data-binary "@$WORK/big" "$B/jobs/$ID")
[ "$code" = 000 ] && pass "chunked body past 64 KiB on DELETE: connection closed" \
    || fail "chunked 100 kB DELETE body answered $code"
get still_there2 200 "$B/jobs/$ID"
# Keep-alive survives a refused body: two requests on one connection.
n=$(curl -s -o /dev/null -w '%{http_code}:%{num_connects} ' -X GET -d x "$B/livez" \
    --next -s -o /dev/null -w '%{http_code}:%{num_connects} ' "$B/livez")
[ "$n" = "400:1 200:0 " ] && pass "keep-alive after a refused body" || fail "keep-alive: $n"
get del_ok 200 -X DELETE "$B/jobs/$ID"
get metrics 200 "$B/metrics"
grep '^http_requests_total{' "$WORK/metrics.body" | grep 'method="DELETE"' | grep -q 'status="200"} 1$' \
    && pass "one DELETE counted as 200" \
    || fail "DELETE 200 count: $(grep 'method="DELETE"' "$WORK/metrics.body")"

# ---- uploads are named by the server, not by X-Request-ID -----------------------------
# A slow upload holds its file open while a second one with the same request
# id arrives: both must be accepted.
(curl -sS -o "$WORK/slow.body" -w '%{http_code}' --limit-rate 150k -H 'X-Request-ID: same-id' \
    -F "file=@$W3" -F model_name=tiny4s "$B/separate" >"$WORK/slow.code") &
SLOW=$!
for _ in $(seq 200); do [ -n "$(ls -A "$D/uploads")" ] && break; sleep 0.05; done
[ -n "$(ls -A "$D/uploads")" ] || fail "the slow upload's file did not appear"
get same_id 202 -H 'X-Request-ID: same-id' -F "file=@$WORK/s1.wav" -F model_name=tiny4s "$B/separate"
wait "$SLOW"
[ "$(cat "$WORK/slow.code")" = 202 ] && pass "slow upload with the same request id: 202" \
    || fail "slow upload: HTTP $(cat "$WORK/slow.code"): $(head -c 300 "$WORK/slow.body")"
ls "$D/uploads" | grep -q same-id && fail "an upload file is named after the client's request id"
# Request ids a client gives are kept only if short and plain (they reach logs).
get rid_bad 200 -H "X-Request-ID: a b\"c" "$B/livez"
[ "$(hdr rid_bad X-Request-ID | wc -c)" -eq 33 ] && pass "odd request id replaced" \
    || fail "odd request id kept: $(hdr rid_bad X-Request-ID)"
get rid_long 200 -H "X-Request-ID: $(head -c 65 /dev/zero | tr '\0' a)" "$B/livez"
[ "$(hdr rid_long X-Request-ID | wc -c)" -eq 33 ] || fail "65-byte request id kept"
stop_term

# ---- X-Forwarded-For from a trusted proxy ---------------------------------------------------
L2="$WORK/server2.log"
start "$L2" --data-dir "$WORK/d2" --rate-limit 1 --rate-burst 1 --trusted-proxies 127.0.0.1
client_of() { # REQUEST_ID: the client field of its request log line
    grep "\"request_id\":\"$1\"" "$L2" | grep '"event_type":"request"' | grep -o '"client":"[^"]*"' | cut -d'"' -f4
}
xff_is() { # NAME WANT XFF_LINES...: GET /livez with those lines; the client must be WANT
    local name=$1 want=$2; shift 2
    local h=() x
    for x in "$@"; do h+=(-H "X-Forwarded-For: $x"); done
    get "$name" 200 -H "X-Request-ID: $name" "${h[@]}" "$B/livez" || return
    # the log line may follow the response by a moment
    for _ in $(seq 50); do [ -n "$(client_of "$name")" ] && break; sleep 0.1; done
    [ "$(client_of "$name")" = "$want" ] && pass "$name: client $want" \
        || fail "$name: client '$(client_of "$name")', expected '$want'"
}
xff_is x_plain 10.0.0.1 "203.0.113.9, 10.0.0.1"
xff_is x_lines 10.0.0.2 "6.6.6.6" "10.0.0.2"
xff_is x_mapped 10.0.0.3 "::FFFF:10.0.0.3"
xff_is x_v6 2001:db8::1 "2001:DB8:0:0::1"
xff_is x_proxy_chain 10.0.0.4 "10.0.0.4, 127.0.0.1"
xff_is x_garbage 127.0.0.1 "10.0.0.5, not-an-address"
# A client-chosen list past 1023 bytes, then what the proxy appended: the
# client is still the proxy's entry, whatever the first 1023 bytes end with.
long_xff() { # LAST: 1023 bytes of client text ending in LAST, then ", 10.0.0.9"
    python3 - "$1" <<'PY'
import sys
last = sys.argv[1]
p = 1023 - len(last)  # bytes of "1.1.1.1, " entries before it
k, rem = divmod(p, 9)
s = "".join(("11.1.1.1, " if i < rem else "1.1.1.1, ") for i in range(k)) + last
assert len(s) == 1023, len(s)
print(s + ", 10.0.0.9")
PY
}
get xl1 400 -H "X-Forwarded-For: $(long_xff 9.9.9.1)" -F model_name=tiny4s "$B/separate"
get xl2 429 -H "X-Forwarded-For: $(long_xff 9.9.9.2)" -F model_name=tiny4s "$B/separate" \
    && body_has xl2 "10.0.0.9"
stop_term

# ---- an empty DEMIX_API_KEY refuses to start ------------------------------------------------
DEMIX_API_KEY= timeout 10 "$DEMIX" serve --port 0 --data-dir "$WORK/d3" --repo "$GOLDEN/models" \
    2>"$WORK/emptykey.err"
rc=$?
[ $rc -eq 2 ] && grep -q DEMIX_API_KEY "$WORK/emptykey.err" && pass "empty DEMIX_API_KEY: exit 2" \
    || fail "empty DEMIX_API_KEY: exit $rc: $(head -c 300 "$WORK/emptykey.err")"
DEMIX_API_KEY="a key" timeout 10 "$DEMIX" serve --port 0 --data-dir "$WORK/d3" --repo "$GOLDEN/models" \
    2>"$WORK/spacekey.err"
rc=$?
[ $rc -eq 2 ] && pass "DEMIX_API_KEY with a space: exit 2" || fail "DEMIX_API_KEY with a space: exit $rc"

# ---- idle sockets do not lock out the probes --------------------------------------------------
# flood PORT N: N idle connections from 127.0.0.2 (loopback too), held 30 s
# in the background (FLOOD is its pid) until every one is open.
flood() {
    rm -f "$WORK/flood.ready"
    python3 - "$1" "$2" "$WORK/flood.ready" <<'PY' &
import socket, sys, time
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    try:
        s.connect(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        pass
    socks.append(s)
open(sys.argv[3], "w").write("ready\n")
time.sleep(120)
PY
    FLOOD=$!
    PIDS+=("$FLOOD")
    for _ in $(seq 100); do [ -s "$WORK/flood.ready" ] && break; sleep 0.1; done
    sleep 1
}
# 1. From one address: the per-address limit (32 of 256) leaves room.
L4="$WORK/server4.log"
start "$L4" --data-dir "$WORK/d4" --idle-timeout 60
flood "${B##*:}" 300
get flood_health 200 --max-time 15 "$B/health"
get flood_readyz 200 --max-time 15 "$B/readyz"
get flood_livez 200 --max-time 15 "$B/livez"
kill "$FLOOD" 2>/dev/null
wait "$FLOOD" 2>/dev/null
stop_term
# 2. A full main listener (here: no per-address limit, as behind a proxy):
# the probe listener still answers, and serves the probes only.
L5="$WORK/server5.log"
start "$L5" --data-dir "$WORK/d5" --idle-timeout 60 --max-connections 40 \
    --max-connections-per-ip 0 --probe-port 0
P="http://127.0.0.1:$(grep '"event_type":"startup"' "$L5" | grep -o '"probe_port":[0-9]*' | cut -d: -f2)"
flood "${B##*:}" 60
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$B/livez")
[ "$code" != 200 ] && pass "main listener full (HTTP $code)" || fail "the flood did not fill the main listener"
get probe_health 200 --max-time 15 "$P/health"
get probe_readyz 200 --max-time 15 "$P/readyz"
get probe_livez 200 --max-time 15 "$P/livez"
get probe_metrics 200 --max-time 15 "$P/metrics"
get probe_jobs 404 --max-time 15 "$P/jobs"
get probe_sep 404 --max-time 15 -F model_name=x "$P/separate"
kill "$FLOOD" 2>/dev/null
wait "$FLOOD" 2>/dev/null
stop_term
finish
