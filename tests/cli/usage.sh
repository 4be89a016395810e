#!/usr/bin/env bash
# usage.sh - help and version texts, and the command-line errors that must
# exit 2 with one "demix: " line before any work is done.
. "$(dirname "$0")/lib.sh"

# Help: man-page sections, on stdout, exit 0.
for args in "--help" "separate --help" "models --help" "help separate"; do
    n=help_${args// /_}
    # shellcheck disable=SC2086
    if expect_rc "$n" 0 $args; then
        for sec in USAGE DESCRIPTION OPTIONS EXAMPLES ENVIRONMENT "EXIT STATUS"; do
            grep -q "^$sec" "$WORK/$n.out" || fail "$n: no $sec section"
        done
    fi
done
grep -q "separate" "$WORK/help_--help.out" && grep -q "models" "$WORK/help_--help.out" ||
    fail "demix --help does not list the subcommands"
# `serve` is listed exactly when this build has it.
if "$DEMIX" serve --help >/dev/null 2>&1; then
    grep -q "^    serve " "$WORK/help_--help.out" || fail "demix --help does not list serve"
else
    grep -q "serve" "$WORK/help_--help.out" && fail "demix --help lists a serve command that does not exist"
fi
for opt in --name --repo --out --filename --two-stems --other-method --shifts --seed --overlap \
           --segment --no-split --jobs --device --verbose --quiet --int24 --float32 --flac --mp3 \
           --mp3-bitrate --mp3-preset --clip-mode; do
    grep -q -- "$opt" "$WORK/help_separate_--help.out" || fail "separate --help does not document $opt"
done
expect_rc version 0 --version && grep -q '^demix [0-9]' "$WORK/version.out" || fail "--version output"
grep -q 'OpenBLAS kernels: [A-Za-z0-9]' "$WORK/version.out" || fail "--version does not name the OpenBLAS kernels"

# No arguments: a short usage on stderr, exit 2.
expect_rc noargs 2

# Usage errors: exit 2, exactly one line on stderr, nothing written.
T=("$MIX3")
i=0
while IFS='|' read -r want args; do
    [ -z "$want" ] && continue
    i=$((i + 1))
    args=${args//MODELS/$MODELS}
    # shellcheck disable=SC2086
    if expect_rc "usage$i" "$want" $args -o "$WORK/out" "${T[@]}"; then
        expect_one_line_error "usage$i"
    fi
done <<'LIST'
2|separate --bogus-flag
2|separate -Z
2|separate --int24 --float32
2|separate --flac --mp3
2|separate --flac --float32
2|separate --mp3 --int24
2|separate --segment 4 --no-split
2|separate -v -q
2|separate --device cuda
2|separate -d mps
2|separate --shifts abc
2|separate --shifts -1
2|separate --overlap 1
2|separate --overlap 0.5x
2|separate --mp3-preset 9
2|separate --mp3-bitrate 100
2|separate --clip-mode tanh
2|separate --other-method subtract
2|separate --filename {track}/{nope}.{ext}
2|separate --filename {track}/{stem}}.{ext}
2|separate -n ../evil
2|separate --repo MODELS -n tiny4s --segment 0
LIST
for args in frobnicate --frobnicate "models frobnicate" "models fetch" "models --bogus list" \
            "models path" "models list extra" "models fetch --repo /tmp htdemucs" "models fetch ../x.th"; do
    n=cmd_${args// /_}; n=${n//\//_}
    # shellcheck disable=SC2086
    expect_rc "$n" 2 $args && expect_one_line_error "$n"
done
# Errors found once the model is loaded are usage errors too.
expect_rc two_stems_unknown 2 separate --repo "$MODELS" -n tiny4s --two-stems kazoo -o "$WORK/out" "$MIX3" &&
    expect_one_line_error two_stems_unknown
grep -q "drums, bass, other, vocals" "$WORK/two_stems_unknown.err" || fail "--two-stems error does not list the sources"
expect_rc segment_long 2 separate --repo "$MODELS" -n tiny4s --segment 8 -o "$WORK/out" "$MIX3" &&
    expect_one_line_error segment_long
expect_rc same_name 2 separate --repo "$MODELS" -n tiny4s --filename '{track}.{ext}' -o "$WORK/out" "$MIX3" &&
    expect_one_line_error same_name
expect_rc no_tracks 2 separate --repo "$MODELS" -n tiny4s -o "$WORK/out"
expect_no_files "$WORK/out"

# models list / path against a local folder and the (empty) cache.
expect_rc list_repo 0 models list --repo "$MODELS"
for m in tiny4s tiny6s tinybag; do grep -q "^$m " "$WORK/list_repo.out" || fail "models list --repo misses $m"; done
expect_rc list_cache 0 models list
for m in htdemucs htdemucs_ft htdemucs_6s; do
    grep -q "^$m .*not cached" "$WORK/list_cache.out" || fail "models list: $m not shown as not cached"
done
expect_rc path_repo 0 models path --repo "$MODELS" tinybag
[ "$(cat "$WORK/path_repo.out")" = "$MODELS/tinybag.yaml" ] || fail "models path tinybag: $(cat "$WORK/path_repo.out")"
expect_rc path_repo_th 0 models path --repo "$MODELS" tiny4s
[ "$(cat "$WORK/path_repo_th.out")" = "$MODELS/tiny4s.th" ] || fail "models path tiny4s: $(cat "$WORK/path_repo_th.out")"
expect_rc path_uncached 1 models path htdemucs
[ "$(cat "$WORK/path_uncached.out")" = "$DEMIX_MODELS/955717e8-8726e21a.th" ] ||
    fail "models path htdemucs: $(cat "$WORK/path_uncached.out")"
expect_rc path_unknown 1 models path --repo "$MODELS" nosuchmodel && expect_one_line_error path_unknown
finish
