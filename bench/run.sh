#!/usr/bin/env bash
# demix benchmark: prints a table of whole-song separation time, realtime
# factor, achieved GFLOP/s against the sgemm peak measured in the same run,
# and peak RSS, for 30 s, 3 min and 10 min songs; then the per-stage
# breakdown of one segment, thread scaling, bag cost and (when
# DEMIX_UPSTREAM points at an upstream Demucs checkout and python3-torch is
# installed) upstream's time on the same input, as run by default and with
# glibc malloc keeping its memory. The per-stage breakdown gives each
# stage's matrix-product GFLOP, their rate against the peak and the time
# outside them, then the product shapes that lose the most time.
# Numbers only, not a test.
#
#   bench/run.sh [MODEL.th | ARCH]   (default: the full-size htdemucs_6s_random fixture;
#                                     ARCH: an architecture bench/build_model.py builds with
#                                     random weights from upstream's code, e.g. hdemucs_mmi;
#                                     needs DEMIX_UPSTREAM and python3-torch)
#   BENCH_BAG=0 bench/run.sh ...      # skip the bag-of-4 measurement
#   BENCH_LENGTHS="30 180" bench/run.sh   # choose the song lengths (seconds)
#   DEMIX_UPSTREAM=DIR BENCH_UPSTREAM_SECONDS=10 bench/run.sh   # upstream on a 10 s song
#   DEMIX_UPSTREAM=DIR BENCH_UPSTREAM_SECONDS="30 180" bench/run.sh   # on both of these
#   BENCH_SCALING_LENGTHS="30 180" bench/run.sh   # thread scaling on both songs
#   BENCH_ISA=avx2 bench/run.sh       # both sides held to AVX2 on an AVX-512 CPU: demix
#                                     built for x86-64-v3 (in build-avx2), upstream's
#                                     oneDNN, ATen and OpenBLAS limited to AVX2
set -euo pipefail
cd "$(dirname "$0")/.."
GOLDEN=${DEMIX_GOLDEN_DIR:-$(cd .. && pwd)/shared/golden}
MODEL=${1:-$GOLDEN/models/htdemucs_6s_random.th}
LENGTHS=${BENCH_LENGTHS:-"30 180 600"}
THREADS=${BENCH_THREADS:-$(nproc)}
ISA=${BENCH_ISA:-native}
case "$ISA" in
native)
  BUILD=${BUILD_DIR:-build}
  [ -x "$BUILD/demix" ] && [ -x "$BUILD/bench/bench_forward" ] || ./scripts/setup.sh >/dev/null ;;
avx2)
  # What an AVX2-only machine (Haswell to Zen 3) runs, on this CPU: demix
  # compiled for x86-64-v3, and every library upstream's time goes through
  # held to AVX2 too (oneDNN's convolutions, ATen's kernels, OpenBLAS)
  BUILD=${BUILD_DIR:-build-avx2}
  [ -x "$BUILD/demix" ] && [ -x "$BUILD/bench/bench_forward" ] ||
    BUILD_DIR="$BUILD" CMAKE_ARGS="-DDEMIX_ARCH=x86-64-v3" ./scripts/setup.sh >/dev/null
  export DNNL_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
  export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} ;;
*) echo "BENCH_ISA: native or avx2, not $ISA" >&2; exit 2 ;;
esac
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ ! -f "$MODEL" ]; then # an architecture name: build it with random weights
  [ -n "${DEMIX_UPSTREAM:-}" ] || { echo "$MODEL: not a file; building it needs DEMIX_UPSTREAM" >&2; exit 2; }
  /usr/bin/python3 bench/build_model.py "$MODEL" "$TMP/$MODEL.th"
  MODEL="$TMP/$MODEL.th"
fi
REPO="$TMP/repo"
mkdir -p "$REPO"
NAME=$(basename "$MODEL" .th)
ln -s "$(realpath "$MODEL")" "$REPO/$NAME.th"

# A music-like test signal: tones, pink noise and a beat, stereo, 44.1 kHz.
make_input() { # seconds path
  ffmpeg -loglevel error -y \
    -f lavfi -i "sine=f=110:d=$1" -f lavfi -i "sine=f=440:d=$1" \
    -f lavfi -i "anoisesrc=c=pink:a=0.1:d=$1" -f lavfi -i "sine=f=60:d=$1:beep_factor=4" \
    -filter_complex "[0][1][2][3]amix=inputs=4,aformat=channel_layouts=stereo,aresample=44100" "$2"
}

# OpenBLAS picks its kernels from the CPU unless OPENBLAS_CORETYPE names
# them; demix and upstream run under the same setting here
[ "$ISA" = native ] || echo "== instruction set held to ${ISA^^} on both sides (demix in $BUILD; upstream: DNNL_MAX_CPU_ISA=${DNNL_MAX_CPU_ISA:-}, ATEN_CPU_CAPABILITY=${ATEN_CPU_CAPABILITY:-}) =="
echo "== $("$BUILD/demix" --version | sed 's/.*OpenBLAS kernels: \([^)]*\)).*/OpenBLAS kernels: \1/')" \
  "(OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}), CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') ==="
echo "== one segment (bench_forward, $THREADS threads) =="
"$BUILD/bench/bench_forward" "$MODEL" "$THREADS" 2 | tee "$TMP/fwd.txt"
PEAK=$(awk '/sgemm peak/ {print $4}' "$TMP/fwd.txt")
GFLOP_SEG=$(awk '/matrix products/ {print $3}' "$TMP/fwd.txt")
SEG=$(awk '/^segment/ {print $2}' "$TMP/fwd.txt")
RULE=$(awk '/^length rule/ {print $3}' "$TMP/fwd.txt")
if [ "$THREADS" != 1 ]; then
  echo
  echo "== one segment on one thread (as each worker of a whole song runs it; its own peak) =="
  "$BUILD/bench/bench_forward" "$MODEL" 1 2
fi

run_song() { # seconds threads -> "wall rss_kb"
  /usr/bin/time -f "%e %M" -o "$TMP/time.txt" "$BUILD/demix" separate -q --repo "$REPO" -n "$NAME" \
    --shifts 0 --threads "$2" --float32 --clip-mode none -o "$TMP/out" "$TMP/in_$1.flac"
  cat "$TMP/time.txt"
}

echo
echo "== whole songs (demix separate, shifts 0, overlap 0.25, $THREADS threads) =="
printf "%-8s %9s %8s %10s %9s %10s\n" length wall_s xRT GFLOP/s %peak peakRSS_MB
for L in $LENGTHS; do
  make_input "$L" "$TMP/in_$L.flac"
  read -r WALL RSS < <(run_song "$L" "$THREADS")
  # matrix products of the whole song: upstream's chunks start every
  # 0.75 segment; a fixed-length network (HTDemucs) evaluates each at the
  # full segment, the others at the chunk's own length (about)
  awk -v L="$L" -v W="$WALL" -v R="$RSS" -v G="$GFLOP_SEG" -v S="$SEG" -v P="$PEAK" -v rule="$RULE" 'BEGIN {
    sl = int(S * 44100); stride = int(0.75 * sl); n = L * 44100; segs = 0;
    for (off = 0; off < n; off += stride) segs += (rule == "fixed" || n - off >= sl) ? 1 : (n - off) / sl;
    gf = segs * G / W;
    printf "%-8s %9.1f %8.3f %10.1f %9.0f %10.0f\n", L "s", W, W / L, gf, 100 * gf / P, R / 1024 }'
done

FIRST=$(echo "$LENGTHS" | awk '{print $1}')
# Thread scaling on BENCH_SCALING_LENGTHS (default: the first length). A
# short song carries a fixed start (model load, the first evaluation's page
# faults, decoding for the statistics) that does not shrink with threads.
for SL in ${BENCH_SCALING_LENGTHS:-$FIRST}; do
[ -f "$TMP/in_$SL.flac" ] || make_input "$SL" "$TMP/in_$SL.flac"
echo
echo "== thread scaling ($SL s song; 1 thread and $THREADS threads in turn, 3 pairs) =="
# A virtual machine's speed drifts by 10-20 % over minutes: runs taken in
# turn and compared pair by pair keep the ratio meaningful.
SCALE=""
for i in 1 2 3; do
  read -r W1 _ < <(run_song "$SL" 1)
  read -r WN _ < <(run_song "$SL" "$THREADS")
  SCALE="$SCALE $W1:$WN"
done
echo "$SCALE" | tr ' ' '\n' | awk -F: -v t="$THREADS" 'NF == 2 {
    r[++n] = $1 / $2; printf "1 thread %.1f s, %d threads %.1f s: %.2fx\n", $1, t, $2, $1 / $2 }
  END { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { x = r[i]; r[i] = r[j]; r[j] = x }
        printf "thread scaling, median of the pairs: %.2fx\n", r[int((n + 1) / 2)] }'
done
[ "$SL" = "$FIRST" ] || read -r WN _ < <(run_song "$FIRST" "$THREADS")

if [ "$THREADS" -ge 2 ]; then
echo
echo "== two songs ($FIRST s each): one after the other on $THREADS threads, then side by side on $((THREADS / 2)) each =="
# what the service does with one worker of all the threads, against two
# workers sharing them (demix serve --workers 2). The machine's speed
# drifts: two rounds in turn (sequential first, then side by side first),
# each ratio read within its round.
two_seq() {
  local t0 t1
  t0=$(date +%s.%N)
  run_song "$FIRST" "$THREADS" >/dev/null
  run_song "$FIRST" "$THREADS" >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
two_side() {
  local t0 t1 side
  t0=$(date +%s.%N)
  run_song "$FIRST" $((THREADS / 2)) >/dev/null &
  side=$!
  /usr/bin/time -f "%e %M" -o "$TMP/time2.txt" "$BUILD/demix" separate -q --repo "$REPO" -n "$NAME" \
    --shifts 0 --threads $((THREADS / 2)) --float32 --clip-mode none -o "$TMP/out2" "$TMP/in_$FIRST.flac"
  wait "$side"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
S1=$(two_seq); P1=$(two_side)
P2=$(two_side); S2=$(two_seq)
awk -v s1="$S1" -v p1="$P1" -v s2="$S2" -v p2="$P2" 'BEGIN {
  printf "one after the other %.1f s, side by side %.1f s (%.2fx); side by side %.1f s, one after the other %.1f s (%.2fx); both rounds: %.2fx\n",
    s1, p1, s1 / p1, p2, s2, s2 / p2, (s1 + s2) / (p1 + p2) }'
fi

if [ "${BENCH_BAG:-1}" != 0 ]; then
echo
echo "== bag of 4 (htdemucs_ft-like: 4 copies of the model, $FIRST s song) =="
for i in 1 2 3 4; do ln -s "$(realpath "$MODEL")" "$REPO/m$i.th"; done
printf "models: ['m1', 'm2', 'm3', 'm4']\n" > "$REPO/bag4.yaml"
/usr/bin/time -f "%e %M" -o "$TMP/time.txt" "$BUILD/demix" separate -q --repo "$REPO" -n bag4 \
  --shifts 0 --threads "$THREADS" --float32 --clip-mode none -o "$TMP/out" "$TMP/in_$FIRST.flac"
read -r WB RB < "$TMP/time.txt"
awk -v a="$WN" -v b="$WB" -v r="$RB" 'BEGIN { printf "bag %.1f s = %.2fx the single model, peak RSS %.0f MB\n", b, b / a, r / 1024 }'
fi

echo
echo "== upstream PyTorch Demucs =="
if [ -n "${DEMIX_UPSTREAM:-}" ] && /usr/bin/python3 -c "import torch" 2>/dev/null; then
  # upstream is slow (about 3x realtime on 2 cores, ten times that as run
  # by default): BENCH_UPSTREAM_SECONDS names the song lengths to time it on
  # (default: the first length; "30 180" for both of the issue's songs)
  FIRSTU=1
  for U in ${BENCH_UPSTREAM_SECONDS:-$FIRST}; do
    [ -f "$TMP/in_$U.flac" ] || make_input "$U" "$TMP/in_$U.flac"
    if [ "$FIRSTU" = 1 ]; then # as run by default: once, on the first length
      FIRSTU=0
      /usr/bin/time -f "%e %M" -o "$TMP/time.txt" /usr/bin/python3 bench/upstream.py "$MODEL" "$TMP/in_$U.flac" "$THREADS"
      read -r WU RU < "$TMP/time.txt"
      read -r WD _ < <(run_song "$U" "$THREADS")
      awk -v a="$WD" -v b="$WU" -v r="$RU" -v u="$U" 'BEGIN { printf "%s s song: upstream %.1f s (peak RSS %.0f MB), demix right after %.1f s: demix is %.1fx faster\n", u, b, r / 1024, a, b / a }'
    fi
    # PyTorch frees and re-allocates its large tensors through glibc malloc,
    # which hands them back to the kernel each time: on a machine where page
    # faults are dear (a virtual machine) that alone can triple upstream's
    # time. The fair comparison is upstream with malloc keeping its memory
    # (no mmap, no trimming), as a user could run it. The machine's speed
    # drifts over minutes (a virtual machine's more so after minutes of
    # full load), so each of the two rounds times demix right before and
    # right after upstream: the ratio is read against each, and against
    # their mean.
    for i in 1 2; do
      read -r WB _ < <(run_song "$U" "$THREADS")
      MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456 \
        /usr/bin/time -f "%e %M" -o "$TMP/time.txt" /usr/bin/python3 bench/upstream.py "$MODEL" "$TMP/in_$U.flac" "$THREADS"
      read -r WT RT < "$TMP/time.txt"
      read -r WD _ < <(run_song "$U" "$THREADS")
      awk -v a="$WD" -v p="$WB" -v b="$WT" -v r="$RT" -v u="$U" 'BEGIN {
        printf "%s s song: upstream with malloc keeping its memory %.1f s (peak RSS %.0f MB); demix right before %.1f s, right after %.1f s: demix is %.1fx / %.1fx faster (%.2fx against their mean)\n",
          u, b, r / 1024, p, a, b / p, b / a, 2 * b / (p + a) }'
    done
  done
else
  echo "skipped: set DEMIX_UPSTREAM to an upstream Demucs checkout and install python3-torch"
fi
