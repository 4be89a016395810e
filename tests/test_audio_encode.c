/*
 * test_audio_encode.c - the streaming encoder: every output format written
 * and decoded back (lengths, quantisation, FLAC losslessness, MP3 settings),
 * sample conversion edge cases, the .part / rename protocol, abort, bad
 * arguments, and the format-name helpers.
 */
#include "test_audio_util.h"

#define RATE 44100
#define N 100000

static float **g_x; /* stereo test signal with edge values */

static void make_signal(void) {
    g_x = ta_sine(2, N, RATE, 440.0, 0.8);
    uint32_t s = 1;
    for (int64_t i = 0; i < N; i++) { /* ch1: sine + noise in [-1, 1] */
        s = s * 1103515245u + 12345u;
        g_x[1][i] = 0.5f * g_x[1][i] + 0.5f * ((float)(s >> 8) / (float)(1 << 23) * 2.0f - 1.0f);
    }
    const float edge[] = {1.0f, -1.0f, 1.5f, -1.5f, 0.99999f, -0.99999f, NAN, INFINITY,
                          -INFINITY, 1.0f / 65536, -1.0f / 65536, 3.0f / 65536, 0.0f, -0.0f};
    for (int k = 0; k < (int)(sizeof edge / sizeof edge[0]); k++) g_x[1][1000 + k] = edge[k];
}

/* Writes g_x (first `ch` channels) in chunks of varying size. */
static dmx_status encode(const char *name, const dmx_audio_format *f, int ch, int64_t n) {
    dmx_encoder *enc = NULL;
    dmx_status st = dmx_encoder_open(ta_path(name), f, RATE, ch, &enc);
    if (st) return st;
    /* While writing, only the .part file exists. */
    char part[600];
    snprintf(part, sizeof part, "%s.part", ta_path(name));
    CHECK(ta_exists(part) && !ta_exists(ta_path(name)));
    int64_t pos = 0, step = 3;
    while (pos < n) {
        int64_t k = n - pos < step ? n - pos : step;
        const float *src[2] = {g_x[0] + pos, g_x[1] + pos};
        const float *src1[1] = {g_x[1] + pos}; /* mono: the edge-value channel */
        st = dmx_encoder_write(enc, ch == 1 ? src1 : src, k);
        if (st) {
            dmx_encoder_abort(enc);
            return st;
        }
        pos += k;
        step = step * 7 % 4099 + 1;
    }
    CHECK(dmx_encoder_frames(enc) == n);
    st = dmx_encoder_close(enc);
    CHECK(!ta_exists(part));
    CHECK(st != DMX_OK || ta_exists(ta_path(name)));
    return st;
}

/* Expected integer sample: round to nearest after scaling, clipped; NaN 0. */
static double expect_int(float x, double scale) {
    if (x != x) return 0;
    double v = (double)x * scale;
    if (v >= scale - 1) return (scale - 1) / scale;
    if (v <= -scale) return -1.0;
    return (double)lrint(v) / scale;
}

static void check_int(const char *name, dmx_audio_container c, dmx_audio_depth depth) {
    const double scale = depth == DMX_DEPTH_S16 ? 32768.0 : 8388608.0;
    dmx_audio_format f;
    dmx_audio_format_init(&f, c);
    f.depth = depth;
    REQUIRE(encode(name, &f, 2, N) == DMX_OK);
    float **p = NULL;
    int64_t n = 0;
    REQUIRE(dmx_audio_load(ta_path(name), RATE, 2, &p, &n) == DMX_OK);
    CHECK_MSG(n == N, "%s: %lld frames", name, (long long)n);
    int exact = 1;
    double maxerr = 0;
    for (int ch = 0; ch < 2 && n == N; ch++)
        for (int64_t i = 0; i < N; i++) {
            float x = g_x[ch][i];
            if ((double)p[ch][i] != expect_int(x, scale)) exact = 0;
            if (x >= -1.0f && x <= 1.0f) {
                double e = fabs((double)p[ch][i] - x);
                if (e > maxerr) maxerr = e;
            }
        }
    CHECK_MSG(exact, "%s: samples differ from round-to-nearest with clipping", name);
    CHECK_MSG(maxerr <= 1.0 / scale, "%s: quantisation error %g", name, maxerr);
    if (n == N) {
        CHECK(p[1][1000] == (float)((scale - 1) / scale)); /* 1.0 clips to the top code */
        CHECK(p[1][1001] == -1.0f);
        CHECK(p[1][1006] == 0.0f); /* NaN */
        CHECK(p[1][1007] == (float)((scale - 1) / scale));
        CHECK(p[1][1008] == -1.0f);
    }
    dmx_audio_free(p, 2);
    /* Another program agrees on the length. */
    CHECK(ta_sh("test \"$(soxi -s %s 2>/dev/null)\" = %d", name, N) == 0);
}

static void test_lossless(void) {
    check_int("s16.wav", DMX_AUDIO_WAV, DMX_DEPTH_S16);
    check_int("s24.wav", DMX_AUDIO_WAV, DMX_DEPTH_S24);
    check_int("s16.flac", DMX_AUDIO_FLAC, DMX_DEPTH_S16);
    check_int("s24.flac", DMX_AUDIO_FLAC, DMX_DEPTH_S24);
    CHECK(ta_sh("soxi -b s24.flac | grep -qx 24 && soxi -b s16.flac | grep -qx 16") == 0);

    /* FLAC is lossless w.r.t. the same-depth WAV. */
    float **a = NULL, **b = NULL;
    int64_t na = 0, nb = 0;
    REQUIRE(dmx_audio_load(ta_path("s16.wav"), RATE, 2, &a, &na) == DMX_OK);
    REQUIRE(dmx_audio_load(ta_path("s16.flac"), RATE, 2, &b, &nb) == DMX_OK);
    CHECK(na == nb && memcmp(a[0], b[0], (size_t)na * 4) == 0 &&
          memcmp(a[1], b[1], (size_t)na * 4) == 0);
    /* Decoded s16 re-encodes to identical samples (and identical bytes). */
    dmx_encoder *enc = NULL;
    REQUIRE(dmx_encoder_open(ta_path("again.wav"), NULL, RATE, 2, &enc) == DMX_OK);
    REQUIRE(dmx_encoder_write(enc, (const float *const *)a, na) == DMX_OK);
    REQUIRE(dmx_encoder_close(enc) == DMX_OK);
    CHECK(ta_sh("cmp -s s16.wav again.wav") == 0);
    dmx_audio_free(a, 2);
    dmx_audio_free(b, 2);

    /* Float WAV: exact. */
    dmx_audio_format f;
    dmx_audio_format_init(&f, DMX_AUDIO_WAV);
    f.depth = DMX_DEPTH_F32;
    REQUIRE(encode("f32.wav", &f, 2, N) == DMX_OK);
    REQUIRE(dmx_audio_load(ta_path("f32.wav"), RATE, 2, &a, &na) == DMX_OK);
    CHECK(na == N && memcmp(a[0], g_x[0], (size_t)N * 4) == 0 &&
          memcmp(a[1], g_x[1], (size_t)N * 4) == 0);
    dmx_audio_free(a, 2);

    /* Mono and 6 channels. */
    REQUIRE(encode("mono.flac", NULL, 1, N) == DMX_OK);
    REQUIRE(dmx_audio_load_ex(ta_path("mono.flac"), 0, 0, &a, &na, NULL, NULL) == DMX_OK);
    CHECK(na == N && a[0][1000] == 32767.0f / 32768);
    dmx_audio_free(a, 1);
    float *six[6];
    for (int c = 0; c < 6; c++) six[c] = g_x[c & 1];
    REQUIRE(dmx_encoder_open(ta_path("six.wav"), NULL, RATE, 6, &enc) == DMX_OK);
    REQUIRE(dmx_encoder_write(enc, (const float *const *)six, 5000) == DMX_OK);
    REQUIRE(dmx_encoder_close(enc) == DMX_OK);
    int32_t och = 0;
    REQUIRE(dmx_audio_load_ex(ta_path("six.wav"), 0, 0, &a, &na, NULL, &och) == DMX_OK);
    CHECK(och == 6 && na == 5000);
    if (och == 6) CHECK(a[4][10] == expect_int(g_x[0][10], 32768) && a[5][10] == a[1][10]);
    dmx_audio_free(a, och);

    /* Deterministic bytes. */
    dmx_audio_format_init(&f, DMX_AUDIO_FLAC);
    REQUIRE(encode("det1.flac", &f, 2, N) == DMX_OK);
    REQUIRE(encode("det2.flac", &f, 2, N) == DMX_OK);
    CHECK(ta_sh("cmp -s det1.flac det2.flac") == 0);
}

static void test_mp3(void) {
    dmx_audio_format f;
    REQUIRE(dmx_audio_format_from_name("mp3", &f) == DMX_OK);
    CHECK(f.container == DMX_AUDIO_MP3 && f.mp3_bitrate == 320 && f.mp3_preset == 2);
    REQUIRE(encode("hi.mp3", &f, 2, N) == DMX_OK);
    f.mp3_bitrate = 128;
    f.mp3_preset = 7;
    REQUIRE(encode("lo.mp3", &f, 2, N) == DMX_OK);
    REQUIRE(encode("mono.mp3", &f, 1, N) == DMX_OK);
    const char *files[] = {"hi.mp3", "lo.mp3"};
    for (int k = 0; k < 2; k++) {
        float **p = NULL;
        int64_t n = 0;
        REQUIRE(dmx_audio_load(ta_path(files[k]), RATE, 2, &p, &n) == DMX_OK);
        /* FFmpeg's mp3 reader drops LAME's delay and padding (LAME tag). */
        CHECK_MSG(llabs(n - N) <= 1152, "%s: %lld frames for %d", files[k], (long long)n, N);
        int64_t m = n < N ? n : N;
        double r = ta_corr(p[0], g_x[0], 2000, m - 2000);
        CHECK_MSG(r > 0.999, "%s: correlation %.5f", files[k], r);
        fprintf(stderr, "%s: %lld frames (in %d), corr %.6f\n", files[k], (long long)n, N, r);
        dmx_audio_free(p, 2);
    }
    size_t hi = 0, lo = 0;
    unsigned char *b1 = read_file(ta_path("hi.mp3"), &hi), *b2 = read_file(ta_path("lo.mp3"), &lo);
    free(b1);
    free(b2);
    const double secs = (double)N / RATE;
    CHECK_MSG(fabs(hi - 320000 / 8 * secs) < 0.1 * 320000 / 8 * secs, "320k file: %zu bytes", hi);
    CHECK_MSG(fabs(lo - 128000 / 8 * secs) < 0.1 * 128000 / 8 * secs, "128k file: %zu bytes", lo);
    CHECK(ta_sh("soxi -r hi.mp3 2>/dev/null | grep -qx 44100 || ffprobe -v error "
                "-show_entries stream=sample_rate -of csv=p=0 hi.mp3 | grep -qx 44100") == 0);
    dmx_decoder *dec = NULL;
    REQUIRE(dmx_decoder_open(ta_path("mono.mp3"), 0, 0, &dec) == DMX_OK);
    CHECK(dmx_decoder_source_channels(dec) == 1);
    dmx_decoder_close(dec);

    /* Bad MP3 settings. */
    dmx_encoder *enc = NULL;
    f.mp3_preset = 8;
    CHECK(dmx_encoder_open(ta_path("x.mp3"), &f, RATE, 2, &enc) == DMX_ERR_INVALID_ARG);
    f.mp3_preset = 2;
    f.mp3_bitrate = 500;
    CHECK(dmx_encoder_open(ta_path("x.mp3"), &f, RATE, 2, &enc) == DMX_ERR_INVALID_ARG);
    f.mp3_bitrate = 320;
    CHECK(dmx_encoder_open(ta_path("x.mp3"), &f, 96000, 2, &enc) == DMX_ERR_UNSUPPORTED);
    CHECK(enc == NULL && ta_one_line_error());
    CHECK(!ta_exists(ta_path("x.mp3")) && !ta_exists(ta_path("x.mp3.part")));
}

static void test_part_and_abort(void) {
    dmx_encoder *enc = NULL;
    const float *src[2] = {g_x[0], g_x[1]};
    /* abort: nothing left behind */
    REQUIRE(dmx_encoder_open(ta_path("ab.wav"), NULL, RATE, 2, &enc) == DMX_OK);
    REQUIRE(dmx_encoder_write(enc, src, 10000) == DMX_OK);
    dmx_encoder_abort(enc);
    CHECK(!ta_exists(ta_path("ab.wav")) && !ta_exists(ta_path("ab.wav.part")));
    dmx_audio_format f;
    dmx_audio_format_init(&f, DMX_AUDIO_MP3);
    REQUIRE(dmx_encoder_open(ta_path("ab.mp3"), &f, RATE, 2, &enc) == DMX_OK);
    REQUIRE(dmx_encoder_write(enc, src, 10000) == DMX_OK);
    dmx_encoder_abort(enc);
    CHECK(!ta_exists(ta_path("ab.mp3")) && !ta_exists(ta_path("ab.mp3.part")));
    dmx_encoder_abort(NULL);
    CHECK(dmx_encoder_close(NULL) == DMX_ERR_INVALID_ARG);

    /* An existing file is replaced only by a successful close. */
    REQUIRE(write_file(ta_path("keep.wav"), "old", 3) == 0);
    REQUIRE(dmx_encoder_open(ta_path("keep.wav"), NULL, RATE, 2, &enc) == DMX_OK);
    REQUIRE(dmx_encoder_write(enc, src, 1000) == DMX_OK);
    dmx_encoder_abort(enc);
    size_t len = 0;
    unsigned char *b = read_file(ta_path("keep.wav"), &len);
    CHECK(b && len == 3 && memcmp(b, "old", 3) == 0);
    free(b);
    REQUIRE(dmx_encoder_open(ta_path("keep.wav"), NULL, RATE, 2, &enc) == DMX_OK);
    REQUIRE(dmx_encoder_write(enc, src, 1000) == DMX_OK);
    REQUIRE(dmx_encoder_close(enc) == DMX_OK);
    b = read_file(ta_path("keep.wav"), &len);
    CHECK(b && len == 44 + 4000);
    free(b);

    /* Zero frames: a valid, empty file, which the decoder calls "no audio". */
    REQUIRE(dmx_encoder_open(ta_path("empty.wav"), NULL, RATE, 2, &enc) == DMX_OK);
    REQUIRE(dmx_encoder_close(enc) == DMX_OK);
    CHECK(ta_sh("test \"$(soxi -s empty.wav 2>/dev/null)\" = 0") == 0);
    dmx_decoder *dec = NULL;
    CHECK(dmx_decoder_open(ta_path("empty.wav"), RATE, 2, &dec) == DMX_ERR_DECODE);
    CHECK(strstr(dmx_last_error(), "no audio") != NULL);

    /* Cannot create: missing directory -> I/O error, nothing created. */
    CHECK(dmx_encoder_open(ta_path("nodir/x.wav"), NULL, RATE, 2, &enc) == DMX_ERR_IO);
    CHECK(enc == NULL && ta_one_line_error());
    CHECK(strstr(dmx_last_error(), "nodir") != NULL);
    /* Read-only directory (skipped when running as root, which ignores it). */
    REQUIRE(ta_sh("mkdir ro && chmod 555 ro") == 0);
    if (access(ta_path("ro"), W_OK) != 0) {
        CHECK(dmx_encoder_open(ta_path("ro/x.wav"), NULL, RATE, 2, &enc) == DMX_ERR_IO);
        CHECK(!ta_exists(ta_path("ro/x.wav.part")));
    }
    REQUIRE(ta_sh("chmod 755 ro") == 0);

    /* Bad arguments. */
    CHECK(dmx_encoder_open(ta_path("y.wav"), NULL, RATE, 0, &enc) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_encoder_open(ta_path("y.wav"), NULL, RATE, 9, &enc) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_encoder_open(ta_path("y.wav"), NULL, 0, 2, &enc) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_encoder_open("", NULL, RATE, 2, &enc) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_encoder_open(NULL, NULL, RATE, 2, &enc) == DMX_ERR_INVALID_ARG);
    dmx_audio_format_init(&f, DMX_AUDIO_FLAC);
    f.depth = DMX_DEPTH_F32;
    CHECK(dmx_encoder_open(ta_path("y.flac"), &f, RATE, 2, &enc) == DMX_ERR_UNSUPPORTED);
    CHECK(ta_one_line_error());
    f.depth = (dmx_audio_depth)7;
    CHECK(dmx_encoder_open(ta_path("y.flac"), &f, RATE, 2, &enc) == DMX_ERR_INVALID_ARG);
    CHECK(!ta_exists(ta_path("y.wav")) && !ta_exists(ta_path("y.flac")) &&
          !ta_exists(ta_path("y.flac.part")));
    REQUIRE(dmx_encoder_open(ta_path("z.wav"), NULL, RATE, 2, &enc) == DMX_OK);
    CHECK(dmx_encoder_write(enc, NULL, 5) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_encoder_write(enc, src, -1) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_encoder_write(enc, src, 0) == DMX_OK);
    dmx_encoder_abort(enc);
}

static void test_names(void) {
    dmx_audio_format f;
    CHECK(dmx_audio_format_from_name("wav", &f) == DMX_OK && f.container == DMX_AUDIO_WAV &&
          f.depth == DMX_DEPTH_S16);
    CHECK(dmx_audio_format_from_name(".FLAC", &f) == DMX_OK && f.container == DMX_AUDIO_FLAC);
    CHECK(dmx_audio_format_from_name("Mp3", &f) == DMX_OK && f.container == DMX_AUDIO_MP3);
    CHECK(dmx_audio_format_from_name("ogg", &f) == DMX_ERR_UNSUPPORTED && ta_one_line_error());
    CHECK(dmx_audio_format_from_name("", &f) == DMX_ERR_UNSUPPORTED);
    CHECK(dmx_audio_format_from_name(NULL, &f) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_audio_format_from_path("out/a.b/song.MP3", &f) == DMX_OK &&
          f.container == DMX_AUDIO_MP3);
    CHECK(dmx_audio_format_from_path("x.y/song", &f) == DMX_ERR_UNSUPPORTED);
    CHECK(dmx_audio_format_from_path(".wav", &f) == DMX_ERR_UNSUPPORTED);
    CHECK(strcmp(dmx_audio_container_extension(DMX_AUDIO_WAV), "wav") == 0);
    CHECK(strcmp(dmx_audio_container_extension(DMX_AUDIO_FLAC), "flac") == 0);
    CHECK(strcmp(dmx_audio_container_extension(DMX_AUDIO_MP3), "mp3") == 0);
    CHECK(strcmp(dmx_audio_container_extension((dmx_audio_container)9), "") == 0);
    CHECK(dmx_audio_container_available(DMX_AUDIO_WAV));
    CHECK(dmx_audio_container_available(DMX_AUDIO_FLAC));
    CHECK(dmx_audio_container_available(DMX_AUDIO_MP3)); /* Debian's FFmpeg has LAME */
    CHECK(!dmx_audio_container_available((dmx_audio_container)9));
    CHECK_MSG(strcmp(dmx_audio_supported_formats(), "wav flac mp3") == 0, "supported: '%s'",
              dmx_audio_supported_formats());
}

int main(void) {
    ta_setup();
    make_signal();
    test_names();
    test_lossless();
    test_mp3();
    test_part_and_abort();
    dmx_audio_free(g_x, 2);
    ta_cleanup();
    return dmx_test_done("test_audio_encode");
}
