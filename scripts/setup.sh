#!/usr/bin/env bash
# Installs the Debian packages demix needs to build and test (only the missing
# ones; needs root or sudo), then configures and builds into ./build.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config strace
      libopenblas-dev libfftw3-dev zlib1g-dev libyaml-dev
      libavformat-dev libavcodec-dev libswresample-dev libavutil-dev
      libcurl4-openssl-dev libssl-dev
      libmicrohttpd-dev libcjson-dev libsqlite3-dev curl
      ffmpeg sox
      prometheus prometheus-alertmanager prometheus-node-exporter
      docker-compose) # validates deploy/'s compose file (tests/monitoring/compose.sh)

# The web page's end-to-end test (tests/web.cmake): Debian's Chromium, driven
# from Node.js by playwright-core (installed below with npm ci).
PKGS+=(chromium nodejs)
command -v npm >/dev/null 2>&1 || PKGS+=(npm)

# Reliability (issue 8): clang + its runtime for the libFuzzer targets and
# ThreadSanitizer, wrk for bench/load.sh.
PKGS+=(clang libclang-rt-14-dev wrk)

# The PostgreSQL job store (issue 13): libpq to build, the server binaries
# for tests/server/pg.sh's throwaway cluster.
PKGS+=(libpq-dev postgresql)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# playwright-core for the web test and @apidevtools/swagger-parser + ajv for the
# OpenAPI test, at the versions pinned in the lock file.
if command -v npm >/dev/null 2>&1 && { [ ! -f tests/web/node_modules/playwright-core/package.json ] ||
    [ ! -f tests/web/node_modules/@apidevtools/swagger-parser/package.json ] ||
    [ ! -f tests/web/node_modules/ajv/package.json ]; }; then
  (cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
fi

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
