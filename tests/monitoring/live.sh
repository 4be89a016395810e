# live.sh - the monitoring stack against real processes, on 127.0.0.1 only.
# Starts the native stack with start-monitoring.sh (demix serve with the golden
# tiny models, Debian's Prometheus, Alertmanager and node-exporter) on free
# ports with 1 s scrape/evaluation intervals, generates traffic (a separation,
# 4xx, 429), then checks through Prometheus' HTTP API that:
#   - the demix, node-exporter, prometheus and alertmanager targets are up;
#   - every dashboard query and every rule expression evaluates without error;
#   - every rule group of alert_rules.yml evaluates healthily;
#   - the dashboard only uses metrics the live demix exposes;
#   - an alert forced to fire (test rule, short `for`) travels through the
#     real Alertmanager to demix's POST /alerts and is counted in
#     alerts_received_total.
# Environment (tests/monitoring.cmake): DEMIX GOLDEN WORK SRC
set -u
: "${DEMIX:?}" "${GOLDEN:?}" "${WORK:?}" "${SRC:?}"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
rm -rf "$WORK" && mkdir -p "$WORK"
FAILURES=0
fail() { echo "FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
pass() { echo "ok: $*"; }

# Four free loopback ports (bound then released; the window for a race is tiny).
read -r DEMIX_PORT PROMETHEUS_PORT ALERTMANAGER_PORT NODE_EXPORTER_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
export MON_MODE=native MON_HOST=127.0.0.1 MON_DIR="$WORK/stack" MON_WAIT=60
# Where start records the stack: status and stop below get nothing else.
export MON_STATE_FILE="$WORK/monitoring-state"
# POST /alerts takes a shared secret; Alertmanager sends it (render-config.sh).
export DEMIX_ALERTS_TOKEN="live-$$-secret"
export DEMIX_PORT PROMETHEUS_PORT ALERTMANAGER_PORT NODE_EXPORTER_PORT
export DEMIX_BIN="$DEMIX" MON_SCRAPE_INTERVAL=1s MON_EVAL_INTERVAL=1s
# A small burst so that the rate limiter answers 429 quickly.
export DEMIX_SERVE_ARGS="--repo $GOLDEN/models --workers 1 --rate-limit 6 --rate-burst 3 --metrics-interval 1"

# The forced alert: fires 2 s after Prometheus starts, severity critical so
# that Alertmanager routes it at once (group_wait 0s) to demix's webhook.
cat >"$WORK/pipeline_rules.yml" <<'EOF'
groups:
  - name: monitoring-pipeline-test
    rules:
      - alert: MonitoringPipelineTest
        expr: vector(1)
        for: 2s
        labels:
          severity: critical
        annotations:
          summary: "Test alert of tests/monitoring/live.sh"
          description: "Forced to fire to prove Prometheus -> Alertmanager -> demix POST /alerts."
EOF
export MON_EXTRA_RULES="$WORK/pipeline_rules.yml"
# Prometheus drops an alert that fires before it has discovered Alertmanager
# and only resends after --rules.alert.resend-delay (1 min by default): resend
# quickly here so the test does not depend on that race.
export MON_PROMETHEUS_ARGS="--rules.alert.resend-delay=2s"

STACK="$SRC/start-monitoring.sh"
# The script with none of the environment start had (issue 12, bug 12).
bare() { env -i PATH="$PATH" HOME="$HOME" MON_STATE_FILE="$MON_STATE_FILE" "$STACK" "$@"; }
cleanup() {
    "$STACK" stop >/dev/null 2>&1
    # Belt and braces: anything whose pid file survived.
    for f in "$MON_DIR"/run/*.pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
}
trap cleanup EXIT

if ! timeout 120 "$STACK" start; then
    echo "the native stack did not start" >&2
    for l in "$MON_DIR"/logs/*.log; do echo "== $l" >&2; tail -n 20 "$l" >&2; done
    exit 1
fi
pass "native stack started"
D="http://127.0.0.1:$DEMIX_PORT"
P="http://127.0.0.1:$PROMETHEUS_PORT"

# promql EXPR -> prints "success <n results>" or "error <message>"
promql() {
    curl -sS --max-time 10 "$P/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception as e:
    print("error unparsable answer:", e); sys.exit()
if d.get("status") == "success":
    r = d["data"]["result"]
    print("success", len(r) if isinstance(r, list) else 1, json.dumps(r)[:300])
else:
    print("error", d.get("errorType"), d.get("error"))'
}

# ---- traffic
code() { curl -sS --max-time 120 -o "$WORK/last.body" -w '%{http_code}' "$@"; }
c=$(code -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=tiny4s "$D/separate?wait=true")
[ "$c" = 200 ] && pass "separation done" || fail "separation: HTTP $c $(head -c 300 "$WORK/last.body")"
c=$(code "$D/jobs/0123456789abcdef0123456789abcdef")
[ "$c" = 404 ] && pass "404 generated" || fail "unknown job: HTTP $c"
c=$(code -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=nosuch "$D/separate")
[ "$c" = 400 ] && pass "400 generated" || fail "unknown model: HTTP $c"
got429=0
for _ in $(seq 12); do
    c=$(code -F model_name=tiny4s "$D/separate")
    [ "$c" = 429 ] && { got429=1; break; }
done
[ $got429 = 1 ] && pass "429 generated" || fail "no 429 after a burst of POST /separate"
curl -sS --max-time 10 "$D/metrics" >"$WORK/metrics.txt"

# ---- Prometheus sees the targets and the traffic
wait_query() { # EXPR: until it returns a non-empty result (max 30 s)
    local r
    for _ in $(seq 60); do
        r=$(promql "$1")
        case $r in "success 0"* | error*) sleep 0.5 ;; *) echo "$r"; return 0 ;; esac
    done
    echo "$r"
    return 1
}
for job in demix node-exporter prometheus alertmanager; do
    if wait_query "up{job=\"$job\"} == 1" >/dev/null; then pass "target $job is up"
    else fail "target $job is not up: $(promql "up{job=\"$job\"}")"; fi
done
wait_query 'separations_total{job="demix",model="tiny4s",status="done"} >= 1' >/dev/null \
    && pass "Prometheus scraped the separation" || fail "separations_total not seen by Prometheus"
wait_query 'sum(http_requests_total{job="demix",status=~"4.."}) >= 2' >/dev/null \
    && pass "Prometheus scraped the 4xx" || fail "4xx requests not seen by Prometheus"
[ $got429 = 1 ] && { wait_query 'sum(rate_limited_requests_total{job="demix"}) >= 1' >/dev/null \
    && pass "Prometheus scraped the 429" || fail "rate_limited_requests_total not seen by Prometheus"; }
sleep 3 # a few evaluations of every rule group

# ---- every dashboard query and every rule expression evaluates
python3 "$SRC/tests/monitoring/promql_check.py" evaluate "$P" \
    "$SRC/deploy/grafana/dashboards/overview.json" "$SRC/deploy/prometheus/alert_rules.yml" \
    && pass "every dashboard query and rule expression evaluates" || fail "expressions fail to evaluate"
# Dashboard panels that must show data after this traffic.
for q in 'up{job="demix"}' 'sum(active_sessions{job="demix"})' \
    'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="demix"}[1m])))' \
    'max(cpu_usage_percent{job="demix"})' 'max(memory_percent{job="demix"})' \
    'max(100 * disk_usage_bytes{job="demix"} / (disk_usage_bytes{job="demix"} + disk_free_bytes{job="demix"}))' \
    'sum by (type, endpoint) (increase(errors_total{job="demix"}[1h]))' \
    'sum by (model, status) (increase(separations_total{job="demix"}[1h]))'; do
    r=$(promql "$q")
    case $r in "success 0"* | error*) fail "no data for dashboard query $q: $r" ;; esac
done
pass "dashboard panels have data"

# Rule groups as Prometheus evaluates them: loaded, healthy, no error.
curl -sS --max-time 10 "$P/api/v1/rules" >"$WORK/rules.json"
python3 - "$WORK/rules.json" "$SRC/deploy/prometheus/alert_rules.yml" <<'EOF' || fail "rule groups unhealthy"
import json, re, sys
d = json.load(open(sys.argv[1]))["data"]["groups"]
want = set(re.findall(r"^\s+- alert:\s*(\S+)", open(sys.argv[2]).read(), re.M))
have, bad = set(), []
for g in d:
    for r in g["rules"]:
        if r.get("type") == "alerting":
            have.add(r["name"])
        if r.get("health") != "ok" or r.get("lastError"):
            bad.append("%s/%s: health %s %s" % (g["name"], r["name"], r.get("health"), r.get("lastError", "")))
for b in bad:
    print("FAIL: rule " + b)
missing = want - have
if missing:
    print("FAIL: alerts not loaded: " + " ".join(sorted(missing)))
print("rules: %d alerting rules loaded, %d unhealthy" % (len(have), len(bad)))
sys.exit(1 if bad or missing else 0)
EOF

# The dashboard uses only metrics the live service exposes.
python3 "$SRC/tests/monitoring/promql_check.py" dashboard "$SRC/deploy/grafana/dashboards/overview.json" \
    --metrics "$WORK/metrics.txt" || fail "dashboard refers to metrics demix does not expose"

# ---- the forced alert reaches demix through Alertmanager
c=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -d '{}' "$D/alerts")
case $c in
404 | 405) fail "demix has no POST /alerts route yet (HTTP $c): the Alertmanager webhook cannot be delivered" ;;
401) pass "POST /alerts without the token: 401" ;;
*) fail "POST /alerts without the token: HTTP $c, expected 401" ;;
esac
seen=0
for _ in $(seq 60); do
    if curl -sS --max-time 5 "$D/metrics" | grep -q '^alerts_received_total{[^}]*alertname="MonitoringPipelineTest"[^}]*status="firing"'; then
        seen=1
        break
    fi
    sleep 0.5
done
if [ $seen = 1 ]; then
    pass "MonitoringPipelineTest went Prometheus -> Alertmanager -> demix (alerts_received_total)"
    curl -sS --max-time 5 "$D/metrics" | grep '^alerts_received_total' | grep MonitoringPipelineTest
    grep -q '"event_type":"alert".*MonitoringPipelineTest\|MonitoringPipelineTest.*"event_type":"alert"' \
        "$MON_DIR/logs/demix.log" && pass "demix logged the alert" || fail "no alert log line in demix's log"
else
    fail "MonitoringPipelineTest never reached alerts_received_total"
    echo "--- Prometheus alerts:" >&2; curl -sS --max-time 5 "$P/api/v1/alerts" | head -c 1000 >&2; echo >&2
    echo "--- Alertmanager alerts:" >&2
    curl -sS --max-time 5 "http://127.0.0.1:$ALERTMANAGER_PORT/api/v2/alerts" | head -c 1000 >&2; echo >&2
    echo "--- alertmanager log:" >&2; tail -n 20 "$MON_DIR/logs/alertmanager.log" >&2
fi
curl -sS --max-time 5 "http://127.0.0.1:$ALERTMANAGER_PORT/metrics" \
    | grep -E '^alertmanager_notifications_(total|failed_total)\{integration="webhook"' || true

# ---- status and stop through the script, without start's environment
bare status >"$WORK/status.txt" 2>&1 && pass "start-monitoring.sh status: all healthy" \
    || { fail "start-monitoring.sh status reports a problem"; cat "$WORK/status.txt" >&2; }
n=$(grep -c ' running ' "$WORK/status.txt")
[ "$n" = 4 ] && pass "status finds the 4 services with no environment" \
    || { fail "status without the environment found $n of 4 services"; cat "$WORK/status.txt" >&2; }
bare stop >/dev/null
for s in demix prometheus alertmanager node-exporter; do
    [ -f "$MON_DIR/run/$s.pid" ] && fail "pid file of $s left after stop"
done
curl -s --max-time 2 -o /dev/null "$P/-/healthy" && fail "Prometheus still answers after stop"
trap - EXIT
cleanup

if [ "$FAILURES" -ne 0 ]; then echo "$FAILURES check(s) failed" >&2; exit 1; fi
echo "all checks passed"
