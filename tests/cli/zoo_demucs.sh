#!/usr/bin/env bash
# zoo_demucs.sh - `demix separate` end to end (decode -> time-domain Demucs ->
# encode) on the zoo's mix_50s.wav with mdx_demucs_a_tiny: float32 WAV, no
# clipping, no shifts, compared with upstream's whole-track separator output
# (every 97th sample). Then mdx_q_demucs_tiny (a DiffQ state) runs through
# the same path.
. "$(dirname "$0")/lib.sh"
ZOO="$GOLDEN/zoo"
if expect_rc separate 0 separate --repo "$ZOO/models" -n mdx_demucs_a_tiny --float32 --clip-mode none \
        --shifts 0 "$ZOO/inputs/mix_50s.wav" -o "$WORK/out"; then
    files=()
    for s in drums bass other vocals; do files+=("$WORK/out/mdx_demucs_a_tiny/mix_50s/$s.wav"); done
    if "$CHECK" golden_sub "$ZOO/outputs/mdx_demucs_a_tiny_separate_50s_sub97.npy" 1e-4 97 "${files[@]}"; then
        pass "mdx_demucs_a_tiny on mix_50s matches upstream's separator"
    else
        fail "mdx_demucs_a_tiny on mix_50s differs from upstream's separator"
    fi
fi
if expect_rc separate_q 0 separate --repo "$ZOO/models" -n mdx_q_demucs_tiny --float32 "$MIX3" -o "$WORK/outq"; then
    n=$(ls "$WORK/outq/mdx_q_demucs_tiny/mix_3s/" | wc -l)
    [ "$n" = 4 ] && pass "mdx_q_demucs_tiny wrote 4 stems" || fail "mdx_q_demucs_tiny wrote $n stems"
fi
finish
