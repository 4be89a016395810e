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
# Demucs' run options do not apply to a RoFormer: a precise 400, no job.
for f in shifts=0 overlap=0.5; do
    if err "opt_${f%%=*}" 400 option_not_applicable -F "file=@$GOLDEN/inputs/mix_3s.wav" \
            -F model_name=bs_roformer_tiny -F "$f" "$B/separate"; then
        body_has "opt_${f%%=*}" "${f%%=*} does not apply to model 'bs_roformer_tiny', a RoFormer"
    fi
done
get jobs_after 200 "$B/jobs"
[ "$(json jobs_after 'd["total"]')" = 2 ] ||
    fail "a refused request made a job: $(head -c 600 "$WORK/jobs_after.body")"

# A registry RoFormer (`demix models fetch NAME` stores NAME.yaml + NAME.ckpt)
# in the cache: listed under its name with its stems, family, description
# and size (config + checkpoint).
export DEMIX_MODELS="$WORK/cache"; mkdir -p "$DEMIX_MODELS"
N4=model_bs_roformer_ep_17_sdr_9.6568
ln -s "$RF/models/bs_roformer_4stem_tiny.yaml" "$DEMIX_MODELS/$N4.yaml"
ln -s "$RF/models/bs_roformer_4stem_tiny.ckpt" "$DEMIX_MODELS/$N4.ckpt"
NO_REPO=1 start "$WORK/server2.log" --data-dir "$WORK/data2" --workers 1 --max-duration 5
if get models2 200 "$B/models"; then
    [ "$(json models2 '[(m["sources"], m["family"], m["description"][:25], m["size_bytes"] > 3000000) for m in d["models"] if m["name"] == "'$N4'"]')" = \
        "[(['drums', 'bass', 'other', 'vocals'], 'BSRoformer', \"MSST's 4-stem BS-RoFormer\", True)]" ] \
        || fail "models: registry RoFormer entry: $(head -c 800 "$WORK/models2.body")"
fi
# A RoFormer's file is decoded once: a container that states no length is
# still stopped at --max-duration while that single pass decodes it.
ffmpeg -v error -y -f lavfi -i anullsrc=r=44100:cl=stereo -t 20 -c:a flac -f flac pipe: >"$WORK/nolen.flac"
if get nolen 200 -F "file=@$WORK/nolen.flac" -F model_name=$N4 "$B/separate?wait=true"; then
    body_has nolen '"code":"audio_too_long"'
fi
if get short 200 -F "file=@$GOLDEN/inputs/mix_3s.wav" -F model_name=$N4 "$B/separate?wait=true"; then
    body_has short '"status":"done"'
fi
finish
