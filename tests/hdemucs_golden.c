/*
 * hdemucs_golden.c - parity of the HDemucs v3 network (hdemucs.c) with
 * upstream on ../shared/golden/zoo (see its README). One executable, one
 * ctest per case:
 *   hdemucs_golden forward MODEL INPUT [LEN]
 *       model(mix[None, :, :LEN]) against zoo/outputs/MODEL_forward_*.npy,
 *       printing max|ours - ref| / max|ref| (must be <= 1e-4);
 *   hdemucs_golden separate NAME
 *       upstream's separator on zoo/inputs/mix_50s.wav (whole-track
 *       normalisation, apply_model shifts=0 overlap=0.25, 44 s chunks) with
 *       zoo/models/NAME.th or NAME.yaml through the public API, against
 *       NAME_separate_50s_win.npy (four 4410-sample windows) and
 *       NAME_separate_50s_sub97.npy (every 97th sample);
 *   hdemucs_golden layers MODEL INPUT
 *       every tapped activation against zoo/intermediates/MODEL/, naming the
 *       first layer that drifts; fails if a reference file went unchecked
 *       (the DConv-internal BLSTM/LocalState taps belong to dconv's tests).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "demix/demix.h"
#include "ckpt.h"
#include "hdemucs.h"
#include "net.h"
#include "testutil.h"

#define TOL 1e-4

static void *load(const char *model, dmx__net_desc *d) {
    dmx__ckpt *ck = tu_load_zoo_ckpt(model);
    void *net = NULL;
    dmx_status st = dmx__hdemucs_vt.build(ck, &net);
    if (st != DMX_OK) {
        fprintf(stderr, "cannot build %s: %s: %s\n", model, dmx_status_str(st), dmx_last_error());
        exit(1);
    }
    dmx__hdemucs_vt.describe(net, d);
    return net;
}

/* mix (A, len) from inputs/INPUT.npy, cut to `len` samples when len > 0. */
static float *load_mix(const char *input, int *len, int *A) {
    char rel[256];
    snprintf(rel, sizeof rel, "inputs/%s.npy", input);
    npy_array mix;
    REQUIRE(npy_load(golden_path(rel), &mix) == 0);
    int full = (int)mix.shape[1];
    *A = (int)mix.shape[0];
    if (*len <= 0 || *len > full) *len = full;
    float *x = malloc(sizeof(float) * (size_t)*A * *len);
    for (int c = 0; c < *A; c++) memcpy(x + (size_t)c * *len, mix.data + (size_t)c * full, sizeof(float) * *len);
    npy_free(&mix);
    return x;
}

/* ---- layer taps ---- */
static char *manifest;
static const char *tap_model;
static int checked, drifted;
static char first_drift[64];

/* Reads "MODEL/NAME": {"full_shape": [...], ..., strides} from the manifest. */
static int manifest_entry(const char *name, int64_t *shape, int *ndim, int *s2, int *s1) {
    char key[160];
    snprintf(key, sizeof key, "\"%s/%s\":", tap_model, name);
    const char *p = strstr(manifest, key);
    if (!p) return -1;
    const char *end = strchr(p, '}');
    const char *q = strstr(p, "\"full_shape\":");
    if (!q || q > end || !(q = strchr(q, '['))) return -1;
    q++;
    *ndim = 0;
    for (;;) {
        while (*q == ',' || *q == ' ' || *q == '\n' || *q == '\r' || *q == '\t') q++;
        if (*q < '0' || *q > '9' || *ndim == 8) break;
        shape[(*ndim)++] = strtoll(q, (char **)&q, 10);
    }
    if (*q != ']') return -1;
    q = strstr(p, "\"last_axis_stride\":");
    if (!q || q > end) return -1;
    *s1 = atoi(q + strlen("\"last_axis_stride\":"));
    q = strstr(p, "\"second_last_axis_stride\":");
    *s2 = (q && q < end) ? atoi(q + strlen("\"second_last_axis_stride\":")) : 1;
    return 0;
}

static void tap(void *user, const char *name, const float *data, int c, int h, int w) {
    (void)user;
    char rel[160];
    snprintf(rel, sizeof rel, "zoo/intermediates/%s/%s.npy", tap_model, name);
    FILE *f = fopen(golden_path(rel), "rb");
    if (!f) return; /* not every tap has a reference */
    fclose(f);
    int64_t shape[8];
    int nd, s1, s2;
    REQUIRE(manifest_entry(name, shape, &nd, &s2, &s1) == 0);
    npy_array ref;
    REQUIRE(npy_load(golden_path(rel), &ref) == 0);
    if (nd < 4) s2 = 1;
    int hs = (h + s2 - 1) / s2, ws = (w + s1 - 1) / s1;
    size_t n = ref.numel, k = 0;
    float *ours = malloc(sizeof(float) * (n > 0 ? n : 1));
    int is_spec = !strcmp(name, "spec"), is_mask = !strcmp(name, "mask_out");
    if (is_spec || is_mask) {
        /* reference (re/im, 1, G..., F, T); ours (G..., re/im, F, T) */
        int groups = c / 2;
        for (int ri = 0; ri < 2; ri++)
            for (int g = 0; g < groups && k <= n; g++)
                for (int y = 0; y < hs; y++)
                    for (int x = 0; x < ws && k < n + 1; x++, k++)
                        if (k < n) ours[k] = data[(((size_t)g * 2 + ri) * h + (size_t)y * s2) * w + (size_t)x * s1];
    } else {
        for (int ci = 0; ci < c; ci++)
            for (int y = 0; y < hs; y++)
                for (int x = 0; x < ws; x++, k++)
                    if (k < n) ours[k] = data[((size_t)ci * h + (size_t)y * s2) * w + (size_t)x * s1];
    }
    CHECK_MSG(k == n, "%s: %zu values (%d, %d, %d) vs reference %zu", name, k, c, h, w, n);
    if (k == n) {
        double mad, mref;
        double r = rel_max_err(ours, ref.data, n, &mad, &mref);
        printf("%-28s (%d, %d, %d)  ratio = %.3e\n", name, c, h, w, r);
        if (r > TOL && !drifted++) snprintf(first_drift, sizeof first_drift, "%s", name);
        checked++;
    }
    free(ours);
    npy_free(&ref);
}

/* 16-bit PCM WAV -> planar float (int16 / 32768), as FFmpeg's s16 -> flt. */
static float *load_wav16(const char *path, int *A, int64_t *len) {
    size_t n;
    unsigned char *b = read_file(path, &n);
    REQUIRE(b && n > 44 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WAVE", 4));
    size_t p = 12;
    int ch = 0, bits = 0;
    while (p + 8 <= n) {
        uint32_t sz = b[p + 4] | b[p + 5] << 8 | b[p + 6] << 16 | (uint32_t)b[p + 7] << 24;
        if (!memcmp(b + p, "fmt ", 4)) {
            ch = b[p + 10] | b[p + 11] << 8;
            bits = b[p + 22] | b[p + 23] << 8;
        } else if (!memcmp(b + p, "data", 4)) {
            REQUIRE(ch > 0 && bits == 16 && p + 8 + sz <= n);
            *A = ch;
            *len = sz / (2 * ch);
            float *x = malloc(sizeof(float) * (size_t)ch * *len);
            const unsigned char *d = b + p + 8;
            for (int64_t i = 0; i < *len; i++)
                for (int c = 0; c < ch; c++) {
                    size_t o = ((size_t)i * ch + c) * 2;
                    x[(size_t)c * *len + i] = (float)(int16_t)(d[o] | d[o + 1] << 8) / 32768.0f;
                }
            free(b);
            return x;
        }
        p += 8 + sz + (sz & 1);
    }
    REQUIRE(!"no data chunk");
    return NULL;
}

static int case_separate(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "zoo/models/%s.yaml", name);
    FILE *f = fopen(golden_path(rel), "rb");
    if (f) fclose(f);
    else snprintf(rel, sizeof rel, "zoo/models/%s.th", name);
    dmx_model *m = NULL;
    dmx_status st = dmx_model_load(golden_path(rel), &m);
    if (st != DMX_OK) {
        fprintf(stderr, "cannot load %s: %s: %s\n", rel, dmx_status_str(st), dmx_last_error());
        return 1;
    }
    int A;
    int64_t len;
    float *mix = load_wav16(golden_path("zoo/inputs/mix_50s.wav"), &A, &len);
    int S = dmx_model_n_sources(m);
    REQUIRE(A == dmx_model_channels(m) && S * A <= 64);
    float *out = tu_separate(m, mix, len, 1);
    static const int64_t starts[4] = {0, 1453095, 1938195, 2200590};
    const int width = 4410;
    float *win = tu_windows(out, S * A, len, starts, 4, width);
    snprintf(rel, sizeof rel, "zoo/outputs/%s_separate_50s_win.npy", name);
    tu_compare_npy(rel, 48, golden_path(rel), win, (size_t)4 * S * A * width, TOL);
    free(win);
    snprintf(rel, sizeof rel, "zoo/outputs/%s_separate_50s_sub97.npy", name);
    tu_compare_strided(rel, 48, golden_path(rel), out, S * A, len, 97, TOL);
    dmx_model_free(m);
    free(out);
    free(mix);
    snprintf(rel, sizeof rel, "hdemucs_golden separate %s", name);
    return dmx_test_done(rel);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "separate")) return case_separate(argv[2]);
    if (argc < 4) {
        fprintf(stderr, "usage: hdemucs_golden forward|layers MODEL INPUT [LEN] | separate NAME\n");
        return 2;
    }
    const char *mode = argv[1], *model = argv[2], *input = argv[3];
    int len = argc > 4 ? atoi(argv[4]) : 0, A;
    dmx__net_desc d;
    void *net = load(model, &d);
    float *mix = load_mix(input, &len, &A);
    REQUIRE(A == d.audio_channels);
    size_t nout = (size_t)d.n_sources * A * len;
    float *out = malloc(sizeof(float) * nout);
    dmx__arena ar;
    dmx__arena_init(&ar);
    char caseName[128];
    if (!strcmp(mode, "forward")) {
        dmx_status st = dmx__hdemucs_vt.forward(net, &ar, mix, len, out, NULL, NULL);
        CHECK_MSG(st == DMX_OK, "forward: %s", dmx_last_error());
        char rel[256];
        snprintf(rel, sizeof rel, "zoo/outputs/%s_forward_%ds.npy", model, len / d.samplerate);
        tu_compare_npy(rel, 40, golden_path(rel), out, nout, TOL);
        printf("arena high water: %.1f MB\n", ar.high_water / 1e6);
        snprintf(caseName, sizeof caseName, "hdemucs_golden forward %s", model);
    } else {
        size_t ml;
        manifest = (char *)read_file(golden_path("zoo/manifest.json"), &ml);
        REQUIRE(manifest);
        manifest = realloc(manifest, ml + 1);
        manifest[ml] = 0;
        tap_model = model;
        dmx_status st = dmx__hdemucs_vt.forward(net, &ar, mix, len, out, tap, NULL);
        CHECK_MSG(st == DMX_OK, "forward: %s", dmx_last_error());
        /* every reference except the DConv internals (BLSTM / LocalState) */
        char key[160];
        snprintf(key, sizeof key, "\"%s/", model);
        int want = 0;
        for (const char *p = strstr(manifest, key); p; p = strstr(p + 1, key)) {
            const char *e = strchr(p + 1, '"');
            int internal = 0;
            for (const char *q = p; q < e; q++)
                if (!strncmp(q, "_blstm", 6) || !strncmp(q, "_localstate", 11)) internal = 1;
            want += !internal;
        }
        printf("%d of %d layer references compared\n", checked, want);
        CHECK_MSG(checked == want, "compared %d layers, the manifest lists %d", checked, want);
        CHECK_MSG(!drifted, "first drifting layer: %s (%d layers over %.0e)", first_drift, drifted, TOL);
        free(manifest);
        snprintf(caseName, sizeof caseName, "hdemucs_golden layers %s", model);
    }
    dmx__arena_free(&ar);
    free(out);
    free(mix);
    dmx__hdemucs_vt.free(net);
    return dmx_test_done(caseName);
}
