# lib.sh - shared setup for the CLI test scripts (sourced, not run).
# The test's environment (set by tests/cli.cmake) provides:
#   DEMIX        the demix binary          CHECK   tests/cli/check.c's binary
#   HTTPD        tests/cli/httpd.c binary  GOLDEN  the golden fixture folder
#   WORK         a scratch folder for this test (emptied here)
set -u
: "${DEMIX:?}" "${GOLDEN:?}" "${WORK:?}"
rm -rf "$WORK" && mkdir -p "$WORK"
# Downloads in these tests go to 127.0.0.1 only, never through a proxy, and
# nothing may touch the user's real model cache.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
export DEMIX_MODELS="$WORK/cache"
export DEMIX_MODEL_URL="http://127.0.0.1:9/unused/"

# In a sanitizer build, make a sanitizer report impossible to mistake for
# demix's own exit status 1.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}exitcode=86"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}exitcode=86:print_stacktrace=1"

FAILURES=0
MODELS="$GOLDEN/models"
MIX3="$GOLDEN/inputs/mix_3s.wav"
MIX12="$GOLDEN/inputs/mix_12s.wav"

fail() { echo "FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
pass() { echo "ok: $*"; }

# run_demix NAME ARGS... : runs demix, output in $WORK/NAME.out/.err, rc in $RC
run_demix() {
    local name=$1; shift
    "$DEMIX" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null
    RC=$?
    if grep -q "runtime error:\|Sanitizer" "$WORK/$name.err"; then
        fail "$name: sanitizer report:"; sed 's/^/    /' "$WORK/$name.err" >&2
    fi
}

# expect_rc NAME WANT ARGS... : runs demix and checks its exit status
expect_rc() {
    local name=$1 want=$2; shift 2
    run_demix "$name" "$@"
    if [ "$RC" -ne "$want" ]; then
        fail "$name: exit $RC, expected $want (demix $*)"
        sed 's/^/    /' "$WORK/$name.err" >&2
        return 1
    fi
    pass "$name: exit $RC"
    return 0
}

# expect_one_line_error NAME : stderr of NAME is exactly one "demix: " line
expect_one_line_error() {
    local f="$WORK/$1.err"
    local n; n=$(grep -c '' "$f")
    if [ "$n" -ne 1 ] || ! head -n1 "$f" | grep -q '^demix: '; then
        fail "$1: expected one 'demix: ' line on stderr, got $n lines:"
        sed 's/^/    /' "$f" >&2
    else
        pass "$1: $(cat "$f")"
    fi
}

# expect_no_files DIR : no regular files (stems or .part) under DIR
expect_no_files() {
    if [ -d "$1" ] && [ -n "$(find "$1" -type f -o -type l | head -n1)" ]; then
        fail "files left in $1:"; find "$1" >&2
    fi
}

expect_file() { [ -f "$1" ] || fail "missing $1"; }

# expect_info FILE RATE CHANNELS FRAMES [CODEC] : the file as decoded
expect_info() {
    local got; got=$("$CHECK" info "$1")
    local want="$2 $3 $4"
    [ $# -ge 5 ] && want="$want $5" || got=${got% *}
    if [ "$got" != "$want" ]; then fail "$1: rate/channels/frames/codec '$got', expected '$want'";
    else pass "$1: $got"; fi
}

finish() {
    if [ "$FAILURES" -ne 0 ]; then echo "$FAILURES check(s) failed" >&2; exit 1; fi
    echo "all checks passed"
    exit 0
}
