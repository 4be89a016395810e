#!/usr/bin/env bash
# Quick start: set up and build, then separate the 12 s reference mix with
# the tiny fixture model (real weights cannot be bundled). With a real model,
# use e.g. `./build/demix separate -n htdemucs song.mp3`.
set -euo pipefail
cd "$(dirname "$0")/.."
GOLDEN=${DEMIX_GOLDEN_DIR:-$(cd .. && pwd)/shared/golden}
./scripts/setup.sh
./build/demix separate --repo "$GOLDEN/models" -n tiny4s --shifts 0 -o separated \
  "$GOLDEN/inputs/mix_12s.wav"
ls -l separated/tiny4s/mix_12s/
