#!/usr/bin/env bash
# roformer.sh HOW MODEL REF STRIDE SOURCE... - `demix separate` end to end
# with a golden BS-/Mel-Band RoFormer (an MSST config + checkpoint) against
# MSST's whole-track demix() output (golden/roformer/README.md): the input
# is mix_12s as float WAV, the stems float32 WAV, no clipping. HOW is
# `config` (--model-config/--checkpoint) or `name` (-n MODEL --repo, the
# registry's NAME.yaml + NAME.ckpt rule). STRIDE > 1: the reference holds
# every STRIDE-th sample. Demucs-only options (--shifts, --overlap,
# --segment, --no-split) are refused with exit status 2.
. "$(dirname "$0")/lib.sh"
how=$1 model=$2 ref=$3 stride=$4; shift 4
n_src=$#
RF="$GOLDEN/roformer"
if [ "$how" = config ]; then
    sel=(--model-config "$RF/models/$model.yaml" --checkpoint "$RF/models/$model.ckpt")
else
    sel=(--repo "$RF/models" -n "$model")
fi
if expect_rc separate 0 separate "${sel[@]}" --float32 --clip-mode none \
        "$GOLDEN/inputs/mix_12s.wav" -o "$WORK/out"; then
    files=()
    for s in "$@"; do files+=("$WORK/out/$model/mix_12s/$s.wav"); done
    if [ "$stride" = 1 ]; then
        set -- golden "$RF/outputs/$ref.npy" 1e-4 "${files[@]}"
    else
        set -- golden_sub "$RF/outputs/$ref.npy" 1e-4 "$stride" "${files[@]}"
    fi
    if "$CHECK" "$@"; then
        pass "$model ($how) on mix_12s matches $ref.npy"
    else
        fail "$model ($how) on mix_12s differs from $ref.npy"
    fi
fi
# the stems are the config's instruments, and nothing else is written
n=$(find "$WORK/out/$model/mix_12s" -type f 2>/dev/null | wc -l)
if [ "$n" -eq "$n_src" ]; then pass "$n stem files"; else fail "$n stem files, expected $n_src"; fi
# Demucs' run options have no RoFormer counterpart: refused (exit 2, one
# line naming the option), never silently ignored; nothing is written.
for opt in "--shifts 2" "--overlap 0.5" "--segment 4" "--no-split"; do
    n=opt_${opt%% *}; n=${n//-/}
    # shellcheck disable=SC2086
    if expect_rc "$n" 2 separate "${sel[@]}" $opt "$MIX3" -o "$WORK/o_$n"; then
        expect_one_line_error "$n"
        grep -q -- "${opt%% *} does not apply to $model, a RoFormer" "$WORK/$n.err" || fail "$n: $(cat "$WORK/$n.err")"
    fi
    expect_no_files "$WORK/o_$n"
done
if [ "$how" = config ]; then
    # A RoFormer's file is decoded once (no normalisation pass; the chunk
    # plan is settled as the audio arrives); a Demucs model's twice. Counted
    # as opens of the input under strace (scripts/setup.sh installs it).
    opens() { # label args... -> number of opens of mix_3s.wav
        strace -f -qq -e trace=open,openat -o "$WORK/$1.strace" "$DEMIX" "${@:2}" >/dev/null 2>&1
        grep -c 'mix_3s\.wav"' "$WORK/$1.strace"
    }
    if command -v strace >/dev/null && strace -qq -o /dev/null true 2>/dev/null; then
        n_rf=$(opens once separate "${sel[@]}" -q -o "$WORK/once" "$MIX3")
        n_dm=$(opens twice separate --repo "$MODELS" -n tiny4s --shifts 0 -q -o "$WORK/twice" "$MIX3")
        if [ "$n_rf" = 1 ] && [ "$n_dm" = 2 ]; then pass "input opened once (Demucs: twice)";
        else fail "input opened $n_rf times for $model, $n_dm for tiny4s (expected 1 and 2)"; fi
    else
        echo "SKIP: strace is missing or cannot trace here: the single decoding pass is not checked"
    fi
    # the pair goes together, and names the model on its own
    expect_rc half 2 separate --model-config "$RF/models/$model.yaml" "$MIX3" -o "$WORK/x" &&
        expect_one_line_error half
    expect_rc both 2 separate "${sel[@]}" -n htdemucs "$MIX3" -o "$WORK/x" && expect_one_line_error both
    # `demix models list --repo` shows the pair as one model with its stems
    expect_rc list 0 models list --repo "$RF/models" &&
        { grep -q "^$model  *BSRoformer  *vocals .*MSST config: " "$WORK/list.out" ||
              fail "models list: no MSST config line for $model: $(cat "$WORK/list.out")"; }
    # a checkpoint that is not there: a clear one-line error, nothing written
    expect_rc nockpt 1 separate --model-config "$RF/models/$model.yaml" --checkpoint "$WORK/none.ckpt" \
        "$MIX3" -o "$WORK/y" && expect_one_line_error nockpt
    grep -q "none.ckpt: cannot open" "$WORK/nockpt.err" && ! grep -q "models verify" "$WORK/nockpt.err" \
        || fail "nockpt: the error should name the checkpoint and not the cache"
    [ -e "$WORK/y" ] && find "$WORK/y" -type f | grep -q . && fail "nockpt wrote files"
fi
finish
