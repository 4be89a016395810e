#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up, build, run every ctest test,
# then rebuild with AddressSanitizer + UBSan and run the engine, audio, CLI
# and server tests there again (the monitoring stack and the browser test
# exercise configuration and the page, not our memory safety), then with
# ThreadSanitizer for the threaded tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEMIX_GOLDEN_DIR=${DEMIX_GOLDEN_DIR:-$(cd .. && pwd)/shared/golden}

./scripts/setup.sh
ctest --test-dir build --output-on-failure -j2

if [ "${DEMIX_SKIP_ASAN:-0}" != 1 ]; then
  BUILD_DIR=build-asan CMAKE_ARGS="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DDEMIX_SANITIZE=address,undefined" ./scripts/setup.sh
  ctest --test-dir build-asan --output-on-failure -j2 -LE "slow|monitoring|web"
fi

# ThreadSanitizer: the tests that run threads (engine workers, the team's
# helpers, -j tracks, the service). OpenBLAS, FFmpeg and libmicrohttpd are not instrumented:
# ignore_noninstrumented_modules drops their memory accesses and
# tests/tsan.supp lists the rest (third-party frames only). A report makes
# the process exit 66 and is also written under build-tsan/tsan-reports, so
# a race inside a server that a test does not notice still fails the stage.
if [ "${DEMIX_SKIP_TSAN:-0}" != 1 ]; then
  BUILD_DIR=build-tsan CMAKE_ARGS="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DDEMIX_SANITIZE=thread" ./scripts/setup.sh
  rm -rf build-tsan/tsan-reports && mkdir -p build-tsan/tsan-reports
  TSAN_OPTIONS="halt_on_error=1 exitcode=66 ignore_noninstrumented_modules=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp log_path=$PWD/build-tsan/tsan-reports/tsan" \
    ctest --test-dir build-tsan --output-on-failure -j2 -R '^(test_api|test_stream|test_resilience|test_threads|test_team|cli_tracks|server_.*)$' || rc=$?
  if [ -n "$(ls -A build-tsan/tsan-reports)" ]; then
    cat build-tsan/tsan-reports/* >&2
    echo "ThreadSanitizer reported races (above)" >&2
    exit 1
  fi
  [ "${rc:-0}" = 0 ] || exit "$rc"
fi
