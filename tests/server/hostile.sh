# hostile.sh - integration test of `demix serve` against hostile input:
# odd bytes and traversal in ids and file names, oversized headers,
# malformed multipart (missing, duplicate and over-long parts, wrong
# boundary or content type), uploads past the size limit (also chunked),
# audio that decodes to hours (with and without a duration in the
# container, and with a lying one), empty audio, NaN/Inf float WAVs,
# 8 channels at 384 kHz, invalid UTF-8 in fields, and the API key. Every
# refusal must carry the right status and a valid JSON error body, and
# after each group the server must still be healthy with no upload left.
. "$(dirname "$0")/lib.sh"

D="$WORK/data"
L="$WORK/server.log"
KEY=k3y
AUTH=$KEY
A=(-H "Authorization: Bearer $KEY")
DEMIX_API_KEY=$KEY start "$L" --data-dir "$D" --workers 1 --max-upload-mb 2 --max-duration 60 \
    --rate-limit 0
W3="$GOLDEN/inputs/mix_3s.wav"
ERR_MIN_ID_LEN=16 # err: request ids are at least 16 characters

# utf8_json NAME: the body is JSON in strict UTF-8.
utf8_json() {
    python3 -c 'import json,sys; json.loads(open(sys.argv[1],"rb").read().decode("utf-8"))' "$WORK/$1.body" \
        || fail "$1: body is not UTF-8 JSON"
}
# healthy WHAT: /health answers 200, the process lives, no upload is left.
healthy() {
    kill -0 "$PID" 2>/dev/null || { fail "$1: server died"; cat "$L" | tail -5 >&2; exit 1; }
    get health 200 --max-time 10 "$B/health" >/dev/null || fail "$1: /health failed"
    empty_soon "$D/uploads" && pass "$1: healthy, no upload left" \
        || fail "$1: uploads left: $(ls "$D/uploads")"
}

# ---- a finished job to aim at ---------------------------------------------------------------
sox "$W3" "$WORK/s1.wav" trim 0 1
get base 200 "${A[@]}" -F "file=@$WORK/s1.wav" -F model_name=tiny4s "$B/separate?wait=true"
ID=$(json base 'd["id"]')

# ---- 1. traversal and odd bytes in ids ------------------------------------------------------------
LONG=$(head -c 5000 /dev/zero | tr '\0' a)
err id_dotdot 404 job_not_found "${A[@]}" "$B/jobs/%2e%2e"
err id_trav 404 not_found "${A[@]}" "$B/jobs/..%2f..%2fdemix.db"
err id_nul 404 job_not_found "${A[@]}" "$B/jobs/$ID%00"
err id_long 404 not_found "${A[@]}" "$B/jobs/$LONG"
err id_bytes 404 job_not_found "${A[@]}" "$B/jobs/%ff%fe%c3"
err id_utf8 404 job_not_found "${A[@]}" "$B/jobs/%C3%A9t%C3%A9"
err id_del 404 job_not_found "${A[@]}" -X DELETE "$B/jobs/%2e%2e"
err id_zip 404 job_not_found "${A[@]}" "$B/jobs/%2e%2e/zip"
err stem_dotdot 404 stem_not_found "${A[@]}" "$B/jobs/$ID/stems/%2e%2e"
err stem_trav 404 not_found "${A[@]}" "$B/jobs/$ID/stems/..%2f..%2f..%2fdemix.db"
err stem_input 404 stem_not_found "${A[@]}" "$B/jobs/$ID/stems/input"
err stem_nul 404 stem_not_found "${A[@]}" "$B/jobs/$ID/stems/vocals%00.wav"
err stem_bytes 404 stem_not_found "${A[@]}" "$B/jobs/$ID/stems/%ff%00%fe"
err stem_long 404 not_found "${A[@]}" "$B/jobs/$ID/stems/$LONG"
get stem_ok 200 "${A[@]}" "$B/jobs/$ID/stems/vocals"
healthy "ids"

# ---- 2. file names: kept as display text only --------------------------------------------------------
if get fn_trav 202 "${A[@]}" -F "file=@$WORK/s1.wav;filename=../../../etc/passwd" -F model_name=tiny4s "$B/separate"; then
    [ "$(json fn_trav 'd["filename"]')" = passwd ] && pass "traversal name reduced to its last component" \
        || fail "filename: $(json fn_trav 'd["filename"]')"
    get del1 200 "${A[@]}" -X DELETE "$B/jobs/$(json fn_trav 'd["id"]')"
fi
if get fn_bytes 202 "${A[@]}" -F "file=@$WORK/s1.wav;filename=$(printf 'a\xff\xfe\x01b.wav')" -F model_name=tiny4s "$B/separate"; then
    utf8_json fn_bytes
    [ "$(json fn_bytes 'd["filename"]')" = 'a???b.wav' ] && pass "invalid UTF-8 and controls in the name replaced" \
        || fail "filename: $(json fn_bytes 'repr(d["filename"])')"
    get del2 200 "${A[@]}" -X DELETE "$B/jobs/$(json fn_bytes 'd["id"]')"
fi
EE=$(python3 -c 'print("é" * 3000)')
if get fn_long 202 "${A[@]}" -F "file=@$WORK/s1.wav;filename=$EE" -F model_name=tiny4s "$B/separate"; then
    utf8_json fn_long
    n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1],encoding="utf-8"))["filename"].encode()))' "$WORK/fn_long.body")
    [ "$n" -le 255 ] && pass "long name cut to $n bytes" || fail "long name kept $n bytes"
    get del3 200 "${A[@]}" -X DELETE "$B/jobs/$(json fn_long 'd["id"]')"
fi
[ -z "$(find "$D" -name passwd)" ] || fail "a file named after the client's path exists"
healthy "file names"

# ---- 3. headers, content types, multipart structure ---------------------------------------------------
BIGH=$(head -c 100000 /dev/zero | tr '\0' a)
code=$(curl -sS -o /dev/null -w '%{http_code}' -H "X-Big: $BIGH" "$B/health")
case $code in 431|400) pass "100 KB header: $code" ;; *) fail "100 KB header: $code" ;; esac
MANY=()
for i in $(seq 300); do MANY+=(-H "X-H$i: $(head -c 200 /dev/zero | tr '\0' b)"); done
code=$(curl -sS -o /dev/null -w '%{http_code}' "${MANY[@]}" "$B/health")
case $code in 431|400) pass "60 KB of headers: $code" ;; *) fail "60 KB of headers: $code" ;; esac
err ct_none 415 unsupported_media_type "${A[@]}" -H 'Content-Type:' --data-binary "@$WORK/s1.wav" "$B/separate"
err ct_octet 415 unsupported_media_type "${A[@]}" -H 'Content-Type: application/octet-stream' --data-binary "@$WORK/s1.wav" "$B/separate"
err ct_urlenc 415 unsupported_media_type "${A[@]}" -d 'file=abc' "$B/separate"
err ct_noboundary 415 unsupported_media_type "${A[@]}" -H 'Content-Type: multipart/form-data' --data-binary "@$WORK/s1.wav" "$B/separate"
err ct_wrongboundary 400 missing_file "${A[@]}" -H 'Content-Type: multipart/form-data; boundary=zzz' --data-binary "@$WORK/s1.wav" "$B/separate"
err no_file 400 missing_file "${A[@]}" -F model_name=tiny4s "$B/separate"
err other_part 400 missing_file "${A[@]}" -F "upload=@$WORK/s1.wav" -F model_name=tiny4s "$B/separate"
err empty_file 400 missing_file "${A[@]}" -F "file=@/dev/null;filename=x.wav" -F model_name=tiny4s "$B/separate"
err dup_file 400 invalid_argument "${A[@]}" -F "file=@$WORK/s1.wav" -F "file=@$WORK/s1.wav" -F model_name=tiny4s "$B/separate" \
    && body_has dup_file "more than once"
err dup_field 400 invalid_argument "${A[@]}" -F "file=@$WORK/s1.wav" -F model_name=tiny4s -F model_name=tiny6s "$B/separate" \
    && body_has dup_field "model_name"
err long_field 400 invalid_argument "${A[@]}" -F "file=@$WORK/s1.wav" -F "model_name=$(head -c 300 /dev/zero | tr '\0' t)" "$B/separate" \
    && body_has long_field "longer than"
# A part that never ends (no closing boundary) is not a file.
printf -- '--bOuNdArY42\r\nContent-Disposition: form-data; name="model_name"\r\n\r\ntiny4s' >"$WORK/trunc.body.in"
err truncated 400 missing_file "${A[@]}" -H 'Content-Type: multipart/form-data; boundary=bOuNdArY42' --data-binary "@$WORK/trunc.body.in" "$B/separate"
healthy "multipart"

# ---- 4. size limit (2 MiB), also without Content-Length ------------------------------------------------
head -c 3000000 /dev/urandom >"$WORK/3m.bin"
err big_cl 413 payload_too_large "${A[@]}" -F "file=@$WORK/3m.bin" "$B/separate"
err big_chunked 413 payload_too_large "${A[@]}" -H 'Transfer-Encoding: chunked' -F "file=@$WORK/3m.bin" "$B/separate"
# Far past the limit the connection is cut rather than read to the end.
head -c 12000000 /dev/zero >"$WORK/12m.bin"
code=$(curl -sS -o /dev/null -w '%{http_code}' "${A[@]}" -H 'Transfer-Encoding: chunked' -F "file=@$WORK/12m.bin" "$B/separate" 2>/dev/null)
case $code in 000|100|413) pass "12 MB chunked upload: $code" ;; *) fail "12 MB chunked upload: $code" ;; esac
healthy "size limit"

# ---- 5. audio that is too long, empty, non-finite, unusual ----------------------------------------------------
# Three hours of silence at 1 kHz: 0.8 MB of FLAC.
ffmpeg -v error -y -f lavfi -i anullsrc=r=1000:cl=mono -t 10800 -c:a flac "$WORK/3h.flac"
# Encoded straight into a pipe: no length in STREAMINFO (a `-c copy` would
# copy the first file's STREAMINFO, length included).
ffmpeg -v error -y -f lavfi -i anullsrc=r=1000:cl=mono -t 10800 -c:a flac -f flac pipe: >"$WORK/3h_pipe.flac"
t0=$(date +%s.%N)
err long_flac 422 audio_too_long "${A[@]}" -F "file=@$WORK/3h.flac" -F model_name=tiny4s "$B/separate"
dt=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
python3 -c "import sys; sys.exit(0 if $dt < 10 else 1)" && pass "long audio refused in $dt s" || fail "long audio took $dt s to refuse"
# No length in the container: counting it would cost the HTTP thread seconds,
# so the upload is accepted at once and the worker stops at --max-duration.
if get long_nolen 200 "${A[@]}" -F "file=@$WORK/3h_pipe.flac" -F model_name=tiny4s "$B/separate?wait=true"; then
    body_has long_nolen '"code":"audio_too_long"'
fi
# A STREAMINFO that claims 30 s while 3 h follow: accepted, then the job stops
# at the limit with audio_too_long instead of separating 3 hours.
python3 - "$WORK/3h.flac" "$WORK/3h_lying.flac" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
assert b[:4] == b"fLaC"
v = int.from_bytes(b[18:26], "big")
v = (v & ~((1 << 36) - 1)) | 30000  # total samples: 30 s at 1 kHz
b[18:26] = v.to_bytes(8, "big")
b[26:42] = bytes(16)  # MD5 unknown
open(sys.argv[2], "wb").write(b)
PY
if get lying 200 "${A[@]}" -F "file=@$WORK/3h_lying.flac" -F model_name=tiny4s "$B/separate?wait=true"; then
    body_has lying '"code":"audio_too_long"'
    LY=$(json lying 'd["id"]')
    err lying_stem 404 stem_not_found "${A[@]}" "$B/jobs/$LY/stems/vocals"
fi
python3 - "$WORK" <<'PY'
import math, struct, sys
def wav(path, ch, rate, n, fn):
    data = b"".join(struct.pack("<%df" % ch, *fn(i)) for i in range(n))
    open(path, "wb").write(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 3, ch, rate, rate * ch * 4, ch * 4, 32)
        + b"data" + struct.pack("<I", len(data)) + data)
nan, inf = float("nan"), float("inf")
wav(sys.argv[1] + "/nan.wav", 2, 44100, 44100, lambda i: (
    nan if i % 100 == 0 else 0.3 * math.sin(i * 0.05),
    inf if i % 777 == 0 else -inf if i % 555 == 0 else 0.2 * math.sin(i * 0.01)))
wav(sys.argv[1] + "/empty.wav", 2, 44100, 0, None)
PY
err empty 422 undecodable_audio "${A[@]}" -F "file=@$WORK/empty.wav" -F model_name=tiny4s "$B/separate"
printf 'RIFF' >"$WORK/hdr_only.wav"
err hdr_only 422 undecodable_audio "${A[@]}" -F "file=@$WORK/hdr_only.wav" -F model_name=tiny4s "$B/separate"
# NaN/Inf samples are replaced by silence (docs/API.md): the job succeeds
# and its stems carry the finite part of the signal.
if get nan 200 "${A[@]}" -F "file=@$WORK/nan.wav" -F model_name=tiny4s "$B/separate?wait=true" \
    && body_has nan '"status":"done"'; then
    NID=$(json nan 'd["id"]')
    get nan_vocals 200 "${A[@]}" "$B/jobs/$NID/stems/vocals"
    python3 - "$WORK/nan_vocals.body" <<'PY' && pass "NaN input: finite, non-silent stems" || fail "NaN input gave silent stems"
import struct, sys, wave
w = wave.open(sys.argv[1])
d = struct.unpack("<%dh" % (w.getnframes() * w.getnchannels()), w.readframes(w.getnframes()))
sys.exit(0 if w.getnframes() == 44100 and max(abs(x) for x in d) > 100 else 1)
PY
    grep -q "NaN or infinite samples replaced" "$L" || fail "no log line about NaN samples"
fi
# 8 channels at 384 kHz: the first two channels, resampled to the model's 44.1 kHz.
ffmpeg -v error -y -f lavfi -i "sine=f=440:r=384000" -af "pan=7.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0|c6=c0|c7=c0" \
    -t 0.2 -c:a pcm_s24le "$WORK/ch8.wav"
if get ch8 200 "${A[@]}" -F "file=@$WORK/ch8.wav" -F model_name=tiny4s "$B/separate?wait=true" \
    && body_has ch8 '"status":"done"'; then
    get ch8_drums 200 "${A[@]}" "$B/jobs/$(json ch8 'd["id"]')/stems/drums"
    python3 - "$WORK/ch8_drums.body" <<'PY' && pass "8 ch 384 kHz -> stereo 44.1 kHz stems" || fail "8 ch 384 kHz stems wrong"
import sys, wave
w = wave.open(sys.argv[1])
sys.exit(0 if (w.getnchannels(), w.getframerate()) == (2, 44100) and abs(w.getnframes() - 8820) < 10 else 1)
PY
fi
healthy "audio"

# ---- 6. invalid UTF-8 in form fields ------------------------------------------------------------
X=$(printf '\xff\xc3')
err u_model 400 unknown_model "${A[@]}" -F "file=@$WORK/s1.wav" -F "model_name=tiny$X" "$B/separate"
err u_format 400 invalid_argument "${A[@]}" -F "file=@$WORK/s1.wav" -F model_name=tiny4s -F "format=wav$X" "$B/separate"
err u_stems 400 unknown_source "${A[@]}" -F "file=@$WORK/s1.wav" -F model_name=tiny4s -F "two_stems=voc$X" "$B/separate"
err u_shifts 400 invalid_argument "${A[@]}" -F "file=@$WORK/s1.wav" -F model_name=tiny4s -F "shifts=1$X" "$B/separate"
err u_overlap 400 invalid_argument "${A[@]}" -F "file=@$WORK/s1.wav" -F model_name=tiny4s -F "overlap=0.1$X" "$B/separate"
healthy "UTF-8 fields"

# ---- 7. API key -----------------------------------------------------------------------------------------
err k_none 401 unauthorized "$B/jobs/$ID"
err k_wrong 401 unauthorized -H "Authorization: Bearer ${KEY}x" "$B/jobs/$ID"
err k_prefix 401 unauthorized -H "Authorization: Bearer ${KEY:0:2}" "$B/jobs/$ID/stems/vocals"
err k_basic 401 unauthorized -H "Authorization: Basic $KEY" "$B/jobs/$ID/zip"
err k_empty 401 unauthorized -H "Authorization: Bearer " -X DELETE "$B/jobs/$ID"
err k_sep 401 unauthorized -F "file=@$WORK/s1.wav" "$B/separate"
err k_bytes 401 unauthorized -H "Authorization: Bearer $X" "$B/jobs"
get k_ok 200 "${A[@]}" "$B/jobs/$ID"
healthy "API key"

# ---- 8. invented methods and HEAD -----------------------------------------------------------------
# Invented methods get 405 and share one metric label, so they cannot fill
# the metric series table; HEAD answers like GET, without a body.
for i in $(seq 1 20); do curl -s -o /dev/null -X "FAKE$i" "$B/health"; done
get m_metrics 200 "$B/metrics"
n=$(grep -c '^http_requests_total{method="FAKE' "$WORK/m_metrics.body")
[ "$n" = 0 ] && pass "invented methods are not metric labels" || fail "$n series with invented methods"
grep -q '^http_requests_total{method="other",endpoint="/health",status="405"} 20' "$WORK/m_metrics.body" \
    && pass "invented methods counted as other" || fail "no method=\"other\" series"
code=$(curl -s -o "$WORK/m_head.body" -w '%{http_code}' -I "$B/health")
[ "$code" = 200 ] && pass "HEAD /health: 200" || fail "HEAD /health: $code"
healthy "methods"

python3 -c '
import json, sys
for l in open(sys.argv[1], "rb"):
    json.loads(l.decode("utf-8"))
' "$L" && pass "log lines are UTF-8 JSON" || fail "invalid log line"
finish
