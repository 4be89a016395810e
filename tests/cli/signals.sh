#!/usr/bin/env bash
# signals.sh - `demix separate` stopped by SIGINT (Ctrl-C), SIGTERM (kill,
# systemd, docker stop) or SIGHUP (terminal closed, ssh dropped): each takes
# the same path, removes every partial output (".part", ".spill.part", the
# folders it made) and exits with 128 + the signal (130, 143, 129). A
# hangup that comes twice still lets the cleanup finish.
. "$(dirname "$0")/lib.sh"
# 48 s of audio with 2 shifts: long enough to be caught in the middle.
sox "$MIX12" "$MIX12" "$MIX12" "$MIX12" "$WORK/long.wav" 2>/dev/null

# stop_with NAME SIGNAL...: starts a separation, sends the signals once its
# partial files exist, checks the exit status and that nothing is left.
stop_with() {
    local name=$1; shift
    local out="$WORK/out_$name" want=$((128 + $(kill -l "$1")))
    "$DEMIX" separate --repo "$MODELS" -n tiny4s --shifts 2 -o "$out" "$WORK/long.wav" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null &
    local pid=$! i s
    for i in $(seq 600); do
        [ -n "$(find "$out" -name '*.part' 2>/dev/null | head -n1)" ] && break
        sleep 0.1
    done
    [ -n "$(find "$out" -name '*.part' 2>/dev/null | head -n1)" ] || fail "$name: no .part file appeared"
    for s in "$@"; do kill -"$s" "$pid"; done
    wait "$pid"
    local rc=$?
    [ "$rc" -eq "$want" ] && pass "$name: exit $rc" || fail "$name: exit $rc, expected $want"
    grep -q "runtime error:\|Sanitizer" "$WORK/$name.err" && fail "$name: sanitizer report"
    grep -q "interrupted" "$WORK/$name.err" || fail "$name: no 'interrupted' message: $(cat "$WORK/$name.err")"
    expect_no_files "$out"
    [ -z "$(find "$out" -name '*.part' 2>/dev/null)" ] && pass "$name: no partial files left"
}
stop_with int INT
stop_with term TERM
stop_with hup HUP
stop_with hup_twice HUP HUP
finish
