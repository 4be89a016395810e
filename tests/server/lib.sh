# lib.sh - helpers shared by the `demix serve` integration tests: start a
# real server on a free loopback port (--port 0, read back from its startup
# log line), curl wrappers that record status, headers and body, and
# cleanup of every server started (trap on EXIT). Source it after setting
# DEMIX, GOLDEN and WORK.
set -u
: "${DEMIX:?}" "${GOLDEN:?}" "${WORK:?}"
rm -rf "$WORK" && mkdir -p "$WORK"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
FAILURES=0
fail() { echo "FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
pass() { echo "ok: $*"; }
PIDS=()
# Every server started here gets the test gate (src/server/runner.c): while
# $HOLD exists, running jobs wait at their next progress report.
HOLD="$WORK/hold"
export DEMIX_TEST_HOLD="$HOLD"
hold() { touch "$HOLD"; }
release() { rm -f "$HOLD"; }
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap cleanup EXIT

# start LOG ARGS... : starts `demix serve ARGS` logging to LOG; sets PID, B.
start() { start_as serve "$@"; }

# start_as SUBCOMMAND LOG ARGS... : the same for `demix SUBCOMMAND` (serve,
# worker: both print the port in their startup log line).
start_as() {
    local sub=$1 log=$2; shift 2
    # Only this server's startup line counts: earlier ones may share the log.
    local n0=0
    [ -f "$log" ] && n0=$(wc -l <"$log")
    # NO_REPO=1: no --repo, so the server uses the model cache (DEMIX_MODELS).
    local repo=(--repo "$GOLDEN/models")
    [ -n "${NO_REPO:-}" ] && repo=()
    "$DEMIX" "$sub" --host 127.0.0.1 --port 0 "${repo[@]}" "$@" 2>>"$log" &
    PID=$!
    PIDS+=("$PID")
    # up to 30 s times ${TIME_SCALE:-1} (a sanitized start under load)
    local port= end=$((SECONDS + 30 * ${TIME_SCALE:-1}))
    while [ "$SECONDS" -le "$end" ]; do
        port=$(tail -n +$((n0 + 1)) "$log" | grep '"event_type":"startup"' | grep -o '"port":[0-9]*' | head -n1 | cut -d: -f2)
        [ -n "$port" ] && break
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then echo "server did not start:" >&2; cat "$log" >&2; exit 1; fi
    B="http://127.0.0.1:$port"
}

# stop_term [SECONDS]: SIGTERM, then wait for the exit (fail after SECONDS
# times ${TIME_SCALE:-1}).
stop_term() {
    kill -TERM "$PID"
    for _ in $(seq $((${1:-30} * 10 * ${TIME_SCALE:-1}))); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$PID" 2>/dev/null && fail "server still running after SIGTERM"
    wait "$PID" 2>/dev/null
}

# get NAME WANT_STATUS CURL_ARGS... : body in $WORK/NAME.body, headers in .hdr
get() {
    local name=$1 want=$2; shift 2
    local code
    code=$(curl -sS --max-time 120 -o "$WORK/$name.body" -D "$WORK/$name.hdr" -w '%{http_code}' "$@")
    if [ "$code" != "$want" ]; then
        fail "$name: HTTP $code, expected $want ($*)"; head -c 600 "$WORK/$name.body" | sed 's/^/    /' >&2; echo >&2
        return 1
    fi
    pass "$name: HTTP $code"
}
body_has() { grep -q -- "$2" "$WORK/$1.body" || fail "$1: body lacks $2: $(head -c 400 "$WORK/$1.body")"; }
hdr() { grep -i "^$2:" "$WORK/$1.hdr" | head -n1 | cut -d: -f2- | tr -d ' \r'; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$WORK/$1.body" "$2"; }

# wait_job ID [TRIES]: polls until the job ends; prints its status. The
# wait is a wall-clock deadline of TRIES/5 s (TRIES polls used to take at
# least that), times ${TIME_SCALE:-1}: a poll (curl + python3) costs more
# on a slow or sanitized machine, so counting polls shortened the wait
# exactly where jobs run longest.
wait_job() {
    local st= end=$((SECONDS + ${2:-600} * ${TIME_SCALE:-1} / 5))
    while [ "$SECONDS" -le "$end" ]; do
        curl -sS --max-time 10 -o "$WORK/wait.body" "$B/jobs/$1" ${AUTH:+-H "Authorization: Bearer $AUTH"} \
            || { echo "server gone" >"$WORK/wait.body"; break; }
        st=$(json wait 'd.get("status", "")' 2>/dev/null)
        case $st in done|failed|cancelled) break ;; esac
        sleep 0.1
    done
    echo "$st"
}

# err NAME STATUS CODE CURL_ARGS...: the status, and a strict-UTF-8 JSON body
# {"error": {code, message, request_id}} with that code, a message and a
# request id of at least ${ERR_MIN_ID_LEN:-1} characters.
err() {
    local name=$1 want=$2 code=$3; shift 3
    get "$name" "$want" "$@" || return 1
    python3 - "$WORK/$name.body" "$code" "${ERR_MIN_ID_LEN:-1}" <<'PY' || fail "$name: bad error body: $(head -c 300 "$WORK/$name.body")"
import json, sys
e = json.loads(open(sys.argv[1], "rb").read().decode("utf-8"))["error"]
assert e["code"] == sys.argv[2], e
assert e["message"] and len(e["request_id"]) >= int(sys.argv[3]), e
PY
}

# empty_soon DIR: whether DIR is (or within 10 s times ${TIME_SCALE:-1}
# becomes) empty: a refused or cut upload's file is removed when the server
# finishes the request, which may come after the client has its answer.
empty_soon() {
    local end=$((SECONDS + 10 * ${TIME_SCALE:-1}))
    until [ -z "$(ls -A "$1")" ]; do
        [ "$SECONDS" -ge "$end" ] && return 1
        sleep 0.1
    done
}

# wait_health NAME PATTERN SECONDS: polls GET /health (into NAME's files)
# until its body has PATTERN; fails after SECONDS times ${TIME_SCALE:-1}.
# For a state that comes with time (a breaker's open period ending) rather
# than a fixed sleep that a slow machine can overrun or fall short of.
wait_health() {
    local end=$((SECONDS + $3 * ${TIME_SCALE:-1}))
    while :; do
        curl -sS --max-time 10 -o "$WORK/$1.body" "$B/health" && grep -q -- "$2" "$WORK/$1.body" \
            && { pass "$1: /health shows $2"; return 0; }
        [ "$SECONDS" -ge "$end" ] && break
        sleep 0.1
    done
    fail "$1: /health never showed $2: $(head -c 300 "$WORK/$1.body")"
    return 1
}

# wait_running NAME ID: polls GET /jobs/ID (as NAME) until the job runs;
# fails after 30 s times ${TIME_SCALE:-1}.
wait_running() {
    local end=$((SECONDS + 30 * ${TIME_SCALE:-1}))
    while :; do
        get "$1" 200 "$B/jobs/$2" >/dev/null
        [ "$(json "$1" 'd["status"]')" = running ] && return 0
        [ "$SECONDS" -ge "$end" ] && break
        sleep 0.05
    done
    fail "$1: job $2 not running after $((30 * ${TIME_SCALE:-1})) s: $(head -c 300 "$WORK/$1.body")"
    return 1
}

finish() {
    if [ "$FAILURES" -ne 0 ]; then echo "$FAILURES check(s) failed" >&2; exit 1; fi
    echo "all checks passed"
}
