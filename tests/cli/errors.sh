#!/usr/bin/env bash
# errors.sh - runtime failures: undecodable inputs, missing tracks and models.
# Each must exit 1 with a one-line reason and leave no stems or partial files;
# a good track next to a bad one is still separated.
. "$(dirname "$0")/lib.sh"
IN="$WORK/in"; mkdir -p "$IN"
: >"$IN/empty.wav"
head -c 65536 /dev/urandom >"$IN/noise.wav"
echo "these are liner notes, not audio" >"$IN/notes.txt"
cp "$MODELS/tiny4s.th" "$IN/checkpoint.mp3"           # a zip file posing as MP3
(printf 'RIFF\044\000\001\000WAVEfmt '; head -c 4096 /dev/urandom) >"$IN/badheader.wav"
mkdir -p "$IN/empty_folder"

SEP=(separate --repo "$MODELS" -n tiny4s --shifts 0)
for f in empty.wav noise.wav notes.txt checkpoint.mp3 badheader.wav missing.wav empty_folder; do
    n=bad_${f//./_}
    out="$WORK/out_$n"
    if expect_rc "$n" 1 "${SEP[@]}" -o "$out" "$IN/$f"; then
        expect_one_line_error "$n"
        grep -q "$f" "$WORK/$n.err" || fail "$n: the error does not name the file"
    fi
    expect_no_files "$out"
done

# Missing model (local folder and cache), before any track is read.
expect_rc no_model_repo 1 separate --repo "$MODELS" -n nosuch -o "$WORK/out_nm" "$MIX3" &&
    expect_one_line_error no_model_repo
expect_rc no_repo_dir 1 separate --repo "$WORK/nowhere" -n tiny4s -o "$WORK/out_nm" "$MIX3" &&
    expect_one_line_error no_repo_dir
expect_rc no_model_cache 1 separate -n nosuch -o "$WORK/out_nm" "$MIX3" &&
    expect_one_line_error no_model_cache
# A known model that is not cached, with no network: a quick, clear failure
# that says how to get the file by hand.
export DEMIX_MODEL_URL="http://127.0.0.1:9/demucs/"
start=$(date +%s)
if expect_rc offline 1 separate -n htdemucs -o "$WORK/out_nm" "$MIX3"; then
    expect_one_line_error offline
    grep -q "955717e8-8726e21a.th" "$WORK/offline.err" || fail "offline: error does not name the file to fetch"
    grep -q "$DEMIX_MODELS" "$WORK/offline.err" || fail "offline: error does not say where to put the file"
fi
[ $(( $(date +%s) - start )) -le 10 ] || fail "offline failure took more than 10 s"
expect_no_files "$WORK/out_nm"
expect_no_files "$DEMIX_MODELS"

# A bad track next to a good one: the good one is written, exit status 1.
out="$WORK/out_mixed"
if expect_rc mixed 1 "${SEP[@]}" -o "$out" "$IN/noise.wav" "$MIX3"; then
    for s in drums bass other vocals; do expect_file "$out/tiny4s/mix_3s/$s.wav"; done
    [ -e "$out/tiny4s/noise" ] && fail "mixed: output folder of the bad track exists"
    grep -q "noise.wav" "$WORK/mixed.err" || fail "mixed: no error about noise.wav"
fi
[ -z "$(find "$out" -name '*.part')" ] || fail "mixed: .part files left"
finish
