#!/usr/bin/env bash
# cache.sh - `demix serve` WITHOUT --repo (issue 12, bug 1): the models come
# from the cache (DEMIX_MODELS), where `demix models fetch` stores upstream's
# files under upstream's names. Tiny golden models stand in for the real
# checkpoints (linked at test time, never committed): tiny4s as htdemucs's
# 955717e8-8726e21a.th, tiny6s as htdemucs_6s's 5c90dfd2-34c22ccb.th, and
# tiny6s again as a user's own `mine-<sha>.th`. GET /models must list the
# user-facing names with their sources, and POST /separate model_name=htdemucs
# (the service's default) must run.
. "$(dirname "$0")/lib.sh"
CACHE="$WORK/cache"
mkdir -p "$CACHE"
ln -s "$GOLDEN/models/tiny4s.th" "$CACHE/955717e8-8726e21a.th"
ln -s "$GOLDEN/models/tiny6s.th" "$CACHE/5c90dfd2-34c22ccb.th"
sha=$(sha256sum "$GOLDEN/models/tiny6s.th" | cut -c1-8)
ln -s "$GOLDEN/models/tiny6s.th" "$CACHE/mine-$sha.th"
export DEMIX_MODELS="$CACHE" HOME="$WORK/home" # never the user's real cache
unset XDG_CACHE_HOME
MIX="$GOLDEN/inputs/mix_3s.wav"

NO_REPO=1 start "$WORK/server.log" --data-dir "$WORK/data" --workers 1 --rate-limit 0
get readyz 200 "$B/readyz"
get models 200 "$B/models"
names=$(json models 'sorted(m["name"] for m in d["models"])')
[ "$names" = "['htdemucs', 'htdemucs_6s', 'mine']" ] || fail "models: names $names (expected htdemucs, htdemucs_6s, mine)"
src() { json models "[m['sources'] for m in d['models'] if m['name'] == '$1']"; }
[ "$(src htdemucs)" = "[['drums', 'bass', 'other', 'vocals']]" ] || fail "models: htdemucs sources $(src htdemucs)"
[ "$(src htdemucs_6s)" = "[['drums', 'bass', 'other', 'vocals', 'guitar', 'piano']]" ] ||
    fail "models: htdemucs_6s sources $(src htdemucs_6s)"
[ "$(src mine)" = "[['drums', 'bass', 'other', 'vocals', 'guitar', 'piano']]" ] || fail "models: mine sources $(src mine)"
[ "$(json models "[(m['file'], m['location'], m['family'], m['loaded']) for m in d['models'] if m['name'] == 'htdemucs']")" = \
  "[('955717e8-8726e21a.th', 'cache', 'HTDemucs', False)]" ] || fail "models: htdemucs entry: $(head -c 600 "$WORK/models.body")"

# The service's default model, by the name users type, from the cache.
if get sep 200 -F "file=@$MIX" -F model_name=htdemucs "$B/separate?wait=true"; then
    body_has sep '"status":"done"'
    [ "$(json sep 'sorted(s["name"] for s in d["stems"])')" = "['bass', 'drums', 'other', 'vocals']" ] || fail "sep: stems $(json sep 'd.get("stems")')"
fi
# No model_name at all: the same default.
get sep_default 200 -F "file=@$MIX" "$B/separate?wait=true" && body_has sep_default '"status":"done"' \
    && body_has sep_default '"model":"htdemucs"'
# The signature itself also resolves (upstream's `-n 955717e8`).
get sep_sig 200 -F "file=@$MIX" -F model_name=955717e8 "$B/separate?wait=true" && body_has sep_sig '"status":"done"'
get models2 200 "$B/models"
[ "$(json models2 "[m['loaded'] for m in d['models'] if m['name'] == 'htdemucs']")" = "[True]" ] ||
    fail "models2: htdemucs not shown as loaded"
# A known model that is not in the cache is unknown to the service (it never downloads).
get ft 400 -F "file=@$MIX" -F model_name=htdemucs_ft "$B/separate" && body_has ft '"code":"unknown_model"'

# An empty cache: nothing listed, not ready.
stop_term 30
rm -f "$CACHE"/*
NO_REPO=1 start "$WORK/server2.log" --data-dir "$WORK/data2" --workers 1
get empty 200 "$B/models" && body_has empty '"models":\[\]'
get empty_ready 503 "$B/readyz"
stop_term 30
finish
