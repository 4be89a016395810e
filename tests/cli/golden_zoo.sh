#!/usr/bin/env bash
# golden_zoo.sh NAME SOURCE... - `demix separate` end to end (decode the 50 s
# 16-bit WAV, separate, encode float32 WAV) with a model or bag of
# ../shared/golden/zoo against upstream's whole-track separator, compared on
# every 97th sample (NAME_separate_50s_sub97.npy).
. "$(dirname "$0")/lib.sh"
name=$1; shift
if expect_rc separate 0 separate --repo "$GOLDEN/zoo/models" -n "$name" --float32 --clip-mode none \
        --shifts 0 "$GOLDEN/zoo/inputs/mix_50s.wav" -o "$WORK/out"; then
    files=()
    for s in "$@"; do files+=("$WORK/out/$name/mix_50s/$s.wav"); done
    if "$CHECK" golden_sub "$GOLDEN/zoo/outputs/${name}_separate_50s_sub97.npy" 1e-4 97 "${files[@]}"; then
        pass "$name on mix_50s matches ${name}_separate_50s_sub97.npy"
    else
        fail "$name on mix_50s differs from ${name}_separate_50s_sub97.npy"
    fi
fi
finish
