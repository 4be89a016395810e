#!/usr/bin/env bash
# compose.sh - deploy/docker-compose.monitoring.yml (the single node) and
# deploy/docker-compose.cluster.yml (PostgreSQL, API nodes, workers) validate with Debian's
# own docker-compose (1.29, the Python one: no top-level `name:`) and, where
# the plugin is installed, with Compose v2 (`docker compose`). Neither needs
# a Docker daemon for `config`. scripts/setup.sh installs docker-compose.
set -u
: "${SRC:?}"
FAILURES=0
fail() { echo "FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
# check FILE PROJECT: `config` of FILE with each Compose found.
check() {
    local f=$1 p=$2 out
    if command -v docker-compose >/dev/null 2>&1; then
        ran=1
        if out=$(docker-compose -f "$f" -p "$p" config -q 2>&1); then
            echo "ok: docker-compose $(docker-compose version --short 2>/dev/null) config $(basename "$f")"
        else
            fail "docker-compose config $(basename "$f"): $out"
        fi
    fi
    if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
        ran=1
        if out=$(docker compose -f "$f" -p "$p" config -q 2>&1); then
            echo "ok: docker compose (v2) config $(basename "$f")"
        else
            fail "docker compose config $(basename "$f"): $out"
        fi
    fi
}
ran=0
check "$SRC/deploy/docker-compose.monitoring.yml" demix-monitoring
check "$SRC/deploy/docker-compose.cluster.yml" demix-cluster
# The cluster file: a postgres service with a healthcheck, a worker that
# can scale (no container_name, no fixed host port) and API nodes with
# --no-workers, as docs/DEPLOY.md describes. Debian's python3 has yaml
# (docker-compose needs python3-yaml).
if command -v docker-compose >/dev/null 2>&1; then
    docker-compose -f "$SRC/deploy/docker-compose.cluster.yml" -p demix-cluster config 2>/dev/null \
        | /usr/bin/python3 -c '
import sys, yaml
c = yaml.safe_load(sys.stdin)["services"]
assert "healthcheck" in c["postgres"] and c["postgres"]["image"].startswith("postgres:"), "postgres service"
w = c["worker"]
assert w["command"][0] == "worker" and "container_name" not in w and "ports" not in w, "worker service scalable"
assert "--no-workers" in c["api"]["command"] and "container_name" not in c["api"], "api nodes"
for s in ("api", "worker"):
    assert c[s]["environment"]["DEMIX_STORE"].startswith("postgresql://"), s + " store"
    assert any(str(v).split(":")[1:2] == ["/var/lib/demix"] for v in c[s]["volumes"]), s + " shared data"
' && echo "ok: cluster services" || fail "cluster compose file lacks postgres/worker/api as documented"
fi
[ $ran = 1 ] || fail "neither docker-compose nor docker compose is installed (scripts/setup.sh installs docker-compose)"
if [ "$FAILURES" -ne 0 ]; then echo "$FAILURES check(s) failed" >&2; exit 1; fi
echo "all checks passed"
