#!/usr/bin/env bash
# compose.sh - deploy/docker-compose.monitoring.yml validates with Debian's
# own docker-compose (1.29, the Python one: no top-level `name:`) and, where
# the plugin is installed, with Compose v2 (`docker compose`). Neither needs
# a Docker daemon for `config`. scripts/setup.sh installs docker-compose.
set -u
: "${SRC:?}"
F="$SRC/deploy/docker-compose.monitoring.yml"
FAILURES=0
fail() { echo "FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
ran=0
if command -v docker-compose >/dev/null 2>&1; then
    ran=1
    if out=$(docker-compose -f "$F" -p demix-monitoring config -q 2>&1); then
        echo "ok: docker-compose $(docker-compose version --short 2>/dev/null) config"
    else
        fail "docker-compose config: $out"
    fi
fi
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    ran=1
    if out=$(docker compose -f "$F" -p demix-monitoring config -q 2>&1); then
        echo "ok: docker compose (v2) config"
    else
        fail "docker compose config: $out"
    fi
fi
[ $ran = 1 ] || fail "neither docker-compose nor docker compose is installed (scripts/setup.sh installs docker-compose)"
if [ "$FAILURES" -ne 0 ]; then echo "$FAILURES check(s) failed" >&2; exit 1; fi
echo "all checks passed"
