#!/usr/bin/env bash
# start-monitoring.sh - start, stop and inspect the demix monitoring stack.
#
#   ./start-monitoring.sh                 menu (1 start, 2 stop, 3 logs, 4 status, 5 restart, 6 clean)
#   ./start-monitoring.sh start|stop|restart|status|clean
#   ./start-monitoring.sh logs [SERVICE]  last lines of one service's log (MON_FOLLOW=1 follows)
#
# With a working Docker (docker info succeeds, compose plugin present) it
# drives deploy/docker-compose.monitoring.yml: demix, Prometheus, Grafana,
# Alertmanager, node-exporter and cAdvisor. Without Docker it runs a native
# stack of background processes with pid files and logs: demix serve and
# Debian's prometheus, prometheus-alertmanager and prometheus-node-exporter,
# on the same ports. Grafana and cAdvisor are not packaged in Debian, so the
# native stack has neither (use compose for the dashboard).
#
# Environment (all optional):
#   MON_MODE=auto|docker|native   force a mode (auto)
#   MON_DIR                       native state: configs, data, logs, pids
#                                 (${XDG_STATE_HOME:-~/.local/state}/demix-monitoring)
#   MON_HOST                      address the native stack listens on (127.0.0.1)
#   DEMIX_PORT PROMETHEUS_PORT ALERTMANAGER_PORT NODE_EXPORTER_PORT  (8000 9090 9093 9100)
#   DEMIX_BIN                     demix binary (build/demix, else demix on PATH)
#   DEMIX_SERVE_ARGS              extra arguments of `demix serve` (e.g. "--repo ./models");
#                                 DEMIX_* variables are read by demix itself
#   MON_SCRAPE_INTERVAL MON_EVAL_INTERVAL   native Prometheus intervals (15s)
#   MON_EXTRA_RULES               more rule files for the native Prometheus (space-separated)
#   MON_PROMETHEUS_ARGS           extra command-line flags for the native Prometheus
#   MON_WAIT                      seconds start waits for the stack to be healthy (60)
#   ALERT_*                       Slack/email settings: deploy/alertmanager/alertmanager.yml
#   DEMIX_ALERTS_TOKEN            shared secret of demix's POST /alerts; Alertmanager
#                                 sends it as a bearer token (render-config.sh)
#   MON_STATE_FILE                where `start` records what it started ($ROOT/.monitoring-state)
#
# `start` records the mode, state folder, address and ports in the state
# file; every other action reads them from there, so `status`, `stop`,
# `logs` and `clean` find the stack without the environment `start` had.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEPLOY=$ROOT/deploy
COMPOSE_FILE=$DEPLOY/docker-compose.monitoring.yml
PROJECT=demix-monitoring
STATE_FILE=${MON_STATE_FILE:-$ROOT/.monitoring-state}
STATE_VARS=(MON_MODE MON_DIR MON_HOST DEMIX_PORT PROMETHEUS_PORT ALERTMANAGER_PORT NODE_EXPORTER_PORT
            GRAFANA_PORT CADVISOR_PORT)
ACTION=${1:-menu}

# KEY=value lines, only the names of STATE_VARS (the file is read, never sourced).
load_state() {
    [ -f "$STATE_FILE" ] || return 0
    local k v
    while IFS='=' read -r k v; do
        case " ${STATE_VARS[*]} " in *" $k "*) printf -v "$k" '%s' "$v"; export "${k?}" ;; esac
    done <"$STATE_FILE"
}
save_state() {
    local v
    (
        umask 077
        for v in "${STATE_VARS[@]}"; do printf '%s=%s\n' "$v" "${!v:-}"; done >"$STATE_FILE.tmp"
    ) && mv "$STATE_FILE.tmp" "$STATE_FILE"
}
case $ACTION in start | -h | --help | help) ;; *) load_state ;; esac

MON_HOST=${MON_HOST:-127.0.0.1}
DEMIX_PORT=${DEMIX_PORT:-8000}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
NODE_EXPORTER_PORT=${NODE_EXPORTER_PORT:-9100}
GRAFANA_PORT=${GRAFANA_PORT:-3000}
MON_DIR=${MON_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/demix-monitoring}
MON_SCRAPE_INTERVAL=${MON_SCRAPE_INTERVAL:-15s}
MON_EVAL_INTERVAL=${MON_EVAL_INTERVAL:-15s}
MON_WAIT=${MON_WAIT:-60}
NATIVE_SERVICES=(demix node-exporter alertmanager prometheus)

say() { printf '%s\n' "$*"; }
err() { printf 'start-monitoring: %s\n' "$*" >&2; }
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy

# ---------------------------------------------------------------- mode
docker_ok() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
        && docker compose version >/dev/null 2>&1
}
MODE=${MON_MODE:-auto}
if [ "$MODE" = auto ]; then
    if docker_ok; then MODE=docker; else MODE=native; fi
fi
case $MODE in docker | native) ;; *) err "MON_MODE must be auto, docker or native"; exit 2 ;; esac
MON_MODE=$MODE

compose() { docker compose -f "$COMPOSE_FILE" -p "$PROJECT" "$@"; }

# ---------------------------------------------------------------- health
http_ok() { curl -fsS --max-time 3 -o /dev/null "$1" 2>/dev/null; }

health_url() {
    case $1 in
    demix) echo "http://$MON_HOST:$DEMIX_PORT/livez" ;;
    prometheus) echo "http://$MON_HOST:$PROMETHEUS_PORT/-/healthy" ;;
    alertmanager) echo "http://$MON_HOST:$ALERTMANAGER_PORT/-/healthy" ;;
    node-exporter) echo "http://$MON_HOST:$NODE_EXPORTER_PORT/metrics" ;;
    grafana) echo "http://$MON_HOST:$GRAFANA_PORT/api/health" ;;
    cadvisor) echo "http://$MON_HOST:${CADVISOR_PORT:-8080}/healthz" ;;
    esac
}

# Prints one line per service; returns non-zero when one is unhealthy.
health_report() {
    local bad=0 svc url
    local svcs=("${NATIVE_SERVICES[@]}")
    [ "$MODE" = docker ] && svcs+=(grafana cadvisor)
    for svc in "${svcs[@]}"; do
        url=$(health_url "$svc")
        if http_ok "$url"; then
            printf '  %-14s healthy    %s\n' "$svc" "$url"
        else
            printf '  %-14s UNHEALTHY  %s\n' "$svc" "$url"
            bad=1
        fi
    done
    # What Prometheus itself sees of its targets.
    local t
    if t=$(curl -fsS --max-time 3 "http://$MON_HOST:$PROMETHEUS_PORT/api/v1/targets?state=active" 2>/dev/null) \
        && command -v python3 >/dev/null; then
        printf '%s' "$t" | python3 -c '
import json, sys
for t in json.load(sys.stdin)["data"]["activeTargets"]:
    print("  target %-14s %-5s %s %s" % (t["labels"].get("job"), t["health"], t["scrapeUrl"], t.get("lastError") or ""))'
    fi
    return $bad
}

wait_healthy() {
    local deadline=$((SECONDS + MON_WAIT)) svc
    local svcs=("${NATIVE_SERVICES[@]}")
    [ "$MODE" = docker ] && svcs+=(grafana)
    for svc in "${svcs[@]}"; do
        until http_ok "$(health_url "$svc")"; do
            if [ $SECONDS -ge $deadline ]; then
                err "$svc is not healthy after ${MON_WAIT}s"
                [ "$MODE" = native ] && tail -n 20 "$MON_DIR/logs/$svc.log" >&2
                return 1
            fi
            if [ "$MODE" = native ] && ! alive "$svc"; then
                err "$svc exited; its log ($MON_DIR/logs/$svc.log) ends with:"
                tail -n 20 "$MON_DIR/logs/$svc.log" >&2
                return 1
            fi
            sleep 0.5
        done
    done
}

# ---------------------------------------------------------------- native
find_bin() { # first of the names found on PATH
    local n
    for n in "$@"; do
        if command -v "$n" >/dev/null 2>&1; then command -v "$n"; return 0; fi
    done
    return 1
}

pidfile() { echo "$MON_DIR/run/$1.pid"; }

# The pid file's process is alive and still the program we started.
alive() {
    local f pid
    f=$(pidfile "$1")
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(cat "$f.cmd" 2>/dev/null || echo .)"
}

launch() { # NAME MATCH CMD...: background process with pid file and log
    local name=$1 match=$2
    shift 2
    if alive "$name"; then
        say "  $name already running (pid $(cat "$(pidfile "$name")"))"
        return 0
    fi
    setsid "$@" >>"$MON_DIR/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$(pidfile "$name")"
    printf '%s' "$match" >"$(pidfile "$name").cmd"
    say "  $name started (pid $!, log $MON_DIR/logs/$name.log)"
}

write_native_configs() {
    local extra="" f
    for f in ${MON_EXTRA_RULES:-}; do extra+="  - $(cd "$(dirname "$f")" && pwd)/$(basename "$f")"$'\n'; done
    cat >"$MON_DIR/prometheus.yml" <<EOF
# Written by start-monitoring.sh (native stack) after deploy/prometheus/prometheus.yml.
global:
  scrape_interval: $MON_SCRAPE_INTERVAL
  evaluation_interval: $MON_EVAL_INTERVAL
  external_labels:
    monitor: demix

rule_files:
  - $DEPLOY/prometheus/alert_rules.yml
$extra
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["$MON_HOST:$ALERTMANAGER_PORT"]

scrape_configs:
  - job_name: demix
    static_configs:
      - targets: ["$MON_HOST:$DEMIX_PORT"]
  - job_name: node-exporter
    static_configs:
      - targets: ["$MON_HOST:$NODE_EXPORTER_PORT"]
  - job_name: prometheus
    static_configs:
      - targets: ["$MON_HOST:$PROMETHEUS_PORT"]
  - job_name: alertmanager
    static_configs:
      - targets: ["$MON_HOST:$ALERTMANAGER_PORT"]
EOF
    DEMIX_ALERTS_URL=${DEMIX_ALERTS_URL:-http://$MON_HOST:$DEMIX_PORT/alerts} \
        sh "$DEPLOY/alertmanager/render-config.sh" "$DEPLOY/alertmanager/alertmanager.yml" \
        "$MON_DIR/alertmanager.yml"
}

native_start() {
    local demix prom am node
    demix=${DEMIX_BIN:-}
    [ -z "$demix" ] && [ -x "$ROOT/build/demix" ] && demix=$ROOT/build/demix
    [ -z "$demix" ] && demix=$(find_bin demix || true)
    prom=$(find_bin prometheus || true)
    am=$(find_bin prometheus-alertmanager alertmanager || true)
    node=$(find_bin prometheus-node-exporter node_exporter || true)
    if [ -z "$demix" ] || [ -z "$prom" ] || [ -z "$am" ] || [ -z "$node" ]; then
        if [ -z "$demix" ]; then err "demix not found: build it (./scripts/setup.sh) or set DEMIX_BIN"; fi
        if [ -z "$prom" ] || [ -z "$am" ] || [ -z "$node" ]; then
            err "Prometheus, Alertmanager or node-exporter not found; on Debian:"
            err "  sudo apt-get install prometheus prometheus-alertmanager prometheus-node-exporter"
        fi
        return 1
    fi
    mkdir -p "$MON_DIR"/{run,logs,prometheus-data,alertmanager-data,demix-data}
    write_native_configs
    if command -v promtool >/dev/null; then
        promtool check config "$MON_DIR/prometheus.yml" >"$MON_DIR/logs/promtool.log" 2>&1 \
            || { err "promtool check config failed:"; cat "$MON_DIR/logs/promtool.log" >&2; return 1; }
    fi
    if command -v amtool >/dev/null; then
        amtool check-config "$MON_DIR/alertmanager.yml" >"$MON_DIR/logs/amtool.log" 2>&1 \
            || { err "amtool check-config failed:"; cat "$MON_DIR/logs/amtool.log" >&2; return 1; }
    fi
    say "Starting the native monitoring stack on $MON_HOST (state in $MON_DIR)"
    # shellcheck disable=SC2086
    launch demix "serve" "$demix" serve --host "$MON_HOST" --port "$DEMIX_PORT" \
        --data-dir "$MON_DIR/demix-data" ${DEMIX_SERVE_ARGS:-}
    launch node-exporter "node" "$node" --web.listen-address="$MON_HOST:$NODE_EXPORTER_PORT"
    launch alertmanager "alertmanager" "$am" --config.file="$MON_DIR/alertmanager.yml" \
        --storage.path="$MON_DIR/alertmanager-data" \
        --web.listen-address="$MON_HOST:$ALERTMANAGER_PORT" --cluster.listen-address=
    launch prometheus "prometheus" "$prom" --config.file="$MON_DIR/prometheus.yml" \
        --storage.tsdb.path="$MON_DIR/prometheus-data" \
        --web.listen-address="$MON_HOST:$PROMETHEUS_PORT" --web.enable-lifecycle ${MON_PROMETHEUS_ARGS:-}
    wait_healthy || return 1
    say ""
    say "demix        http://$MON_HOST:$DEMIX_PORT   (/health, /metrics, /docs)"
    say "Prometheus   http://$MON_HOST:$PROMETHEUS_PORT   (alerts: /alerts, targets: /targets)"
    say "Alertmanager http://$MON_HOST:$ALERTMANAGER_PORT"
    say "Grafana is not packaged in Debian: the native stack has no dashboard."
    say "Run the compose stack (Docker) for Grafana at http://localhost:$GRAFANA_PORT."
}

native_stop() {
    local svc f pid i
    for svc in prometheus alertmanager node-exporter demix; do
        f=$(pidfile "$svc")
        if alive "$svc"; then
            pid=$(cat "$f")
            kill -TERM "$pid" 2>/dev/null || true
            for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
            say "  $svc stopped"
        fi
        rm -f "$f" "$f.cmd"
    done
}

native_status() {
    local svc
    say "Native monitoring stack ($MON_DIR):"
    for svc in "${NATIVE_SERVICES[@]}"; do
        if alive "$svc"; then printf '  %-14s running    pid %s\n' "$svc" "$(cat "$(pidfile "$svc")")"
        else printf '  %-14s stopped\n' "$svc"; fi
    done
    say "Health checks:"
    health_report
}

native_logs() {
    local svc=${1:-}
    if [ -z "$svc" ]; then
        for svc in "${NATIVE_SERVICES[@]}"; do
            say "==> $svc ($MON_DIR/logs/$svc.log)"
            tail -n 10 "$MON_DIR/logs/$svc.log" 2>/dev/null || say "  (no log)"
        done
        return 0
    fi
    [ -f "$MON_DIR/logs/$svc.log" ] || { err "no log for '$svc' (services: ${NATIVE_SERVICES[*]})"; return 1; }
    if [ "${MON_FOLLOW:-0}" = 1 ]; then tail -n 50 -f "$MON_DIR/logs/$svc.log"
    else tail -n 50 "$MON_DIR/logs/$svc.log"; fi
}

native_clean() {
    native_stop
    rm -rf "$MON_DIR"
    say "Removed $MON_DIR (configs, Prometheus and Alertmanager data, demix jobs, logs)."
}

# ---------------------------------------------------------------- docker
docker_start() {
    say "Starting the compose stack ($COMPOSE_FILE)"
    compose up -d --build
    wait_healthy || return 1
    say ""
    say "demix        http://localhost:$DEMIX_PORT"
    say "Grafana      http://localhost:$GRAFANA_PORT  (admin / \$GRAFANA_ADMIN_PASSWORD, default admin)"
    say "Prometheus   http://localhost:$PROMETHEUS_PORT"
    say "Alertmanager http://localhost:$ALERTMANAGER_PORT"
}
docker_status() { compose ps; say "Health checks:"; health_report; }
docker_logs() {
    if [ "${MON_FOLLOW:-0}" = 1 ]; then compose logs --tail 50 -f ${1:+"$1"}
    else compose logs --tail 50 ${1:+"$1"}; fi
}

# ---------------------------------------------------------------- actions
do_start() {
    local rc=0
    if [ "$MODE" = docker ]; then docker_start || rc=$?; else native_start || rc=$?; fi
    # Recorded even after a partial start: stop must find what did start.
    save_state
    return $rc
}
do_stop() {
    if [ "$MODE" = docker ]; then compose down; else native_stop; fi
    say "Stopped."
}
do_status() { if [ "$MODE" = docker ]; then docker_status; else native_status; fi; }
do_logs() { if [ "$MODE" = docker ]; then docker_logs "${1:-}"; else native_logs "${1:-}"; fi; }
do_restart() { do_stop; do_start; }
do_clean() {
    if [ "$MODE" = docker ]; then compose down -v --remove-orphans; say "Removed the stack's containers and volumes."
    else native_clean; fi
    rm -f "$STATE_FILE"
}

menu() {
    say "demix monitoring stack ($MODE mode)"
    say "  1) Start monitoring stack"
    say "  2) Stop monitoring stack"
    say "  3) View logs (demix, prometheus, alertmanager, node-exporter$([ "$MODE" = docker ] && echo ', grafana, cadvisor'))"
    say "  4) Check status (health checks)"
    say "  5) Restart services"
    say "  6) Clean up (remove all data)"
    say "  q) Quit"
    local choice svc yn
    read -r -p "Choice: " choice || exit 0
    case $choice in
    1) do_start ;;
    2) do_stop ;;
    3)
        read -r -p "Service (empty: all): " svc || true
        MON_FOLLOW=$([ -n "$svc" ] && echo 1 || echo 0) do_logs "$svc"
        ;;
    4) do_status ;;
    5) do_restart ;;
    6)
        read -r -p "Remove all monitoring data (metrics history, alerts, jobs)? [y/N] " yn || true
        case $yn in y | Y | yes) do_clean ;; *) say "Nothing removed." ;; esac
        ;;
    q | Q) exit 0 ;;
    *) err "unknown choice '$choice'"; exit 2 ;;
    esac
}

case $ACTION in
start) do_start ;;
stop) do_stop ;;
restart) do_restart ;;
status) do_status ;;
logs) do_logs "${2:-}" ;;
clean) do_clean ;;
menu)
    if [ -t 0 ]; then menu; else sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
    ;;
-h | --help | help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' ;;
*) err "unknown action '$1' (start, stop, restart, status, logs [SERVICE], clean)"; exit 2 ;;
esac
