/*
 * test_audio_errors.c - inputs the decoder must refuse cleanly: missing
 * files and directories (DMX_ERR_IO), empty, text, image, truncated and
 * garbage files (DMX_ERR_DECODE), and playlists or concat lists that would
 * make FFmpeg read other files. Each failure leaves a one-line detail.
 */
#include "test_audio_util.h"

static void expect_fail(const char *name, dmx_status want, const char *substr) {
    const char *path = name[0] == '/' ? name : ta_path(name);
    dmx_decoder *dec = (dmx_decoder *)&dec; /* must be reset to NULL */
    dmx_status st = dmx_decoder_open(path, 44100, 2, &dec);
    CHECK_MSG(st == want, "%s: got %s (%s), want %s", name, dmx_status_name(st),
              dmx_last_error(), dmx_status_name(want));
    CHECK(dec == NULL);
    CHECK_MSG(ta_one_line_error(), "%s: detail '%s'", name, dmx_last_error());
    if (substr) CHECK_MSG(strstr(dmx_last_error(), substr) != NULL, "%s: detail '%s'", name,
                          dmx_last_error());
    fprintf(stderr, "  %-12s -> %s: %s\n", name, dmx_status_name(st), dmx_last_error());
    if (st == DMX_OK) dmx_decoder_close(dec);
    /* The whole-file loader fails the same way. */
    float **p = (float **)&p;
    int64_t n = 7;
    CHECK(dmx_audio_load(path, 44100, 2, &p, &n) == want && p == NULL && n == 0);
}

int main(void) {
    ta_setup();
    /* A good file to damage. */
    REQUIRE(TA_FFMPEG("-f lavfi -i sine=frequency=440:duration=3 -c:a libmp3lame good.mp3") == 0);
    REQUIRE(TA_FFMPEG("-f lavfi -i sine=frequency=440:duration=1 -c:a pcm_s16le "
                      "-fflags +bitexact -flags:a +bitexact good.wav") == 0);

    expect_fail("missing.wav", DMX_ERR_IO, "No such file");
    expect_fail("/nonexistent-dir/x.mp3", DMX_ERR_IO, "cannot open");
    REQUIRE(ta_sh("mkdir adir") == 0);
    expect_fail("adir", DMX_ERR_IO, "directory");

    REQUIRE(write_file(ta_path("empty.wav"), "", 0) == 0);
    expect_fail("empty.wav", DMX_ERR_DECODE, "empty");
    const char *text = "This is not audio.\nJust some text, a few lines of it.\n";
    REQUIRE(write_file(ta_path("notes.txt"), text, strlen(text)) == 0);
    expect_fail("notes.txt", DMX_ERR_DECODE, NULL);
    REQUIRE(write_file(ta_path("notes.mp3"), text, strlen(text)) == 0);
    expect_fail("notes.mp3", DMX_ERR_DECODE, NULL);
    REQUIRE(TA_FFMPEG("-f lavfi -i color=c=red:s=32x32 -frames:v 1 pic.png") == 0);
    expect_fail("pic.png", DMX_ERR_DECODE, "no audio");
    REQUIRE(TA_FFMPEG("-f lavfi -i testsrc=duration=1:size=64x48:rate=5 -c:v mpeg4 "
                      "silent.mp4") == 0);
    expect_fail("silent.mp4", DMX_ERR_DECODE, "no audio");

    /* Truncations of a valid mp3 (its header, then its first frame). */
    REQUIRE(ta_sh("head -c 10 good.mp3 > trunc10.mp3 && head -c 60 good.mp3 > trunc60.mp3") == 0);
    expect_fail("trunc10.mp3", DMX_ERR_DECODE, NULL);
    expect_fail("trunc60.mp3", DMX_ERR_DECODE, NULL);
    /* A WAV header with no samples after it. */
    REQUIRE(ta_sh("head -c 44 good.wav > hdr.wav") == 0);
    expect_fail("hdr.wav", DMX_ERR_DECODE, "no audio");
    /* Random bytes with an audio extension. */
    unsigned char junk[20000];
    uint32_t s = 7;
    for (size_t i = 0; i < sizeof junk; i++) {
        s = s * 1664525u + 1013904223u;
        junk[i] = (unsigned char)(s >> 24);
    }
    REQUIRE(write_file(ta_path("junk.flac"), junk, sizeof junk) == 0);
    expect_fail("junk.flac", DMX_ERR_DECODE, NULL);
    REQUIRE(write_file(ta_path("junk.m4a"), junk, sizeof junk) == 0);
    expect_fail("junk.m4a", DMX_ERR_DECODE, NULL);

    /* Containers that point at other files are not followed. */
    const char *m3u8 = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\ngood.wav\n"
                       "#EXT-X-ENDLIST\n";
    REQUIRE(write_file(ta_path("list.m3u8"), m3u8, strlen(m3u8)) == 0);
    expect_fail("list.m3u8", DMX_ERR_DECODE, NULL);
    const char *concat = "ffconcat version 1.0\nfile good.wav\n";
    REQUIRE(write_file(ta_path("list.ffconcat"), concat, strlen(concat)) == 0);
    expect_fail("list.ffconcat", DMX_ERR_DECODE, NULL);

    /* A file name with a colon is still a local file, not a protocol. */
    REQUIRE(ta_sh("cp good.wav 'http:x.wav'") == 0);
    dmx_decoder *dec = NULL;
    CHECK(dmx_decoder_open(ta_path("http:x.wav"), 44100, 2, &dec) == DMX_OK);
    dmx_decoder_close(dec);

    /* Damage in the middle of a file is skipped, not fatal. */
    REQUIRE(ta_sh("cp good.mp3 mid.mp3 && dd if=/dev/urandom of=mid.mp3 bs=1 seek=20000 "
                  "count=3000 conv=notrunc status=none") == 0);
    float **p = NULL;
    int64_t n = 0;
    CHECK(dmx_audio_load(ta_path("mid.mp3"), 44100, 2, &p, &n) == DMX_OK);
    CHECK_MSG(n > 44100 * 2, "damaged mp3 gave %lld frames", (long long)n);
    dmx_audio_free(p, 2);

    /* Bad arguments. */
    CHECK(dmx_decoder_open(NULL, 44100, 2, &dec) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_decoder_open("", 44100, 2, &dec) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_decoder_open(ta_path("good.wav"), -1, 2, &dec) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_decoder_open(ta_path("good.wav"), 44100, 9, &dec) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_decoder_open(ta_path("good.wav"), 44100, 2, NULL) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_audio_load(ta_path("good.wav"), 0, 2, &p, &n) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_decoder_read(NULL, NULL, 1, &n) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_decoder_rewind(NULL) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_decoder_duration_hint(NULL) == -1);

    /* A decoder whose file vanished cannot rewind, but still closes. */
    REQUIRE(ta_sh("cp good.wav gone.wav") == 0);
    REQUIRE(dmx_decoder_open(ta_path("gone.wav"), 44100, 2, &dec) == DMX_OK);
    REQUIRE(unlink(ta_path("gone.wav")) == 0);
    CHECK(dmx_decoder_rewind(dec) == DMX_ERR_IO);
    float buf[16], *dst[2] = {buf, buf + 8};
    CHECK(dmx_decoder_read(dec, dst, 8, &n) == DMX_ERR_IO);
    dmx_decoder_close(dec);

    ta_cleanup();
    return dmx_test_done("test_audio_errors");
}
