#!/usr/bin/env bash
# RoFormer benchmark (issue 14): the full-size viperx BS-RoFormer
# (configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml: dim 512, depth
# 12) and Kimberley Jensen Mel-Band RoFormer
# (configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml: dim 384,
# depth 6) with random weights in the real checkpoint layout, built with
# MSST's own classes (bench/roformer_build.py); then, per model:
#   - one chunk (bench/bench_forward): time, GFLOP of matrix products and
#     the sgemm peak of this machine measured in the same run;
#   - whole songs (`demix separate --model-config --checkpoint`, MSST's
#     chunking): wall time, realtime factor, GFLOP/s and share of the sgemm
#     peak, peak RSS (/usr/bin/time -f %M), which must stay flat in length;
#   - the reference (MSST's demix() in PyTorch, batch_size 1, its config's
#     num_overlap; bench/roformer_ref.py) and demix on the same input, in
#     the same run.
# Numbers only, not a test. Full-size runs take long (BS-RoFormer: about
# 1.09 TFLOP per second of audio and pass, twice that with num_overlap 2).
#
#   DEMIX_MSST=DIR bench/roformer.sh      DIR: a Music-Source-Separation-Training checkout
#   BENCH_LENGTHS="30 180"                song lengths in seconds (default "30 180")
#   BENCH_REF_SECONDS=10                  the reference on a shorter song (default: the first length)
#   BENCH_MODELS="bs mel"                 which models (default both)
#   BENCH_CONFIGS="a.yaml b.yaml"         other MSST configs instead (e.g. smaller ones to try the script)
#   BENCH_THREADS=N                       threads for demix and torch (default nproc)
#   BENCH_DIR=DIR                         where the built models are kept (default build/bench_roformer)
#   BENCH_NO_REF=1                        skip the reference
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DEMIX_MSST:?set DEMIX_MSST to a ZFTurbo/Music-Source-Separation-Training checkout}"
BUILD=${BUILD_DIR:-build}
LENGTHS=${BENCH_LENGTHS:-"30 180"}
THREADS=${BENCH_THREADS:-$(nproc)}
DIR=${BENCH_DIR:-$BUILD/bench_roformer}
PY=/usr/bin/python3
export DEMIX_MSST
[ -x "$BUILD/demix" ] && [ -x "$BUILD/bench/bench_forward" ] || ./scripts/setup.sh >/dev/null
mkdir -p "$DIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if [ -n "${BENCH_CONFIGS:-}" ]; then
  CONFIGS=$BENCH_CONFIGS
else
  CONFIGS=
  for m in ${BENCH_MODELS:-bs mel}; do
    case $m in
      bs) CONFIGS="$CONFIGS $DEMIX_MSST/configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml" ;;
      mel) CONFIGS="$CONFIGS $DEMIX_MSST/configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml" ;;
      *) echo "BENCH_MODELS: unknown model '$m' (bs or mel)" >&2; exit 2 ;;
    esac
  done
fi

# A music-like test signal: tones, pink noise and a beat, stereo, 44.1 kHz.
make_input() { # seconds path
  [ -f "$2" ] && return 0
  ffmpeg -loglevel error -y \
    -f lavfi -i "sine=f=110:d=$1" -f lavfi -i "sine=f=440:d=$1" \
    -f lavfi -i "anoisesrc=c=pink:a=0.1:d=$1" -f lavfi -i "sine=f=60:d=$1:beep_factor=4" \
    -filter_complex "[0][1][2][3]amix=inputs=4,aformat=channel_layouts=stereo,aresample=44100" "$2"
}

# chunk_size num_overlap sample_rate of a config (MSST's rules: inference.chunk_size, else audio's)
chunking() {
  $PY - "$1" <<'PY'
import sys, yaml
c = yaml.load(open(sys.argv[1]), Loader=yaml.FullLoader)
cs = c["inference"].get("chunk_size", c["audio"]["chunk_size"])
print(cs, c["inference"]["num_overlap"], c["audio"].get("sample_rate", 44100))
PY
}

run_demix() { # yaml ckpt input -> "wall rss_kb"
  /usr/bin/time -f "%e %M" -o "$TMP/time.txt" "$BUILD/demix" separate -q --model-config "$1" \
    --checkpoint "$2" --threads "$THREADS" --float32 --clip-mode none -o "$TMP/out" "$3"
  cat "$TMP/time.txt"
}

for CFG in $CONFIGS; do
  NAME=$(basename "$CFG" .yaml)
  STEM="$DIR/$NAME"
  echo "=== $NAME ==="
  if [ ! -f "$STEM.ckpt" ] || [ ! -f "$STEM.yaml" ]; then
    $PY bench/roformer_build.py "$CFG" "$STEM"
  fi
  read -r C OV SR < <(chunking "$STEM.yaml")
  echo "-- one chunk ($C samples; bench_forward, $THREADS threads) --"
  "$BUILD/bench/bench_forward" "$STEM.yaml" "$THREADS" 1 | tee "$TMP/fwd.txt" | head -3
  PEAK=$(awk '/sgemm peak/ {print $4}' "$TMP/fwd.txt")
  GFLOP_CHUNK=$(awk '/matrix products/ {print $3}' "$TMP/fwd.txt")
  awk -v g="$GFLOP_CHUNK" -v c="$C" -v sr="$SR" -v ov="$OV" 'BEGIN {
    printf "cost: %.0f GFLOP per second of audio and pass (x%d with num_overlap %d)\n", g * sr / c, ov, ov }'

  echo "-- whole songs (demix separate, MSST chunking: chunk $C, num_overlap $OV; $THREADS threads) --"
  printf "%-8s %9s %8s %10s %7s %11s\n" length wall_s xRT GFLOP/s %peak peakRSS_MB
  declare -A SONG_WALL=() SONG_RSS=()
  for L in $LENGTHS; do
    make_input "$L" "$TMP/in_$L.flac"
    read -r WALL RSS < <(run_demix "$STEM.yaml" "$STEM.ckpt" "$TMP/in_$L.flac")
    SONG_WALL[$L]=$WALL; SONG_RSS[$L]=$RSS
    awk -v L="$L" -v W="$WALL" -v R="$RSS" -v G="$GFLOP_CHUNK" -v C="$C" -v OV="$OV" -v SR="$SR" -v P="$PEAK" 'BEGIN {
      n = L * SR; step = int(C / OV); border = C - step;
      plen = n + ((n > 2 * border && border > 0) ? 2 * border : 0);
      chunks = int((plen + step - 1) / step); gf = chunks * G / W;
      printf "%-8s %9.1f %8.3f %10.1f %6.0f%% %11.0f\n", L "s", W, W / L, gf, 100 * gf / P, R / 1024 }'
  done
  ls -l "$STEM.ckpt" | awk '{ printf "weights: %.0f MB on disk (fp32)\n", $5 / 1048576 }'

  echo "-- reference (MSST demix(), PyTorch $($PY -c 'import torch; print(torch.__version__)'), batch_size 1) --"
  if [ -n "${BENCH_NO_REF:-}" ]; then
    echo "skipped (BENCH_NO_REF)"
    continue
  fi
  U=${BENCH_REF_SECONDS:-$(echo "$LENGTHS" | awk '{print $1}')}
  make_input "$U" "$TMP/in_$U.flac"
  if [ -n "${SONG_WALL[$U]:-}" ]; then # measured above, and its stems are still there
    WD=${SONG_WALL[$U]}; RD=${SONG_RSS[$U]}
  else
    read -r WD RD < <(run_demix "$STEM.yaml" "$STEM.ckpt" "$TMP/in_$U.flac")
  fi
  /usr/bin/time -f "%e %M" -o "$TMP/time.txt" $PY bench/roformer_ref.py "$STEM.yaml" "$STEM.ckpt" \
    "$TMP/in_$U.flac" "$THREADS" "$TMP/ref.npy" 2>"$TMP/ref.err" | tail -1 ||
    { cat "$TMP/ref.err" >&2; exit 1; }
  read -r WU RU < "$TMP/time.txt"
  # the two outputs agree (a check of the reference run, not a golden test)
  STEMS=$(find "$TMP/out/$NAME/in_$U" -name '*.wav' | sort)
  DIFF=$($PY - "$TMP/ref.npy" "$STEMS" <<'PY'
import subprocess, sys
import numpy as np
ref = np.load(sys.argv[1])
files = sys.argv[2].split()
# demix writes the config's stems; the reference's dict is in the same order
outs = []
for f in files:
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", f, "-f", "f32le", "-"], check=True,
                         capture_output=True).stdout
    outs.append(np.frombuffer(raw, dtype=np.float32).reshape(-1, ref.shape[1]).T)
best = min(np.abs(np.stack(outs) - ref[list(p)]).max() for p in [range(len(files))])
print(f"{best / max(np.abs(ref).max(), 1e-30):.1e}")
PY
)
  awk -v u="$U" -v a="$WD" -v ra="$RD" -v b="$WU" -v rb="$RU" -v d="$DIFF" 'BEGIN {
    printf "%s s song: reference %.1f s (peak RSS %.0f MB), demix %.1f s (peak RSS %.0f MB): demix is %.1fx faster; max|demix-ref|/max|ref| = %s\n",
      u, b, rb / 1024, a, ra / 1024, b / a, d }'
done
