# roformer.sh - `demix serve` with RoFormer models: a --repo folder holding
# MSST configs and checkpoints (golden/roformer/models: NAME.yaml with a
# model: section + NAME.ckpt, the registry's rule) lists them in GET /models
# with the config's instruments as sources, and POST /separate
# model_name=NAME separates with one, through the same pipeline as Demucs;
# the downloaded stem matches MSST's whole-track demix() output
# (bs_roformer_tiny_demix_3s.npy) to 16-bit WAV precision. Environment
# (tests/server.cmake): DEMIX, CHECK (tests/cli/check.c), GOLDEN, WORK.
. "$(dirname "$0")/lib.sh"
: "${CHECK:?}"
RF="$GOLDEN/roformer"
NO_REPO=1 start "$WORK/server.log" --repo "$RF/models" --data-dir "$WORK/data" --workers 1

if get models 200 "$B/models"; then
    [ "$(json models '[m["sources"] for m in d["models"] if m["name"] == "bs_roformer_4stem_tiny"]')" = \
        "[['drums', 'bass', 'other', 'vocals']]" ] \
        || fail "models: 4-stem RoFormer sources: $(head -c 800 "$WORK/models.body")"
    [ "$(json models '[(m["sources"], m.get("family")) for m in d["models"] if m["name"] == "mel_band_roformer_tiny"]')" = \
        "[(['vocals'], 'MelBandRoformer')]" ] \
        || fail "models: Mel-Band RoFormer entry: $(head -c 800 "$WORK/models.body")"
fi

if get sync 200 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=bs_roformer_tiny "$B/separate?wait=true"; then
    body_has sync '"status":"done"'
    ID=$(json sync 'd["id"]')
    body_has sync "\"url\":\"/jobs/$ID/stems/vocals\""
    if get stem 200 "$B/jobs/$ID/stems/vocals" && cp "$WORK/stem.body" "$WORK/vocals.wav"; then
        # 16-bit WAV: half a step (1.5e-5) is 2e-4 of the reference's peak (0.073)
        if "$CHECK" golden "$RF/outputs/bs_roformer_tiny_demix_3s.npy" 1e-3 "$WORK/vocals.wav"; then
            pass "stem matches bs_roformer_tiny_demix_3s.npy"
        else
            fail "stem differs from bs_roformer_tiny_demix_3s.npy"
        fi
    fi
    get no_drums 404 "$B/jobs/$ID/stems/drums"
fi
# a RoFormer with two_stems: vocals and the rest
if get two 200 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=bs_roformer_4stem_tiny -F two_stems=vocals \
        "$B/separate?wait=true"; then
    body_has two '"status":"done"'
    TID=$(json two 'd["id"]')
    get two_rest 200 "$B/jobs/$TID/stems/no_vocals"
fi
finish
