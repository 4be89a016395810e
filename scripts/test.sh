#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up, build, run every ctest test,
# then rebuild with AddressSanitizer + UBSan and run the engine, audio, CLI
# and server tests there again (the monitoring stack and the browser test
# exercise configuration and the page, not our memory safety).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEMIX_GOLDEN_DIR=${DEMIX_GOLDEN_DIR:-$(cd .. && pwd)/shared/golden}

./scripts/setup.sh
ctest --test-dir build --output-on-failure -j2

if [ "${DEMIX_SKIP_ASAN:-0}" != 1 ]; then
  BUILD_DIR=build-asan CMAKE_ARGS="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DDEMIX_SANITIZE=address,undefined" ./scripts/setup.sh
  ctest --test-dir build-asan --output-on-failure -j2 -LE "slow|monitoring|web"
fi
