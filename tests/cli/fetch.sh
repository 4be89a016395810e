#!/usr/bin/env bash
# fetch.sh - `demix models fetch/verify/path` against a local HTTP server on
# 127.0.0.1 (tests/cli/httpd.c, a free port it picks): a checkpoint whose
# name carries its real sha256 prefix is cached; a wrong hash is rejected and
# removed; a dropped connection resumes with Range on the next fetch; a server
# that ignores Range, a stale .part, a stall and a 404 are all handled.
. "$(dirname "$0")/lib.sh"
: "${HTTPD:?}"
SRV="$WORK/srv"; mkdir -p "$SRV"
sha=$(sha256sum "$MODELS/tiny4s.th" | cut -c1-8)
GOOD="tiny4s-$sha.th"
cp "$MODELS/tiny4s.th" "$SRV/$GOOD"
bad=00000000; [ "$(sha256sum "$MODELS/tiny6s.th" | cut -c1-8)" = $bad ] && bad=ffffffff
BAD="tiny6s-$bad.th"
cp "$MODELS/tiny6s.th" "$SRV/$BAD"
SIZE=$(stat -c %s "$SRV/$GOOD")

PID=""
start_server() {
    stop_server
    rm -f "$WORK/port" "$WORK/http.log"
    "$HTTPD" --root "$SRV" --port-file "$WORK/port" --log "$WORK/http.log" --lifetime 120 "$@" &
    PID=$!
    for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
    [ -s "$WORK/port" ] || { fail "test server did not start"; finish; }
    export DEMIX_MODEL_URL="http://127.0.0.1:$(cat "$WORK/port")/"
}
stop_server() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; PID=""; fi; }
trap stop_server EXIT
use_cache() { export DEMIX_MODELS="$WORK/$1"; rm -rf "$DEMIX_MODELS"; }
same_file() { cmp -s "$1" "$2" || fail "$1 differs from $2"; }
no_part() { [ -z "$(find "$DEMIX_MODELS" -name '*.part' 2>/dev/null)" ] || fail "$1: .part file left in the cache"; }

# 1. A good download is cached, verifies, resolves and separates.
start_server
use_cache cache_good
if expect_rc good 0 models fetch "$GOOD"; then
    same_file "$DEMIX_MODELS/$GOOD" "$MODELS/tiny4s.th"
    no_part good
fi
expect_rc verify_good 0 models verify && grep -q "^ok .*$GOOD" "$WORK/verify_good.out" ||
    fail "models verify does not report $GOOD as ok"
expect_rc path_cached 0 models path tiny4s
[ "$(cat "$WORK/path_cached.out")" = "$DEMIX_MODELS/$GOOD" ] || fail "models path tiny4s: $(cat "$WORK/path_cached.out")"
expect_rc list_cached 0 models list && grep -q "^tiny4s .*$GOOD" "$WORK/list_cached.out" ||
    fail "models list does not show the cached tiny4s"
if expect_rc sep_cached 0 separate -n tiny4s --shifts 0 -o "$WORK/out" "$MIX3"; then
    expect_file "$WORK/out/tiny4s/mix_3s/vocals.wav"
fi
# Fetching again is a no-op that verifies the cached file.
expect_rc good_again 0 models fetch "$GOOD" && grep -q "verified" "$WORK/good_again.out" ||
    fail "second fetch did not verify the cached file"

# 2. A damaged cached file fails verify and is replaced by fetch.
printf 'x' >>"$DEMIX_MODELS/$GOOD"
expect_rc verify_damaged 1 models verify "$GOOD"
grep -q "MISMATCH" "$WORK/verify_damaged.out" || fail "verify does not report the mismatch"
expect_rc refetch 0 models fetch "$GOOD" && same_file "$DEMIX_MODELS/$GOOD" "$MODELS/tiny4s.th"

# 3. A file whose content does not match its name is rejected and removed.
use_cache cache_bad
if expect_rc bad 1 models -q fetch "$BAD"; then
    expect_one_line_error bad
    grep -qi "checksum" "$WORK/bad.err" || fail "bad: the error does not mention the checksum"
fi
[ -e "$DEMIX_MODELS/$BAD" ] && fail "bad: the mismatching file was kept"
no_part bad

# 4. Not on the server: HTTP 404, nothing left.
expect_rc missing 1 models -q fetch tiny4s-deadbeef.th && expect_one_line_error missing
grep -q "404" "$WORK/missing.err" || fail "missing: no HTTP 404 in the error"
no_part missing
# A registry bag whose members are missing writes no YAML either.
expect_rc bag_missing 1 models fetch htdemucs_ft
[ -e "$DEMIX_MODELS/htdemucs_ft.yaml" ] && fail "bag_missing: htdemucs_ft.yaml written without its members"

# 5. The server drops the connection midway: the .part is kept, and the next
#    fetch asks for the rest with Range and verifies the whole.
start_server --drop-after 1000000 --drop-count 1
use_cache cache_resume
if expect_rc dropped 1 models -q fetch "$GOOD"; then
    expect_one_line_error dropped
    grep -q "resume" "$WORK/dropped.err" || fail "dropped: the error does not say how to resume"
fi
[ -e "$DEMIX_MODELS/$GOOD" ] && fail "dropped: an incomplete file entered the cache"
[ "$(stat -c %s "$DEMIX_MODELS/$GOOD.part" 2>/dev/null)" = 1000000 ] || fail "dropped: no 1000000-byte .part kept"
expect_rc verify_partial 0 models verify && grep -q "^partial" "$WORK/verify_partial.out" ||
    fail "verify does not mention the partial download"
if expect_rc resumed 0 models fetch "$GOOD"; then
    same_file "$DEMIX_MODELS/$GOOD" "$MODELS/tiny4s.th"
    grep -q "range=bytes=1000000- status 206 sent $((SIZE - 1000000))" "$WORK/http.log" ||
        { fail "resumed: no Range request for the rest"; cat "$WORK/http.log" >&2; }
    no_part resumed
fi

# 6. A server that ignores Range: the resumed fetch starts over and succeeds.
start_server --drop-after 1000000 --drop-count 1 --ignore-range
use_cache cache_norange
expect_rc norange_drop 1 models fetch "$GOOD"
if expect_rc norange 0 models fetch "$GOOD"; then
    same_file "$DEMIX_MODELS/$GOOD" "$MODELS/tiny4s.th"
    grep -q "range=bytes=1000000- status 200 sent $SIZE" "$WORK/http.log" ||
        { fail "norange: expected a Range request answered in full"; cat "$WORK/http.log" >&2; }
fi

# 7. A stale .part that is not a prefix of the file: the resumed result fails
#    the checksum, and one clean download follows.
start_server
use_cache cache_stale
mkdir -p "$DEMIX_MODELS" && head -c 5000 /dev/urandom >"$DEMIX_MODELS/$GOOD.part"
expect_rc stale 0 models fetch "$GOOD" && same_file "$DEMIX_MODELS/$GOOD" "$MODELS/tiny4s.th"
no_part stale

# 8. A stalled transfer gives up after DEMIX_STALL_TIMEOUT seconds.
start_server --stall-after 500000
use_cache cache_stall
start=$(date +%s)
if DEMIX_STALL_TIMEOUT=2 expect_rc stall 1 models -q fetch "$GOOD"; then
    expect_one_line_error stall
    grep -qi "stalled\|timeout\|timed out" "$WORK/stall.err" || fail "stall: the error does not say it timed out"
fi
[ $(( $(date +%s) - start )) -le 15 ] || fail "stall: took more than 15 s to give up"
[ -e "$DEMIX_MODELS/$GOOD" ] && fail "stall: an incomplete file entered the cache"
stop_server

# 9. A registry bag whose member checkpoints are already in the cache (here
#    tiny stand-ins under htdemucs_ft's file names) needs no download: demix
#    writes the bag's YAML, and the engine loads it and its four members.
use_cache cache_bag
mkdir -p "$DEMIX_MODELS"
for f in f7e0c4bc-ba3fe64a.th d12395a8-e57c48e6.th 92cfc3b6-ef3bcb9c.th 04573f0d-f3cf25b2.th; do
    ln -s "$MODELS/tiny4s.th" "$DEMIX_MODELS/$f"
done
if expect_rc bag 0 separate -n htdemucs_ft --shifts 0 -o "$WORK/out_bag" "$MIX3"; then
    expect_file "$DEMIX_MODELS/htdemucs_ft.yaml"
    for s in drums bass other vocals; do expect_file "$WORK/out_bag/htdemucs_ft/mix_3s/$s.wav"; done
    grep -q "downloading" "$WORK/bag.out" && fail "bag: claimed to download with every member present"
fi
expect_rc bag_path 0 models path htdemucs_ft
[ "$(cat "$WORK/bag_path.out")" = "$DEMIX_MODELS/htdemucs_ft.yaml" ] || fail "models path htdemucs_ft: $(cat "$WORK/bag_path.out")"
finish
