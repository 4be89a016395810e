#!/usr/bin/env bash
# models.sh - the model registry as the CLI shows it (issue 12 bug 1, issue
# 16): `models list` names every model upstream's `demucs -n` accepts with its
# network family and sources; `separate --list-models` prints upstream's
# "Bag of models:" / "Single models:" form (for upstream's remote repo and
# for --repo); the cache resolves an upstream name through its members'
# upstream file names; `models fetch` asks for upstream's URL layout
# (ROOT/hybrid_transformer/, ROOT/mdx_final/); the naming rule's errors
# (uppercase checksum, duplicates, a second '-') are one clear line each.
. "$(dirname "$0")/lib.sh"
: "${HTTPD:?}"

# 1. The table: every upstream name, its family and sources.
expect_rc list 0 models list
for m in htdemucs htdemucs_ft htdemucs_6s hdemucs_mmi mdx mdx_extra mdx_q mdx_extra_q repro_mdx_a \
         repro_mdx_a_hybrid_only repro_mdx_a_time_only; do
    grep -q "^$m .*not cached" "$WORK/list.out" || fail "models list: $m missing or not 'not cached'"
done
grep -Eq '^hdemucs_mmi +HDemucs +drums, bass, other, vocals ' "$WORK/list.out" || fail "models list: hdemucs_mmi row"
grep -Eq '^mdx +Demucs\+HDemucs ' "$WORK/list.out" || fail "models list: mdx is not Demucs+HDemucs"
grep -Eq '^htdemucs_6s +HTDemucs +drums, bass, other, vocals, guitar, piano ' "$WORK/list.out" ||
    fail "models list: htdemucs_6s row"

# 2. upstream's --list-models form.
expect_rc list_models 0 separate --list-models
cat >"$WORK/want_remote.txt" <<'TXT'
Bag of models:
    htdemucs
    htdemucs_ft
    htdemucs_6s
    hdemucs_mmi
    mdx
    mdx_extra
    mdx_q
    mdx_extra_q
    repro_mdx_a
    repro_mdx_a_hybrid_only
    repro_mdx_a_time_only
Single models:
    0d19c1c6
    5d2d6c55
    7d865c68
    7ecf8ec1
    a1d90b5c
    c511e2ab
    cfa93e08
    e51eebcc
    6b9c2ca1
    b72baf4e
    42e558d4
    305bc58f
    14fc6a69
    464b36d7
    7fd6ef75
    83fc094f
    1ef250f1
    902315c2
    9a6b4851
    fa0cb7f9
    955717e8
    f7e0c4bc
    d12395a8
    92cfc3b6
    04573f0d
    75fc33f5
    5c90dfd2
TXT
diff -u "$WORK/want_remote.txt" "$WORK/list_models.out" >&2 || fail "--list-models: not upstream's list"
expect_rc list_models_repo 0 separate --list-models --repo "$MODELS"
printf 'Bag of models:\n    tinybag\nSingle models:\n    htdemucs_6s_random\n    tiny4s\n    tiny6s\n    tinybag_a\n    tinybag_b\n' \
    >"$WORK/want_repo.txt"
diff -u "$WORK/want_repo.txt" "$WORK/list_models_repo.out" >&2 || fail "--list-models --repo: not upstream's form"

# 3. The cache holds upstream's file names; users type upstream's names.
mkdir -p "$DEMIX_MODELS"
ln -s "$MODELS/tiny4s.th" "$DEMIX_MODELS/955717e8-8726e21a.th"
if expect_rc sep_cache 0 separate -n htdemucs --shifts 0 -o "$WORK/out" "$MIX3"; then
    expect_file "$WORK/out/htdemucs/mix_3s/vocals.wav"
fi
expect_rc sep_sig 0 separate -n 955717e8 --shifts 0 -o "$WORK/out" "$MIX3"
expect_rc list_cache 0 models list
grep -q "^htdemucs .*cached: $DEMIX_MODELS/955717e8-8726e21a.th" "$WORK/list_cache.out" ||
    fail "models list: htdemucs not shown as cached"
grep -q "^955717e8" "$WORK/list_cache.out" && fail "models list: the cached file is listed by its signature too"
# A bag with a segment needs its YAML: path says where it goes.
expect_rc path_mmi 1 models path hdemucs_mmi
[ "$(cat "$WORK/path_mmi.out")" = "$DEMIX_MODELS/hdemucs_mmi.yaml" ] || fail "models path hdemucs_mmi: $(cat "$WORK/path_mmi.out")"

# 4. The naming rule, one line each.
R="$WORK/repo"; mkdir -p "$R"
cp "$MODELS/tiny4s.th" "$R/upper-ABCDEF12.th"
cp "$MODELS/tiny4s.th" "$R/dup.th"; cp "$MODELS/tiny4s.th" "$R/dup-0123.th"
cp "$MODELS/tiny4s.th" "$R/my-model-0123.th"
expect_rc upper 1 separate --repo "$R" -n upper -o "$WORK/out" "$MIX3" && expect_one_line_error upper
grep -q "lowercase" "$WORK/upper.err" || fail "upper: the error does not say the checksum must be lowercase"
expect_rc dup 1 separate --repo "$R" -n dup -o "$WORK/out" "$MIX3" && expect_one_line_error dup
grep -q "delete all but one" "$WORK/dup.err" || fail "dup: the error does not name the duplicate"
expect_rc dashes 1 models path --repo "$R" my-model && expect_one_line_error dashes
grep -q "more than one '-'" "$WORK/dashes.err" || fail "dashes: the error does not explain the name"
expect_rc list_bad 0 models list --repo "$R"
grep -q "^upper-ABCDEF12.th .*unusable" "$WORK/list_bad.out" || fail "models list --repo: unusable file not flagged"

# 5. fetch asks for upstream's URL layout: ROOT + hybrid_transformer/ or mdx_final/ + file.
SRV="$WORK/srv"; mkdir -p "$SRV"
"$HTTPD" --root "$SRV" --port-file "$WORK/port" --log "$WORK/http.log" --lifetime 60 &
HPID=$!
trap 'kill $HPID 2>/dev/null; wait $HPID 2>/dev/null' EXIT
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
export DEMIX_MODEL_URL="http://127.0.0.1:$(cat "$WORK/port")/demucs"
expect_rc fetch_mmi 1 models -q fetch hdemucs_mmi
expect_rc fetch_mdxq 1 models -q fetch mdx_extra_q
expect_rc fetch_sig 1 models -q fetch c511e2ab
for u in /demucs/hybrid_transformer/75fc33f5-1941ce65.th /demucs/mdx_final/83fc094f-4a16d450.th \
         /demucs/mdx_final/c511e2ab-fe698775.th; do
    grep -q "GET $u " "$WORK/http.log" || fail "fetch did not ask for $u: $(cat "$WORK/http.log")"
done
[ -e "$DEMIX_MODELS/hdemucs_mmi.yaml" ] && fail "fetch_mmi: YAML written without its member"
finish
