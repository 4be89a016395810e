#!/usr/bin/env bash
# formats.sh - output formats (--mp3, --flac, --int24, 16-bit default) decode
# back with the model's rate, channel count and the track's length; and the
# clip modes behave as upstream's: rescale divides by 1.01 x peak, clamp
# clips at 0.99. A loud copy of the mix makes every stem exceed full scale.
. "$(dirname "$0")/lib.sh"
SEP=(separate --repo "$MODELS" -n tiny4s --shifts 0)
LOUD="$WORK/loud.wav"
"$CHECK" gain "$MIX3" "$LOUD" 100 || fail "cannot make $LOUD"
N=132300

near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t) }'; }

if expect_rc mp3 0 "${SEP[@]}" --mp3 --mp3-bitrate 128 --mp3-preset 7 -o "$WORK/mp3" "$LOUD"; then
    for s in drums bass other vocals; do
        f="$WORK/mp3/tiny4s/loud/$s.mp3"
        expect_info "$f" 44100 2 $N mp3float
        size=$(stat -c %s "$f")
        # 128 kbit/s x 3 s = 48000 bytes, plus headers.
        [ "$size" -gt 40000 ] && [ "$size" -lt 60000 ] || fail "$f: $size bytes is not 128 kbit/s"
    done
fi

if expect_rc flac 0 "${SEP[@]}" --flac --int24 --clip-mode clamp -o "$WORK/flac" "$LOUD"; then
    for s in drums bass other vocals; do
        f="$WORK/flac/tiny4s/loud/$s.flac"
        expect_info "$f" 44100 2 $N flac
        p=$("$CHECK" peak "$f")
        near "$p" 0.99 2e-7 || fail "$f: peak $p, expected 0.99 (clamp)"
    done
fi

if expect_rc int24 0 "${SEP[@]}" --int24 -o "$WORK/int24" "$LOUD"; then
    for s in drums bass other vocals; do
        f="$WORK/int24/tiny4s/loud/$s.wav"
        expect_info "$f" 44100 2 $N pcm_s24le
        p=$("$CHECK" peak "$f")
        near "$p" 0.990099 2e-6 || fail "$f: peak $p, expected 1/1.01 (rescale)"
    done
fi

if expect_rc s16 0 "${SEP[@]}" -o "$WORK/s16" "$MIX3"; then
    for s in drums bass other vocals; do
        expect_info "$WORK/s16/tiny4s/mix_3s/$s.wav" 44100 2 $N pcm_s16le
    done
fi
finish
