#!/usr/bin/env bash
# two_stems.sh - --two-stems with each --other-method: the right files, and
# the complement computed as upstream does (add: sum of the other stems;
# minus: the mix minus the stem), checked numerically on float32 output.
. "$(dirname "$0")/lib.sh"
SEP=(separate --repo "$MODELS" -n tiny4s --shifts 0 --float32 --clip-mode none)

files_in() { (cd "$1" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' '); }

expect_rc all 0 "${SEP[@]}" -o "$WORK/all" "$MIX3"
A="$WORK/all/tiny4s/mix_3s"

if expect_rc add 0 "${SEP[@]}" --two-stems vocals -o "$WORK/add" "$MIX3"; then
    D="$WORK/add/tiny4s/mix_3s"
    [ "$(files_in "$D")" = "no_vocals.wav vocals.wav " ] || fail "add: files are $(files_in "$D")"
    "$CHECK" combo 0 "$D/vocals.wav" "+$A/vocals.wav" || fail "add: vocals differ from the 4-stem run"
    "$CHECK" combo 1e-6 "$D/no_vocals.wav" "+$A/drums.wav" "+$A/bass.wav" "+$A/other.wav" ||
        fail "add: no_vocals is not drums + bass + other"
fi

if expect_rc minus 0 "${SEP[@]}" --two-stems vocals --other-method minus -o "$WORK/minus" "$MIX3"; then
    D="$WORK/minus/tiny4s/mix_3s"
    [ "$(files_in "$D")" = "minus_vocals.wav vocals.wav " ] || fail "minus: files are $(files_in "$D")"
    "$CHECK" combo 1e-6 "$D/minus_vocals.wav" "+$MIX3" "-$D/vocals.wav" ||
        fail "minus: minus_vocals is not mix - vocals"
fi

if expect_rc none 0 "${SEP[@]}" --two-stems vocals --other-method none -o "$WORK/none" "$MIX3"; then
    D="$WORK/none/tiny4s/mix_3s"
    [ "$(files_in "$D")" = "vocals.wav " ] || fail "none: files are $(files_in "$D")"
fi
finish
