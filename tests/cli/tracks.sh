#!/usr/bin/env bash
# tracks.sh - several tracks: a folder (its audio files only, sorted), -j 2,
# --filename templates, and what is printed (stem list, progress, --quiet).
. "$(dirname "$0")/lib.sh"
SEP=(separate --repo "$MODELS" -n tiny4s --shifts 0 --float32)
IN="$WORK/album"; mkdir -p "$IN/sub"
cp "$MIX3" "$IN/b.wav"
ln -s "$MIX3" "$IN/a.wav"
cp "$MIX3" "$IN/.hidden.wav"
cp "$MIX3" "$IN/sub/c.wav"
echo "not audio" >"$IN/notes.txt"
head -c 1000 /dev/urandom >"$IN/cover.jpg"

# A folder with two jobs and a flat naming template.
if expect_rc folder 0 "${SEP[@]}" -j 2 -v --filename '{track}_{stem}.{trackext}.{ext}' \
        -o "$WORK/out" "$IN"; then
    got=$(cd "$WORK/out/tiny4s" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ')
    want="a_bass.wav.wav a_drums.wav.wav a_other.wav.wav a_vocals.wav.wav b_bass.wav.wav b_drums.wav.wav b_other.wav.wav b_vocals.wav.wav "
    [ "$got" = "$want" ] || fail "folder: wrote '$got', expected '$want'"
    grep -q "2 jobs" "$WORK/folder.err" || fail "folder: -v does not report 2 jobs"
    grep -q "100%" "$WORK/folder.err" || fail "folder: no progress lines on stderr"
    grep -q "a_vocals.wav.wav" "$WORK/folder.out" || fail "folder: stdout does not list the stems"
    for s in drums bass other vocals; do
        "$CHECK" combo 1e-6 "$WORK/out/tiny4s/a_$s.wav.wav" "+$WORK/out/tiny4s/b_$s.wav.wav" ||
            fail "folder: the two jobs disagree on $s"
    done
fi

# One job at a time: a.wav is taken before b.wav (sorted). (With -j 2 both
# start at once and their first lines may come in either order.)
if expect_rc order 0 "${SEP[@]}" -j 1 -o "$WORK/out3" "$IN"; then
    a=$(grep -n "Separating track .*a.wav" "$WORK/order.out" | cut -d: -f1)
    b=$(grep -n "Separating track .*b.wav" "$WORK/order.out" | cut -d: -f1)
    [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ] || fail "folder: tracks not taken in sorted order"
fi

# Literal braces and {trackext}; --quiet prints nothing at all.
if expect_rc template 0 "${SEP[@]}" -q --filename '{{x}}/{track}.{trackext}/{stem}.{ext}' \
        -o "$WORK/out2" "$MIX3"; then
    for s in drums bass other vocals; do expect_file "$WORK/out2/tiny4s/{x}/mix_3s.wav/$s.wav"; done
    [ -s "$WORK/template.out" ] && fail "template: --quiet printed on stdout: $(cat "$WORK/template.out")"
    [ -s "$WORK/template.err" ] && fail "template: --quiet printed on stderr: $(cat "$WORK/template.err")"
fi
finish
