/*
 * golden_roformer.c - parity with MSST's BS-RoFormer / Mel-Band RoFormer on
 * the fixtures in ../shared/golden/roformer (see its README). One executable,
 * one ctest per case:
 *   golden_roformer <case>   compares our output with roformer/outputs/<case>.npy
 * and prints max|ours - ref| / max|ref| (must be <= 1e-4). Outputs stored
 * with a stride (manifest) hold t[..., ::stride].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demix/demix.h"
#include "roformer.h"
#include "roformer_demix.h"
#include "testutil.h"

#define TOL 1e-4

static dmx__roformer *load(const char *model) {
    char y[256], c[256];
    snprintf(y, sizeof y, "roformer/models/%s.yaml", model);
    snprintf(c, sizeof c, "roformer/models/%s.ckpt", model);
    dmx__roformer *n = NULL;
    dmx_status st = dmx__roformer_load(golden_path(y), golden_path(c), &n);
    if (st != DMX_OK) {
        fprintf(stderr, "cannot load %s: %s: %s\n", model, dmx_status_str(st), dmx_last_error());
        exit(1);
    }
    return n;
}

/* ours (rows, len) vs the reference (rows, ceil(len / stride)) */
static void compare(const char *name, const float *ours, int rows, int64_t len, int stride) {
    char rel[256];
    snprintf(rel, sizeof rel, "roformer/outputs/%s.npy", name);
    tu_compare_strided(name, 40, golden_path(rel), ours, rows, len, stride, TOL);
}

static npy_array input(const char *name) {
    char rel[128];
    snprintf(rel, sizeof rel, "inputs/%s.npy", name);
    npy_array a;
    REQUIRE(npy_load(golden_path(rel), &a) == 0);
    return a;
}

/* model(mix[:, :chunk][None]) */
static void case_forward(const char *model, const char *in, int64_t len, const char *name, int stride) {
    dmx__roformer *n = load(model);
    const dmx__rf_config *c = dmx__roformer_config(n);
    int A = c->stereo ? 2 : 1, S = c->num_stems;
    npy_array mix = input(in);
    int64_t T = mix.shape[1];
    if (len <= 0) len = T;
    float *x = malloc(sizeof(float) * A * len);
    for (int a = 0; a < A; a++) memcpy(x + (size_t)a * len, mix.data + (size_t)a * T, sizeof(float) * len);
    float *out = malloc(sizeof(float) * S * A * len);
    dmx__arena ar;
    dmx__arena_init(&ar);
    dmx_status st = dmx__roformer_forward(n, &ar, x, (int)len, out, NULL, NULL);
    CHECK_MSG(st == DMX_OK, "forward: %s", dmx_last_error());
    compare(name, out, S * A, len, stride);
    dmx__arena_free(&ar);
    free(out);
    free(x);
    npy_free(&mix);
    dmx__roformer_free(n);
}

/* utils.model_utils.demix(config, model, mix) with batch_size 1 */
static void case_demix(const char *model, const char *in, const char *name, int stride) {
    dmx__roformer *n = load(model);
    const dmx__rf_config *c = dmx__roformer_config(n);
    int A = c->stereo ? 2 : 1, S = c->num_stems;
    npy_array mix = input(in);
    int64_t T = mix.shape[1];
    float *out = malloc(sizeof(float) * S * A * T);
    dmx_status st = dmx__rf_demix(n, mix.data, T, 2, out); /* 2 workers: results do not depend on it */
    CHECK_MSG(st == DMX_OK, "demix: %s", dmx_last_error());
    compare(name, out, S * A, T, stride);
    free(out);
    npy_free(&mix);
    dmx__roformer_free(n);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: golden_roformer CASE\n");
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "bs_roformer_tiny_forward_8s")) case_forward("bs_roformer_tiny", "mix_12s", 352800, c, 1);
    else if (!strcmp(c, "mel_band_roformer_tiny_forward_8s")) case_forward("mel_band_roformer_tiny", "mix_12s", 352800, c, 1);
    else if (!strcmp(c, "bs_roformer_4stem_tiny_forward_11s")) case_forward("bs_roformer_4stem_tiny", "mix_12s", 485100, c, 8);
    else if (!strcmp(c, "mel_band_roformer_4stem_tiny_forward_8s")) case_forward("mel_band_roformer_4stem_tiny", "mix_12s", 352800, c, 8);
    else if (!strcmp(c, "bs_roformer_linear_tiny_forward_3s")) case_forward("bs_roformer_linear_tiny", "mix_3s", 0, c, 1);
    else if (!strcmp(c, "bs_roformer_tiny_demix_12s")) case_demix("bs_roformer_tiny", "mix_12s", c, 1);
    else if (!strcmp(c, "bs_roformer_tiny_demix_3s")) case_demix("bs_roformer_tiny", "mix_3s", c, 1);
    else if (!strcmp(c, "mel_band_roformer_tiny_demix_12s")) case_demix("mel_band_roformer_tiny", "mix_12s", c, 1);
    else if (!strcmp(c, "bs_roformer_4stem_tiny_demix_12s")) case_demix("bs_roformer_4stem_tiny", "mix_12s", c, 8);
    else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    return dmx_test_done(c);
}
