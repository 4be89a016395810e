/*
 * test_audio_decode.c - the streaming decoder on files made by the ffmpeg
 * CLI: every common format, PCM exactness, resampling, channel mapping
 * (mono, 5.1, mono mixdown), a video file's audio, chunked reads, rewind.
 */
#include "test_audio_util.h"

#define RATE 44100
#define N (2 * RATE) /* 2 s */

static float **g_ref; /* the stereo source signal, planar, N frames */

/* Loads `name` at 44.1 kHz stereo. */
static float **load(const char *name, int64_t *n) {
    float **p = NULL;
    dmx_status st = dmx_audio_load(ta_path(name), RATE, 2, &p, n);
    CHECK_MSG(st == DMX_OK, "%s: %s (%s)", name, dmx_status_name(st), dmx_last_error());
    return st == DMX_OK ? p : NULL;
}

/* Our decode equals what upstream Demucs reads through the ffmpeg CLI
 * (`ffmpeg -i FILE -ar 44100 -f f32le`), within `tol`. */
static void check_like_cli(const char *name, double tol) {
    REQUIRE(TA_FFMPEG("-i %s -ar 44100 -f f32le %s.cli.f32", name, name) == 0);
    char raw[256];
    snprintf(raw, sizeof raw, "%s.cli.f32", name);
    int64_t ncli = 0, n = 0;
    float **cli = ta_read_f32(raw, 2, &ncli);
    float **p = load(name, &n);
    if (p) {
        CHECK_MSG(n == ncli, "%s: %lld frames, ffmpeg CLI %lld", name, (long long)n,
                  (long long)ncli);
        int64_t m = n < ncli ? n : ncli;
        double d = fmax(ta_max_diff(p[0], cli[0], 0, m), ta_max_diff(p[1], cli[1], 0, m));
        CHECK_MSG(d <= tol, "%s: differs from the ffmpeg CLI by %g", name, d);
        fprintf(stderr, "%s: %lld frames, max diff to ffmpeg CLI %g\n", name, (long long)n, d);
    }
    dmx_audio_free(p, 2);
    dmx_audio_free(cli, 2);
}

/* Lossy formats: length close to N, and the waveform close to the source. */
static void check_lossy(const char *name, int64_t len_tol, double min_corr) {
    int64_t n = 0;
    float **p = load(name, &n);
    if (!p) return;
    CHECK_MSG(llabs(n - N) <= len_tol, "%s: %lld frames, expected %d +- %lld", name,
              (long long)n, N, (long long)len_tol);
    int64_t m = n < N ? n : N;
    for (int c = 0; c < 2; c++) {
        double r = ta_corr(p[c], g_ref[c], 4096, m - 4096);
        CHECK_MSG(r > min_corr, "%s ch%d: correlation %.5f", name, c, r);
    }
    dmx_audio_free(p, 2);
}

/* PCM-like formats: exact length, error within `tol` of the float source. */
static void check_pcm(const char *name, double tol) {
    int64_t n = 0;
    float **p = load(name, &n);
    if (!p) return;
    CHECK_MSG(n == N, "%s: %lld frames", name, (long long)n);
    if (n == N)
        for (int c = 0; c < 2; c++) {
            double d = ta_max_diff(p[c], g_ref[c], 0, N);
            CHECK_MSG(d <= tol, "%s ch%d: max diff %g > %g", name, c, d, tol);
        }
    dmx_audio_free(p, 2);
}

static void test_formats(void) {
    g_ref = ta_sine(2, N, RATE, 440.0, 0.5);
    ta_write_f32("src.f32", g_ref, 2, N);
#define IN "-f f32le -ar 44100 -ac 2 -i src.f32 "
    REQUIRE(TA_FFMPEG(IN "-c:a pcm_s16le s16.wav") == 0);
    REQUIRE(TA_FFMPEG(IN "-c:a pcm_s24le s24.wav") == 0);
    REQUIRE(TA_FFMPEG(IN "-c:a pcm_f32le f32.wav") == 0);
    REQUIRE(TA_FFMPEG(IN "-c:a pcm_u8 u8.wav") == 0);
    REQUIRE(TA_FFMPEG(IN "-c:a flac flac16.flac") == 0);
    REQUIRE(TA_FFMPEG(IN "-c:a flac -sample_fmt s32 -bits_per_raw_sample 24 flac24.flac") == 0);
    REQUIRE(TA_FFMPEG(IN "-c:a libmp3lame -b:a 192k a.mp3") == 0);
    REQUIRE(TA_FFMPEG(IN "-c:a libvorbis -q:a 5 a.ogg") == 0);
    REQUIRE(TA_FFMPEG(IN "-c:a libopus -b:a 128k a.opus") == 0);
    REQUIRE(TA_FFMPEG(IN "-c:a aac -b:a 192k a.m4a") == 0);
    REQUIRE(ta_sh("sox -D -r 44100 -c 2 -t f32 src.f32 -b 16 -e signed sox16.aiff") == 0);
#undef IN
    check_pcm("f32.wav", 0.0);
    check_pcm("s16.wav", 0.5 / 32768);
    check_pcm("s24.wav", 1.0 / 8388608); /* ffmpeg's encoder truncates */
    check_pcm("u8.wav", 1.0 / 128);
    check_pcm("flac16.flac", 0.5 / 32768);
    check_pcm("flac24.flac", 1.0 / 8388608);
    check_pcm("sox16.aiff", 1.0 / 32768);
    check_lossy("a.mp3", 0, 0.999);  /* the LAME tag makes mp3 gapless */
    check_lossy("a.ogg", 0, 0.999);
    check_lossy("a.opus", 2, 0.99);  /* 48 kHz inside: resampled back */
    check_lossy("a.m4a", 2048, 0.999); /* FFmpeg 5 keeps AAC's end padding */
    const char *all[] = {"a.mp3", "a.ogg", "a.opus", "a.m4a", "s24.wav", "flac16.flac", "u8.wav"};
    for (int i = 0; i < (int)(sizeof all / sizeof all[0]); i++) check_like_cli(all[i], 0.0);

    /* Integer PCM is scaled exactly as FFmpeg does: v / 32768. */
    int64_t n = 0;
    float **p = load("s16.wav", &n);
    if (p) {
        size_t len = 0;
        unsigned char *raw = read_file(ta_path("s16.wav"), &len);
        REQUIRE(raw && len >= 44 + (size_t)N * 4);
        const unsigned char *d = raw + len - (size_t)N * 4; /* samples end the file */
        int exact = 1;
        for (int64_t i = 0; i < N && exact; i++)
            for (int c = 0; c < 2; c++) {
                int16_t v = (int16_t)(d[(i * 2 + c) * 2] | d[(i * 2 + c) * 2 + 1] << 8);
                if (p[c][i] != v / 32768.0f) exact = 0;
            }
        CHECK(exact);
        free(raw);
        dmx_audio_free(p, 2);
    }

    /* Info and duration hint. */
    dmx_decoder *dec = NULL;
    REQUIRE(dmx_decoder_open(ta_path("a.mp3"), 0, 0, &dec) == DMX_OK);
    CHECK(dmx_decoder_rate(dec) == RATE);
    CHECK(dmx_decoder_channels(dec) == 2);
    CHECK(dmx_decoder_source_rate(dec) == RATE);
    CHECK(dmx_decoder_source_channels(dec) == 2);
    CHECK(strcmp(dmx_decoder_codec_name(dec), "mp3float") == 0 ||
          strcmp(dmx_decoder_codec_name(dec), "mp3") == 0);
    CHECK(strcmp(dmx_decoder_container_name(dec), "mp3") == 0);
    int64_t hint = dmx_decoder_duration_hint(dec);
    CHECK_MSG(llabs(hint - N) < RATE / 10, "mp3 duration hint %lld", (long long)hint);
    dmx_decoder_close(dec);
    REQUIRE(dmx_decoder_open(ta_path("a.opus"), RATE, 2, &dec) == DMX_OK);
    CHECK(dmx_decoder_source_rate(dec) == 48000);
    hint = dmx_decoder_duration_hint(dec);
    CHECK_MSG(llabs(hint - N) < RATE / 10, "opus duration hint %lld", (long long)hint);
    dmx_decoder_close(dec);
}

/* 48 kHz input resampled to 44.1 kHz: length and pitch preserved, close to an
 * ideal sine, and the same as the ffmpeg CLI's `-ar 44100` (what upstream
 * Demucs reads). */
static void test_resample(void) {
    const int64_t n48 = 3 * 48000;
    float **s = ta_sine(1, n48, 48000, 1000.0, 0.5);
    ta_write_f32("s48.f32", s, 1, n48);
    dmx_audio_free(s, 1);
    REQUIRE(TA_FFMPEG("-f f32le -ar 48000 -ac 1 -i s48.f32 -c:a pcm_f32le s48.wav") == 0);
    REQUIRE(TA_FFMPEG("-i s48.wav -ar 44100 -f f32le cli44.f32") == 0);

    int64_t n = 0;
    float **p = NULL;
    REQUIRE(dmx_audio_load(ta_path("s48.wav"), RATE, 2, &p, &n) == DMX_OK);
    const int64_t expect = (int64_t)llround((double)n48 * 44100.0 / 48000.0);
    CHECK_MSG(llabs(n - expect) <= 2, "resampled length %lld, expected %lld", (long long)n,
              (long long)expect);
    CHECK(memcmp(p[0], p[1], (size_t)n * sizeof(float)) == 0); /* mono -> both */
    /* 1 kHz for 3 s: 3000 upward zero crossings (minus the one at t = 0). */
    int64_t z = ta_zero_crossings(p[0], 0, n);
    CHECK_MSG(llabs(z - 3000) <= 1, "zero crossings %lld", (long long)z);
    float **ideal = ta_sine(1, n, RATE, 1000.0, 0.5);
    double d = ta_max_diff(p[0], ideal[0], 256, n - 256);
    CHECK_MSG(d < 2e-3, "resampled sine deviates by %g", d);
    dmx_audio_free(ideal, 1);

    int64_t ncli = 0;
    float **cli = ta_read_f32("cli44.f32", 1, &ncli);
    CHECK_MSG(llabs(ncli - n) <= 2, "ffmpeg CLI gave %lld frames, we %lld", (long long)ncli,
              (long long)n);
    int64_t m = ncli < n ? ncli : n;
    d = ta_max_diff(p[0], cli[0], 0, m);
    CHECK_MSG(d < 1e-4, "differs from ffmpeg -ar 44100 by %g", d);
    fprintf(stderr, "resample: %lld frames (cli %lld), max diff to ffmpeg CLI %g\n",
            (long long)n, (long long)ncli, d);
    dmx_audio_free(cli, 1);
    dmx_audio_free(p, 2);

    /* Same rate, mono -> stereo: both channels are the stored floats. */
    REQUIRE(dmx_audio_load(ta_path("s48.wav"), 48000, 2, &p, &n) == DMX_OK);
    float **src = ta_read_f32("s48.f32", 1, &ncli);
    CHECK(n == n48 && ncli == n48);
    if (n == n48) {
        CHECK(memcmp(p[0], src[0], (size_t)n * sizeof(float)) == 0);
        CHECK(memcmp(p[1], src[0], (size_t)n * sizeof(float)) == 0);
    }
    dmx_audio_free(src, 1);
    dmx_audio_free(p, 2);
}

/* Channel mapping as upstream convert_audio_channels. */
static void test_channels(void) {
    const int64_t n = RATE / 2;
    float *ch6[6];
    for (int k = 0; k < 6; k++) {
        ch6[k] = malloc((size_t)n * sizeof(float));
        REQUIRE(ch6[k]);
        for (int64_t i = 0; i < n; i++) ch6[k][i] = 0.1f * (float)(k + 1);
    }
    ta_write_f32("c6.f32", ch6, 6, n);
    for (int k = 0; k < 6; k++) free(ch6[k]);
    REQUIRE(TA_FFMPEG("-f f32le -ar 44100 -ac 6 -channel_layout 5.1 -i c6.f32 "
                      "-c:a pcm_f32le c6.wav") == 0);
    REQUIRE(TA_FFMPEG("-f f32le -ar 44100 -ac 6 -channel_layout 5.1 -i c6.f32 "
                      "-c:a flac c6.flac") == 0);

    const char *files[] = {"c6.wav", "c6.flac"};
    for (int f = 0; f < 2; f++) {
        float **p = NULL;
        int64_t got = 0;
        REQUIRE(dmx_audio_load(ta_path(files[f]), RATE, 2, &p, &got) == DMX_OK);
        CHECK(got == n);
        const float tol = f == 0 ? 0.0f : 1.0f / 32768;
        int ok = 1;
        for (int64_t i = 0; i < got; i++)
            if (fabsf(p[0][i] - 0.1f) > tol || fabsf(p[1][i] - 0.2f) > tol) ok = 0;
        CHECK_MSG(ok, "%s: 5.1 -> stereo must take the first two channels", files[f]);
        dmx_audio_free(p, 2);
    }
    /* Target mono: the mean of all channels (0.35), not an ffmpeg downmix. */
    float **p = NULL;
    int64_t got = 0;
    REQUIRE(dmx_audio_load(ta_path("c6.wav"), RATE, 1, &p, &got) == DMX_OK);
    int ok = 1;
    for (int64_t i = 0; i < got; i++)
        if (fabsf(p[0][i] - 0.35f) > 1e-6f) ok = 0;
    CHECK(got == n && ok);
    dmx_audio_free(p, 1);
    /* Stereo -> mono is (l + r) / 2. */
    REQUIRE(dmx_audio_load(ta_path("s16.wav"), RATE, 1, &p, &got) == DMX_OK);
    float **st = NULL;
    int64_t got2 = 0;
    REQUIRE(dmx_audio_load(ta_path("s16.wav"), RATE, 2, &st, &got2) == DMX_OK);
    ok = got == got2;
    for (int64_t i = 0; ok && i < got; i++)
        if (p[0][i] != (st[0][i] + st[1][i]) / 2) ok = 0;
    CHECK(ok);
    dmx_audio_free(p, 1);
    dmx_audio_free(st, 2);
    /* Keep the source's layout with 0 channels. */
    int32_t orate = 0, och = 0;
    REQUIRE(dmx_audio_load_ex(ta_path("c6.wav"), 0, 0, &p, &got, &orate, &och) == DMX_OK);
    CHECK(orate == RATE && och == 6 && got == n);
    if (och == 6) CHECK(p[5][0] == 0.6f);
    dmx_audio_free(p, och);
    /* Stereo cannot become 3 channels. */
    dmx_decoder *dec = NULL;
    CHECK(dmx_decoder_open(ta_path("s16.wav"), RATE, 3, &dec) == DMX_ERR_UNSUPPORTED);
    CHECK(dec == NULL && ta_one_line_error());
}

/* A video file: its (first) audio stream is decoded. */
static void test_video(void) {
    REQUIRE(TA_FFMPEG("-f lavfi -i testsrc=duration=2:size=160x120:rate=10 "
                      "-f lavfi -i sine=frequency=440:duration=2:sample_rate=48000 "
                      "-c:v mpeg4 -c:a aac -shortest v.mp4") == 0);
    REQUIRE(TA_FFMPEG("-f lavfi -i testsrc=duration=2:size=160x120:rate=10 "
                      "-f lavfi -i sine=frequency=440:duration=2 "
                      "-f lavfi -i sine=frequency=880:duration=2 "
                      "-map 0 -map 1 -map 2 -c:v mpeg4 -c:a flac v.mkv") == 0);
    float **p = NULL;
    int64_t n = 0;
    REQUIRE(dmx_audio_load(ta_path("v.mp4"), RATE, 2, &p, &n) == DMX_OK);
    CHECK_MSG(llabs(n - N) < RATE / 20, "video audio: %lld frames", (long long)n);
    double r = ta_rms(p[0], RATE / 4, n - RATE / 4);
    CHECK_MSG(r > 0.05, "video audio rms %g", r); /* sine source: amplitude 1/8 */
    int64_t z = ta_zero_crossings(p[0], 0, n);
    CHECK_MSG(llabs(z - 440 * n / RATE) <= 3, "video audio zero crossings %lld", (long long)z);
    dmx_audio_free(p, 2);
    /* Two audio streams after the video: the first (440 Hz) is used. */
    REQUIRE(dmx_audio_load(ta_path("v.mkv"), RATE, 2, &p, &n) == DMX_OK);
    z = ta_zero_crossings(p[0], 0, n);
    CHECK_MSG(llabs(z - 880) <= 3, "mkv: first audio stream expected, %lld crossings",
              (long long)z);
    dmx_audio_free(p, 2);
}

/* Chunked reads of odd sizes give the same samples as a whole load, and a
 * rewind replays the stream bit-identically. */
static void test_chunks_rewind(void) {
    const char *files[] = {"a.mp3", "a.opus", "s16.wav"};
    for (int f = 0; f < 3; f++) {
        float **whole = NULL;
        int64_t n = 0;
        REQUIRE(dmx_audio_load(ta_path(files[f]), RATE, 2, &whole, &n) == DMX_OK);
        dmx_decoder *dec = NULL;
        REQUIRE(dmx_decoder_open(ta_path(files[f]), RATE, 2, &dec) == DMX_OK);
        float *l = malloc((size_t)(n + 8192) * sizeof(float));
        float *r = malloc((size_t)(n + 8192) * sizeof(float));
        REQUIRE(l && r);
        for (int pass = 0; pass < 2; pass++) {
            int64_t pos = 0, got = 0, step = 1;
            int guard = 0;
            memset(l, 0, (size_t)(n + 8192) * sizeof(float));
            for (;;) {
                float *dst[2] = {l + pos, r + pos};
                int64_t want = step;
                if (pos + want > n + 8192) want = n + 8192 - pos;
                REQUIRE(dmx_decoder_read(dec, dst, want, &got) == DMX_OK);
                if (got == 0 || ++guard > 100000) break;
                pos += got;
                step = step * 3 + 1;
                if (step > 5000) step = 7;
            }
            CHECK_MSG(pos == n, "%s pass %d: %lld frames chunked, %lld whole", files[f], pass,
                      (long long)pos, (long long)n);
            CHECK(memcmp(l, whole[0], (size_t)n * sizeof(float)) == 0);
            CHECK(memcmp(r, whole[1], (size_t)n * sizeof(float)) == 0);
            /* Reading past the end keeps returning 0. */
            float *dst[2] = {l, r};
            CHECK(dmx_decoder_read(dec, dst, 10, &got) == DMX_OK && got == 0);
            if (pass == 0) CHECK(dmx_decoder_rewind(dec) == DMX_OK);
        }
        /* Rewind in the middle of the stream. */
        float *dst[2] = {l, r};
        int64_t got = 0;
        REQUIRE(dmx_decoder_rewind(dec) == DMX_OK);
        REQUIRE(dmx_decoder_read(dec, dst, 1000, &got) == DMX_OK);
        REQUIRE(dmx_decoder_rewind(dec) == DMX_OK);
        REQUIRE(dmx_decoder_read(dec, dst, 3000, &got) == DMX_OK);
        CHECK(got == 3000 && memcmp(l, whole[0], 3000 * sizeof(float)) == 0);
        CHECK(dmx_decoder_read(dec, dst, 0, &got) == DMX_OK && got == 0);
        CHECK(dmx_decoder_read(dec, dst, -1, &got) == DMX_ERR_INVALID_ARG);
        free(l);
        free(r);
        dmx_decoder_close(dec);
        dmx_audio_free(whole, 2);
    }
    dmx_decoder_close(NULL);
}

int main(void) {
    ta_setup();
    test_formats();
    test_resample();
    test_channels();
    test_video();
    test_chunks_rewind();
    dmx_audio_free(g_ref, 2);
    ta_cleanup();
    return dmx_test_done("test_audio_decode");
}
