#!/usr/bin/env bash
# golden.sh MODEL INPUT REF SOURCE... - `demix separate` end to end against
# upstream's whole-track separator output: float32 WAV, no clipping, no
# shifts, so the files hold exactly what the engine produced.
. "$(dirname "$0")/lib.sh"
model=$1 input=$2 ref=$3; shift 3
if expect_rc separate 0 separate --repo "$MODELS" -n "$model" --float32 --clip-mode none \
        --shifts 0 "$GOLDEN/inputs/$input.wav" -o "$WORK/out"; then
    files=()
    for s in "$@"; do files+=("$WORK/out/$model/$input/$s.wav"); done
    if "$CHECK" golden "$GOLDEN/outputs/$ref.npy" 1e-4 "${files[@]}"; then
        pass "$model on $input matches $ref.npy"
    else
        fail "$model on $input differs from $ref.npy"
    fi
fi
finish
