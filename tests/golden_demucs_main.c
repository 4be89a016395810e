/*
 * golden_demucs_main.c - parity of the time-domain Demucs (demucs.c) with
 * upstream on the fixtures in ../shared/golden/zoo (see its README). One
 * executable, one ctest per case:
 *   golden_demucs <model>_forward_<3s|1s>  model(mix[None]) against
 *       zoo/outputs/<case>.npy, printing max|ours - ref| / max|ref| (<= 1e-4);
 *   golden_demucs layers     mdx_demucs_a_tiny's activations against
 *       zoo/intermediates/mdx_demucs_a_tiny, naming the first drifting layer;
 *   golden_demucs dequant    mdx_q_demucs_tiny's DiffQ-restored parameters
 *       against zoo/intermediates/mdx_q_demucs_tiny/dequant (bit-exact);
 *   golden_demucs dequant_extra   the same for mdx_extra_q_hdemucs_tiny's
 *       state (the newer meta with torch_pack False), named from its .txt.
 *   golden_demucs mdx_demucs_a_tiny_separate_50s   the whole-track pipeline
 *       (dmx_separate: segments, valid_length context, cross-fades) against
 *       zoo/outputs/<case>_win.npy and _sub97.npy.
 * The forwards drive the network through its dmx__net_vt directly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "demix/demix.h"
#include "net.h"
#include "testutil.h"

#define TOL 1e-4

typedef struct loaded {
    const dmx__net_vt *vt;
    void *net;
    dmx__net_desc d;
} loaded;

static loaded load(const char *model) {
    dmx__ckpt *ck = tu_load_zoo_ckpt(model);
    REQUIRE(!strcmp(dmx__ckpt_klass(ck), "demucs.demucs.Demucs"));
    loaded l = {&dmx__demucs_vt, NULL, {0}};
    dmx_status st = l.vt->build(ck, &l.net);
    if (st != DMX_OK) {
        fprintf(stderr, "cannot build %s: %s: %s\n", model, dmx_status_str(st), dmx_last_error());
        exit(1);
    }
    l.vt->describe(l.net, &l.d);
    return l;
}

static void compare(const char *name, const float *ours, size_t n) {
    char rel[256];
    snprintf(rel, sizeof rel, "zoo/outputs/%s.npy", name);
    tu_compare_npy(name, 34, golden_path(rel), ours, n, TOL);
}

static float *run(const loaded *l, const float *mix, int len, dmx__tap_fn tap, void *user) {
    float *out = malloc(sizeof(float) * (size_t)l->d.n_sources * l->d.audio_channels * len);
    REQUIRE(out);
    dmx__arena ar;
    dmx__arena_init(&ar);
    dmx_status st = l->vt->forward(l->net, &ar, mix, len, out, tap, user);
    CHECK_MSG(st == DMX_OK, "forward: %s", dmx_last_error());
    CHECK(ar.in_use == 0); /* the forward releases all its scratch */
    printf("forward on %d samples: arena high water %.1f MB\n", len, ar.high_water / 1048576.0);
    dmx__arena_free(&ar);
    return out;
}

/* mix_3s, or its first `len` samples per channel */
static float *input(int *len) {
    npy_array mix;
    REQUIRE(npy_load(golden_path("inputs/mix_3s.npy"), &mix) == 0);
    int full = (int)mix.shape[1], n = *len ? *len : full;
    float *x = malloc(sizeof(float) * 2 * (size_t)n);
    for (int c = 0; c < 2; c++) memcpy(x + (size_t)c * n, mix.data + (size_t)c * full, sizeof(float) * n);
    npy_free(&mix);
    *len = n;
    return x;
}

static void case_forward(const char *model, int len, const char *name) {
    loaded l = load(model);
    float *mix = input(&len);
    float *out = run(&l, mix, len, NULL, NULL);
    compare(name, out, (size_t)l.d.n_sources * l.d.audio_channels * len);
    free(out);
    free(mix);
    l.vt->free(l.net);
}

/* ---- layers ---- */

static char *manifest;
static int checked, drifted;

/* "last_axis_stride" of intermediate `key` in manifest.json */
static int manifest_stride(const char *key) {
    char k[256];
    snprintf(k, sizeof k, "\"%s\": {", key);
    const char *p = strstr(manifest, k);
    if (!p) return -1;
    p = strstr(p, "\"last_axis_stride\":");
    return p ? atoi(p + strlen("\"last_axis_stride\":")) : -1;
}

static void tap(void *user, const char *name, const float *data, int c, int h, int w) {
    const char *model = user;
    char rel[256], key[200];
    snprintf(rel, sizeof rel, "zoo/intermediates/%s/%s.npy", model, name);
    snprintf(key, sizeof key, "%s/%s", model, name);
    FILE *f = fopen(golden_path(rel), "rb");
    if (!f) return; /* not every tap has a reference */
    fclose(f);
    npy_array ref;
    REQUIRE(npy_load(golden_path(rel), &ref) == 0);
    int stride = manifest_stride(key);
    REQUIRE(stride > 0);
    REQUIRE(h == 1);
    int ws = (w + stride - 1) / stride;
    size_t n = ref.numel, k = 0;
    float *ours = malloc(sizeof(float) * (size_t)c * ws);
    for (int ci = 0; ci < c; ci++)
        for (int t = 0; t < ws; t++) ours[k++] = data[(size_t)ci * w + (size_t)t * stride];
    CHECK_MSG(k == n, "%s: %zu values vs reference %zu", name, k, n);
    if (k == n) {
        double mad, mref;
        double r = rel_max_err(ours, ref.data, n, &mad, &mref);
        printf("%-28s (%d, %d)  ratio = %.3e\n", name, c, w, r);
        if (r > TOL && !drifted++) fprintf(stderr, "first drifting layer: %s (ratio %.3e)\n", name, r);
        CHECK_MSG(r <= TOL, "layer %s drifts: ratio %.3e", name, r);
        checked++;
    }
    free(ours);
    npy_free(&ref);
}

static void case_layers(void) {
    size_t len;
    manifest = (char *)read_file(golden_path("zoo/manifest.json"), &len);
    REQUIRE(manifest);
    manifest = realloc(manifest, len + 1);
    manifest[len] = 0;
    loaded l = load("mdx_demucs_a_tiny");
    int n = 0;
    float *mix = input(&n);
    float *out = run(&l, mix, n, tap, "mdx_demucs_a_tiny");
    /* encoder0_in, 6 encoders, 6 decoders, BLSTM + LocalState of layers 4, 5 */
    CHECK_MSG(checked == 17, "compared %d layers, expected 17", checked);
    free(out);
    free(mix);
    free(manifest);
    l.vt->free(l.net);
}

/* ---- whole track ---- */

/* zoo/inputs/mix_50s.wav (16-bit PCM stereo) as int16 / 32768, planar. */
static float *read_wav50(int64_t *len) {
    size_t n;
    unsigned char *b = read_file(golden_path("zoo/inputs/mix_50s.wav"), &n);
    REQUIRE(b && n > 44 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WAVE", 4));
    size_t p = 12;
    const unsigned char *data = NULL;
    uint32_t dlen = 0;
    int ch = 0, bits = 0;
    while (p + 8 <= n) {
        uint32_t sz = b[p + 4] | (b[p + 5] << 8) | (b[p + 6] << 16) | ((uint32_t)b[p + 7] << 24);
        if (!memcmp(b + p, "fmt ", 4)) {
            ch = b[p + 10] | (b[p + 11] << 8);
            bits = b[p + 22] | (b[p + 23] << 8);
        } else if (!memcmp(b + p, "data", 4)) {
            data = b + p + 8;
            dlen = sz;
            break;
        }
        p += 8 + sz + (sz & 1);
    }
    REQUIRE(data && ch == 2 && bits == 16 && data + dlen <= b + n);
    int64_t L = dlen / 4;
    float *x = malloc(sizeof(float) * 2 * (size_t)L);
    for (int64_t i = 0; i < L; i++)
        for (int c = 0; c < 2; c++) {
            const unsigned char *q = data + (size_t)i * 4 + (size_t)c * 2;
            x[(size_t)c * L + i] = (float)(int16_t)(q[0] | (q[1] << 8)) / 32768.0f;
        }
    free(b);
    *len = L;
    return x;
}

/* upstream's separator on mix_50s.wav (normalised by the mono mix, shifts 0,
 * overlap 0.25, the model's 44 s segments): four windows at the start, the
 * two chunk boundaries and the end, and every 97th sample of the track. */
static void case_separate(const char *model, const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "zoo/models/%s", model);
    dmx_model *m = NULL;
    dmx_status st = dmx_model_load(golden_path(rel), &m);
    if (st != DMX_OK) fprintf(stderr, "load %s: %s\n", rel, dmx_last_error());
    REQUIRE(st == DMX_OK);
    int64_t len;
    float *mix = read_wav50(&len);
    REQUIRE(len == 2205000);
    int S = dmx_model_n_sources(m), A = dmx_model_channels(m);
    REQUIRE(S == 4 && A == 2);
    float *out = tu_separate(m, mix, len, 1);
    static const int64_t starts[4] = {0, 1453095, 1938195, 2200590};
    const int W = 4410;
    float *win = tu_windows(out, S * A, len, starts, 4, W);
    char nm[160];
    snprintf(nm, sizeof nm, "%s_win", name);
    compare(nm, win, (size_t)4 * S * A * W);
    snprintf(nm, sizeof nm, "%s_sub97", name);
    snprintf(rel, sizeof rel, "zoo/outputs/%s.npy", nm);
    tu_compare_strided(nm, 34, golden_path(rel), out, S * A, len, 97, TOL);
    free(win);
    free(out);
    free(mix);
    dmx_model_free(m);
}

/* ---- DiffQ ---- */

/* The dequantized tensor `name` of ck equals upstream's restore (bit for bit). */
static void check_dequant(const dmx__ckpt *ck, const char *model, const char *name, int width) {
    char rel[256];
    snprintf(rel, sizeof rel, "zoo/intermediates/%s/dequant/%s.npy", model, name);
    npy_array ref;
    REQUIRE(npy_load(golden_path(rel), &ref) == 0);
    const dmx__tensor *t = dmx__ckpt_find(ck, name);
    REQUIRE(t && t->numel == ref.numel);
    size_t diff = 0;
    for (size_t k = 0; k < ref.numel; k++) diff += memcmp(&t->data[k], &ref.data[k], sizeof(float)) != 0;
    printf("%-*s %zu values, %zu differ from upstream's restore\n", width, name, ref.numel, diff);
    CHECK_MSG(diff == 0, "%s: %zu dequantized values differ", name, diff);
    npy_free(&ref);
}

/* The dequantized parameters of mdx_q_demucs_tiny against upstream's
 * load_model: bit-exact. */
static void case_dequant(void) {
    dmx__ckpt *ck = NULL;
    REQUIRE(dmx__ckpt_load(golden_path("zoo/models/mdx_q_demucs_tiny.th"), &ck) == DMX_OK);
    CHECK(dmx__ckpt_is_quantized(ck));
    CHECK(dmx__ckpt_n_tensors(ck) == 0);
    loaded l = {&dmx__demucs_vt, NULL, {0}};
    dmx_status st = l.vt->build(ck, &l.net);
    REQUIRE(st == DMX_OK);
    CHECK(!dmx__ckpt_is_quantized(ck));
    static const char *const names[] = {"encoder.5.0.weight", "decoder.0.0.weight"};
    for (int i = 0; i < 2; i++) check_dequant(ck, "mdx_q_demucs_tiny", names[i], 20);
    /* the small parameters come from 'others' unchanged (float32) */
    const dmx__tensor *t = dmx__ckpt_find(ck, "encoder.0.0.weight");
    CHECK(t && t->ndim == 3 && t->shape[0] == 4 && t->shape[1] == 2 && t->shape[2] == 8);
    l.vt->free(l.net);
}

/* Parses "(a, b, c)" into shape; returns ndim. */
static int parse_shape(const char *p, int64_t *shape) {
    int nd = 0;
    p = strchr(p, '(');
    if (!p) return -1;
    p++;
    while (*p && *p != ')' && nd < 8) {
        char *e;
        long long v = strtoll(p, &e, 10);
        if (e == p) break;
        shape[nd++] = v;
        p = e;
        while (*p == ',' || *p == ' ') p++;
    }
    return nd;
}

/* mdx_extra_q_hdemucs_tiny (meta with torch_pack False): the state's entries
 * named from the fixture's description (quantized entries first, then the
 * others: each list keeps its order, which is all the naming relies on),
 * dequantized bit-exactly. */
static void case_dequant_extra(void) {
    dmx__ckpt *ck = NULL;
    REQUIRE(dmx__ckpt_load(golden_path("zoo/models/mdx_extra_q_hdemucs_tiny.th"), &ck) == DMX_OK);
    CHECK(dmx__ckpt_is_quantized(ck));
    size_t len;
    char *txt = (char *)read_file(golden_path("zoo/models/mdx_extra_q_hdemucs_tiny.txt"), &len);
    REQUIRE(txt);
    txt = realloc(txt, len + 1);
    txt[len] = 0;
    dmx__param_list pl = {0};
    for (int pass = 0; pass < 2; pass++) {
        const char *tag = pass ? "\nothers[" : "\nquantized[";
        for (const char *p = strstr(txt, tag); p; p = strstr(p + 1, tag)) {
            const char *a = strstr(p, "-> ");
            if (!a) break;
            a += 3;
            size_t n = strcspn(a, " \t");
            char name[200];
            snprintf(name, sizeof name, "%.*s", (int)n, a);
            int64_t shape[8];
            int nd = parse_shape(a + n, shape);
            REQUIRE(nd >= 0);
            REQUIRE(dmx__param_list_add(&pl, name, nd, shape) == DMX_OK);
        }
    }
    printf("%zu parameters listed\n", pl.n);
    /* a wrong list is refused naming the parameter, and leaves the state
     * intact: here every entry but the last matches */
    dmx__param_list bad = {0};
    for (size_t i = 0; i + 1 < pl.n; i++)
        REQUIRE(dmx__param_list_add(&bad, pl.v[i].name, pl.v[i].ndim, pl.v[i].shape) == DMX_OK);
    int64_t s1[1] = {3};
    REQUIRE(dmx__param_list_add(&bad, "x.weight", 1, s1) == DMX_OK);
    CHECK(dmx__ckpt_dequantize(ck, &bad) == DMX_ERR_MODEL);
    CHECK(strstr(dmx_last_error(), "x.weight") != NULL);
    CHECK(dmx__ckpt_is_quantized(ck));
    dmx__param_list_free(&bad);
    dmx_status st = dmx__ckpt_dequantize(ck, &pl);
    CHECK_MSG(st == DMX_OK, "dequantize: %s", dmx_last_error());
    CHECK(dmx__ckpt_n_tensors(ck) == pl.n);
    static const char *const names[] = {"decoder.0.rewrite.weight", "decoder.1.rewrite.weight"};
    for (int i = 0; i < 2 && st == DMX_OK; i++) check_dequant(ck, "mdx_extra_q_hdemucs_tiny", names[i], 26);
    dmx__param_list_free(&pl);
    free(txt);
    dmx__ckpt_free(ck);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: golden_demucs CASE\n");
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "mdx_demucs_a_tiny_forward_3s")) case_forward("mdx_demucs_a_tiny", 0, c);
    else if (!strcmp(c, "repro_demucs_tiny_forward_3s")) case_forward("repro_demucs_tiny", 0, c);
    else if (!strcmp(c, "mdx_q_demucs_tiny_forward_1s")) case_forward("mdx_q_demucs_tiny", 44100, c);
    else if (!strcmp(c, "layers")) case_layers();
    else if (!strcmp(c, "dequant")) case_dequant();
    else if (!strcmp(c, "mdx_demucs_a_tiny_separate_50s")) case_separate("mdx_demucs_a_tiny.th", c);
    else if (!strcmp(c, "dequant_extra")) case_dequant_extra();
    else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    return dmx_test_done(c);
}
