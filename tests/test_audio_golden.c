/*
 * test_audio_golden.c - float32 WAV is bit-exact: the golden input mixes
 * decode to exactly the arrays upstream Demucs saw (the inputs/ .npy files), and our
 * float WAV writer round-trips any float (out of range, tiny, -0) unchanged.
 */
#include "test_audio_util.h"

#include <float.h>

/* Decodes golden inputs/<name>.wav and compares with inputs/<name>.npy. */
static void check_golden(const char *name) {
    char wav[64], npy[64];
    snprintf(wav, sizeof wav, "inputs/%s.wav", name);
    snprintf(npy, sizeof npy, "inputs/%s.npy", name);
    npy_array ref;
    if (npy_load(golden_path(npy), &ref) != 0) {
        CHECK_MSG(0, "cannot load golden %s", golden_path(npy));
        return;
    }
    REQUIRE(ref.ndim == 2 && ref.shape[0] == 2);
    float **p = NULL;
    int64_t n = 0;
    dmx_status st = dmx_audio_load(golden_path(wav), 44100, 2, &p, &n);
    CHECK_MSG(st == DMX_OK, "%s: %s", wav, dmx_last_error());
    if (st == DMX_OK) {
        CHECK_MSG(n == ref.shape[1], "%s: %lld frames, npy has %lld", wav, (long long)n,
                  (long long)ref.shape[1]);
        if (n == ref.shape[1]) {
            CHECK(memcmp(p[0], ref.data, (size_t)n * sizeof(float)) == 0);
            CHECK(memcmp(p[1], ref.data + n, (size_t)n * sizeof(float)) == 0);
        }

        /* Written back as float WAV and decoded again: the same bits. */
        dmx_audio_format f;
        dmx_audio_format_init(&f, DMX_AUDIO_WAV);
        f.depth = DMX_DEPTH_F32;
        dmx_encoder *enc = NULL;
        REQUIRE(dmx_encoder_open(ta_path("rt.wav"), &f, 44100, 2, &enc) == DMX_OK);
        REQUIRE(dmx_encoder_write(enc, (const float *const *)p, n) == DMX_OK);
        REQUIRE(dmx_encoder_close(enc) == DMX_OK);
        float **q = NULL;
        int64_t m = 0;
        REQUIRE(dmx_audio_load(ta_path("rt.wav"), 44100, 2, &q, &m) == DMX_OK);
        CHECK(m == n);
        if (m == n) {
            CHECK(memcmp(p[0], q[0], (size_t)n * sizeof(float)) == 0);
            CHECK(memcmp(p[1], q[1], (size_t)n * sizeof(float)) == 0);
        }
        dmx_audio_free(q, 2);
        /* sox agrees on the header: same length and format. */
        CHECK(ta_sh("test \"$(soxi -s rt.wav 2>/dev/null)\" = %lld && soxi -e rt.wav 2>/dev/null | grep -q Float",
                    (long long)n) == 0);
    }
    dmx_audio_free(p, 2);
    npy_free(&ref);
}

/* Arbitrary floats, including ones far outside [-1, 1], subnormals and -0. */
static void check_any_float(void) {
    const int64_t n = 50000;
    float **p = ta_sine(2, n, 44100, 123.0, 0.9);
    uint32_t x = 12345;
    for (int64_t i = 0; i < n; i += 7) {
        x = x * 1664525u + 1013904223u;
        float v;
        uint32_t bits = x & 0x7f7fffffu; /* finite */
        memcpy(&v, &bits, sizeof v);
        p[i & 1][i] = (x & 0x80000000u) ? -v : v;
    }
    p[0][0] = -0.0f;
    p[0][1] = FLT_MIN / 4; /* subnormal */
    p[0][2] = 1.5f;
    p[0][3] = -7.25f;
    p[1][0] = FLT_MAX;
    p[1][1] = -FLT_MAX;
    dmx_audio_format f;
    REQUIRE(dmx_audio_format_from_name("wav", &f) == DMX_OK);
    f.depth = DMX_DEPTH_F32;
    dmx_encoder *enc = NULL;
    REQUIRE(dmx_encoder_open(ta_path("any.wav"), &f, 44100, 2, &enc) == DMX_OK);
    /* odd chunk sizes */
    int64_t pos = 0, step = 1;
    while (pos < n) {
        int64_t k = n - pos < step ? n - pos : step;
        const float *src[2] = {p[0] + pos, p[1] + pos};
        REQUIRE(dmx_encoder_write(enc, src, k) == DMX_OK);
        pos += k;
        step = step * 5 % 9973 + 1;
    }
    CHECK(dmx_encoder_frames(enc) == n);
    REQUIRE(dmx_encoder_close(enc) == DMX_OK);
    float **q = NULL;
    int64_t m = 0;
    REQUIRE(dmx_audio_load(ta_path("any.wav"), 44100, 2, &q, &m) == DMX_OK);
    CHECK(m == n);
    if (m == n) {
        CHECK(memcmp(p[0], q[0], (size_t)n * sizeof(float)) == 0);
        CHECK(memcmp(p[1], q[1], (size_t)n * sizeof(float)) == 0);
    }
    /* The file's data chunk holds exactly the interleaved floats. */
    size_t len = 0;
    unsigned char *raw = read_file(ta_path("any.wav"), &len);
    REQUIRE(raw && len >= (size_t)n * 8);
    const unsigned char *d = raw + len - (size_t)n * 8;
    int same = 1;
    for (int64_t i = 0; i < n && same; i++)
        same = memcmp(d + i * 8, &p[0][i], 4) == 0 && memcmp(d + i * 8 + 4, &p[1][i], 4) == 0;
    CHECK(same);
    free(raw);
    dmx_audio_free(q, 2);
    dmx_audio_free(p, 2);
}

int main(void) {
    ta_setup();
    check_golden("mix_3s");
    check_golden("mix_12s");
    check_any_float();
    ta_cleanup();
    return dmx_test_done("test_audio_golden");
}
