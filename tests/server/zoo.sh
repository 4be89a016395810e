# zoo.sh - integration test of `demix serve` with the pre-Transformer
# families (issue 16 §4): a repo of the zoo fixtures (symlinks into
# $GOLDEN/zoo/models), POST /separate with the HDemucs bag `mmi_tiny` and
# the mixed Demucs+HDemucs bag `mdx_tiny`, and each stem byte-identical to
# `demix separate` on the same input with the same shifts, overlap and
# format; GET /models lists them with their family and sources.
. "$(dirname "$0")/lib.sh"

Z="$GOLDEN/zoo/models"
R="$WORK/repo"
mkdir -p "$R" "$WORK/cache"
for f in hdemucs_mmi_tiny.th mmi_tiny.yaml mdx_tiny.yaml mdx_demucs_a_tiny.th mdx_demucs_b_tiny.th \
         mdx_hdemucs_mask_tiny.th mdx_hdemucs_cac_tiny.th; do
    [ -r "$Z/$f" ] || { echo "missing fixture $Z/$f" >&2; exit 1; }
    ln -s "$Z/$f" "$R/$f"
done
# A short input: 3 s of the zoo's 50 s mix from 20 s on (16-bit PCM WAV).
IN="$WORK/zoo3s.wav"
ffmpeg -v error -nostdin -ss 20 -t 3 -i "$GOLDEN/zoo/inputs/mix_50s.wav" -c:a pcm_s16le "$IN" \
    || { echo "ffmpeg could not cut the input" >&2; exit 1; }

export DEMIX_MODELS="$WORK/cache" # an empty cache: only the repo counts
NO_REPO=1 start "$WORK/server.log" --repo "$R" --data-dir "$WORK/data" --workers 1

# ---- GET /models: family and sources from each file ---------------------------------
if get models 200 "$B/models"; then
    for m in "mmi_tiny bag HDemucs" "mdx_tiny bag Demucs+HDemucs" "hdemucs_mmi_tiny checkpoint HDemucs" \
             "mdx_demucs_a_tiny checkpoint Demucs"; do
        set -- $m
        got=$(json models "[(m['kind'], m['family'], m['sources'], m['location']) for m in d['models'] if m['name'] == '$1']")
        want="[('$2', '$3', ['drums', 'bass', 'other', 'vocals'], 'repo')]"
        [ "$got" = "$want" ] && pass "models: $1 is a $3 $2" || fail "models: $1: $got, expected $want"
    done
fi

# ---- each bag through the service equals the CLI --------------------------------------
# sep NAME SHIFTS OVERLAP FORMAT EXT CLI_FORMAT_FLAG...
sep() {
    local name=$1 shifts=$2 overlap=$3 fmt=$4 ext=$5; shift 5
    get "sep_$name" 202 -F "file=@$IN" -F model_name="$name" -F shifts="$shifts" -F overlap="$overlap" \
        -F format="$fmt" "$B/separate" || return
    local id st
    id=$(json "sep_$name" 'd["id"]')
    st=$(wait_job "$id" 6000)
    [ "$st" = done ] && pass "$name job done" || { fail "$name job ended as '$st': $(cat "$WORK/wait.body")"; return; }
    "$DEMIX" separate --repo "$R" -n "$name" --shifts "$shifts" --overlap "$overlap" "$@" -o "$WORK/cli" "$IN" \
        >"$WORK/cli_$name.log" 2>&1 || { fail "demix separate -n $name failed: $(cat "$WORK/cli_$name.log")"; return; }
    for s in drums bass other vocals; do
        get "stem_${name}_$s" 200 "$B/jobs/$id/stems/$s" || continue
        [ -s "$WORK/cli/$name/zoo3s/$s.$ext" ] || { fail "CLI wrote no $name/zoo3s/$s.$ext"; continue; }
        cmp -s "$WORK/stem_${name}_$s.body" "$WORK/cli/$name/zoo3s/$s.$ext" \
            && pass "$name stem $s ($fmt) equals the CLI's" || fail "$name stem $s differs from the CLI's"
    done
    # Not silence: the comparison above would also pass on two empty outputs.
    local peak
    peak=$(sox "$WORK/cli/$name/zoo3s/vocals.$ext" -n stat 2>&1 | awk '/Maximum amplitude/ {print $3}')
    awk -v p="${peak:-0}" 'BEGIN { exit !(p > 0.001) }' && pass "$name vocals not silent (peak $peak)" \
        || fail "$name vocals silent (peak '${peak:-?}')"
}
sep mmi_tiny 1 0.25 wav wav
sep mdx_tiny 2 0.5 flac flac --flac

finish
