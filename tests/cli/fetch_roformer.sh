#!/usr/bin/env bash
# fetch_roformer.sh - the registry's RoFormer checkpoints (issue 14) through
# the CLI, against a local HTTP server standing in for their publishers
# (DEMIX_MODEL_URL: a mirror serves NAME.yaml and NAME.ckpt at its root).
# `models list` shows every one with its family and stems; `models fetch`
# stores NAME.ckpt + NAME.yaml and checks each file the way its table entry
# allows: a stated sha256 (ep_317), a stated size + md5 (ep_368), the config
# parsed against the table's family and stems, and a checkpoint with no
# public checksum loaded with its config; any failure leaves nothing under
# the name. `separate -n NAME` resolves (and downloads) the pair, and gives
# MSST's demix() output. Served here: the golden tiny models, which pass
# only the checks a tiny model can pass.
. "$(dirname "$0")/lib.sh"
: "${HTTPD:?}" "${CHECK:?}"
RF="$GOLDEN/roformer"
SRV="$WORK/srv"; mkdir -p "$SRV"
N4=model_bs_roformer_ep_17_sdr_9.6568           # no public checksum, 4 stems
N317=model_bs_roformer_ep_317_sdr_12.9755        # sha256 stated
N368=model_bs_roformer_ep_368_sdr_12.9628        # size and md5 stated
N937=model_bs_roformer_ep_937_sdr_10.5309        # listed only
srv_pair() { cp "$RF/models/$2.yaml" "$SRV/$1.yaml"; cp "$RF/models/$3.ckpt" "$SRV/$1.ckpt"; }
srv_pair $N4 bs_roformer_4stem_tiny bs_roformer_4stem_tiny
srv_pair $N317 bs_roformer_tiny bs_roformer_tiny
srv_pair $N368 bs_roformer_tiny bs_roformer_tiny

"$HTTPD" --root "$SRV" --port-file "$WORK/port" --log "$WORK/http.log" --lifetime 300 &
HPID=$!
trap 'kill $HPID 2>/dev/null; wait $HPID 2>/dev/null' EXIT
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
[ -s "$WORK/port" ] || { fail "test server did not start"; exit 1; }
export DEMIX_MODEL_URL="http://127.0.0.1:$(cat "$WORK/port")/"
use_cache() { export DEMIX_MODELS="$WORK/$1"; rm -rf "$DEMIX_MODELS"; }
nothing_for() {
    local f
    for f in "$DEMIX_MODELS/$1.yaml" "$DEMIX_MODELS/$1.yaml.part" "$DEMIX_MODELS/$1.ckpt.part"; do
        [ -e "$f" ] && fail "$2: $f left in the cache"
    done
    return 0
}

# 1. The table as `models list` shows it.
use_cache cache_list
expect_rc list 0 models list
grep -Eq "^model_bs_roformer_ep_317_sdr_12.9755 +BSRoformer +vocals +.*not cached" "$WORK/list.out" ||
    fail "models list: no ep_317 row"
grep -Eq "^vocals_mel_band_roformer_kj +MelBandRoformer +vocals +870.8 MiB +not cached" "$WORK/list.out" ||
    fail "models list: no Kimberley Jensen row"
grep -Eq "^$N4 +BSRoformer +drums, bass, other, vocals " "$WORK/list.out" || fail "models list: no $N4 row"
for n in $N368 $N937 model_mel_band_roformer_ep_3005_sdr_11.4360; do
    grep -q "^$n " "$WORK/list.out" || fail "models list: no $n row"
done
expect_rc path_uncached 1 models path $N317
[ "$(cat "$WORK/path_uncached.out")" = "$DEMIX_MODELS/$N317.yaml" ] ||
    fail "models path before fetch: $(cat "$WORK/path_uncached.out")"
expect_rc sep_uncached_offline 1 separate -n $N317 --repo "$WORK" "$MIX3" -o "$WORK/none"

# 2. A checkpoint without a public checksum: both files fetched, the config
#    checked, the pair loaded; then it lists, resolves, verifies.
use_cache cache_good
if expect_rc fetch_good 0 models fetch $N4; then
    cmp -s "$DEMIX_MODELS/$N4.ckpt" "$RF/models/bs_roformer_4stem_tiny.ckpt" || fail "fetch_good: ckpt differs"
    cmp -s "$DEMIX_MODELS/$N4.yaml" "$RF/models/bs_roformer_4stem_tiny.yaml" || fail "fetch_good: yaml differs"
    grep -q "No public checksum identifies $N4.ckpt; checking that it loads" "$WORK/fetch_good.out" ||
        fail "fetch_good: the load check was not announced: $(cat "$WORK/fetch_good.out")"
fi
for u in "/$N4.ckpt" "/$N4.yaml"; do
    grep -q "GET $u " "$WORK/http.log" || fail "fetch did not ask for $u"
done
[ -z "$(find "$DEMIX_MODELS" -name '*.part')" ] || fail "fetch_good: .part left"
expect_rc path_good 0 models path $N4
[ "$(cat "$WORK/path_good.out")" = "$DEMIX_MODELS/$N4.yaml" ] || fail "models path: $(cat "$WORK/path_good.out")"
expect_rc list_good 0 models list
grep -Eq "^$N4 +BSRoformer +drums, bass, other, vocals +.* cached: $DEMIX_MODELS/$N4.yaml" "$WORK/list_good.out" ||
    fail "models list: $N4 not shown cached"
grep -q "MSST config" "$WORK/list_good.out" && fail "models list: the cached pair is listed twice"
expect_rc verify_good 0 models verify $N4
grep -q "^no hash .*$N4.ckpt" "$WORK/verify_good.out" && grep -q "^ok .*$N4.yaml" "$WORK/verify_good.out" ||
    fail "models verify: $(cat "$WORK/verify_good.out")"
# A damaged config fails verify, and fetch replaces it.
printf 'model: {dim: 8}\n' >"$DEMIX_MODELS/$N4.yaml"
expect_rc verify_damaged 1 models verify $N4
grep -q "^MISMATCH .*$N4.yaml (not the config of $N4" "$WORK/verify_damaged.out" ||
    fail "verify_damaged: $(cat "$WORK/verify_damaged.out")"
expect_rc refetch 0 models fetch $N4
cmp -s "$DEMIX_MODELS/$N4.yaml" "$RF/models/bs_roformer_4stem_tiny.yaml" || fail "refetch: yaml not replaced"

# 3. `separate -n NAME` downloads a missing pair and gives MSST's demix().
use_cache cache_sep
if expect_rc sep 0 separate -n $N4 --float32 --clip-mode none "$MIX12" -o "$WORK/out"; then
    files=()
    for s in drums bass other vocals; do files+=("$WORK/out/$N4/mix_12s/$s.wav"); done
    if "$CHECK" golden_sub "$RF/outputs/bs_roformer_4stem_tiny_demix_12s.npy" 1e-4 8 "${files[@]}"; then
        pass "separate -n $N4 matches bs_roformer_4stem_tiny_demix_12s.npy"
    else
        fail "separate -n $N4 differs from bs_roformer_4stem_tiny_demix_12s.npy"
    fi
fi
[ -f "$DEMIX_MODELS/$N4.yaml" ] && [ -f "$DEMIX_MODELS/$N4.ckpt" ] || fail "sep: the pair was not cached"

# A Demucs-only option with a registry RoFormer that is not cached: refused
# before anything is downloaded.
use_cache cache_opt
: >"$WORK/http.log"
if expect_rc opt_uncached 2 separate -n $N4 --shifts 2 "$MIX3" -o "$WORK/o"; then
    expect_one_line_error opt_uncached
fi
[ -s "$WORK/http.log" ] && fail "opt_uncached: something was downloaded: $(cat "$WORK/http.log")"
[ -e "$DEMIX_MODELS/$N4.ckpt" ] && fail "opt_uncached: the checkpoint was fetched"

# 4. A stated sha256 that does not match: rejected, nothing kept, no config fetched.
use_cache cache_sha
if expect_rc sha 1 models -q fetch $N317; then
    expect_one_line_error sha
    grep -q "checksum mismatch: its sha256 starts with .*, expected 5b84f37e8d44" "$WORK/sha.err" ||
        fail "sha: $(cat "$WORK/sha.err")"
fi
[ -e "$DEMIX_MODELS/$N317.ckpt" ] && fail "sha: the mismatching checkpoint was kept"
nothing_for $N317 sha

# 5. A stated size that does not match: rejected before any digest.
use_cache cache_size
if expect_rc size 1 models -q fetch $N368; then
    expect_one_line_error size
    grep -q "size mismatch: .* bytes, expected 639317465" "$WORK/size.err" || fail "size: $(cat "$WORK/size.err")"
fi
[ -e "$DEMIX_MODELS/$N368.ckpt" ] && fail "size: the mismatching checkpoint was kept"
nothing_for $N368 size

# 6. A config for other stems or another family than the table's (no
#    checksum for this config): refused, the name does not resolve.
cp "$RF/models/bs_roformer_tiny.yaml" "$SRV/$N4.yaml"
use_cache cache_stems
if expect_rc stems 1 models -q fetch $N4; then
    expect_one_line_error stems
    grep -q "not the config of $N4: .*its stems are (vocals), but $N4 has (drums, bass, other, vocals)" \
        "$WORK/stems.err" || fail "stems: $(cat "$WORK/stems.err")"
fi
nothing_for $N4 stems
expect_rc stems_path 1 models path $N4
cp "$RF/models/mel_band_roformer_4stem_tiny.yaml" "$SRV/$N4.yaml"
if expect_rc family 1 models -q fetch $N4; then
    expect_one_line_error family
    grep -q "not the config of $N4: .*a MelBandRoformer config, but $N4 is a BSRoformer model" \
        "$WORK/family.err" || fail "family: $(cat "$WORK/family.err")"
fi
nothing_for $N4 family

# 7. A checkpoint that does not load with its (valid) config: both removed.
cp "$RF/models/bs_roformer_4stem_tiny.yaml" "$SRV/$N4.yaml"
cp "$RF/models/mel_band_roformer_4stem_tiny.ckpt" "$SRV/$N4.ckpt"
use_cache cache_load
if expect_rc load 1 models -q fetch $N4; then
    expect_one_line_error load
    grep -q "$N4.ckpt does not load with its config" "$WORK/load.err" || fail "load: $(cat "$WORK/load.err")"
fi
[ -e "$DEMIX_MODELS/$N4.ckpt" ] && fail "load: the checkpoint was kept"
nothing_for $N4 load
finish
