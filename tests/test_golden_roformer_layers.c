/*
 * test_golden_roformer_layers.c - layer-by-layer parity of bs_roformer_tiny and
 * mel_band_roformer_tiny on mix_3s[:, :13230] (31 frames) against MSST's
 * activations in ../shared/golden/roformer/intermediates, so that a
 * regression names the first layer that drifts (taps arrive in forward
 * order; the first failure printed is the first drifting layer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demix/demix.h"
#include "roformer.h"
#include "testutil.h"

typedef struct ctx {
    const char *model;
    int checked, first_bad_reported;
} ctx;

static void check(ctx *c, const char *name, const float *ours, size_t n) {
    char rel[256];
    snprintf(rel, sizeof rel, "roformer/intermediates/%s/%s.npy", c->model, name);
    FILE *f = fopen(golden_path(rel), "rb");
    if (!f) return; /* not every tap has a reference */
    fclose(f);
    npy_array ref;
    REQUIRE(npy_load(golden_path(rel), &ref) == 0);
    CHECK_MSG(ref.numel == n, "%s/%s: %zu values vs reference %zu", c->model, name, n, ref.numel);
    if (ref.numel == n) {
        double mad, mref;
        double r = rel_max_err(ours, ref.data, n, &mad, &mref);
        printf("%-24s %-14s ratio = %.3e\n", c->model, name, r);
        if (r > 1e-4 && !c->first_bad_reported) {
            fprintf(stderr, "%s: first drifting layer: %s (ratio %.3e)\n", c->model, name, r);
            c->first_bad_reported = 1;
        }
        CHECK_MSG(r <= 1e-4, "%s: layer %s drifts: ratio %.3e", c->model, name, r);
        c->checked++;
    }
    npy_free(&ref);
}

static void tap(void *user, const char *name, const float *data, int C, int H, int W) {
    ctx *c = user;
    size_t n = (size_t)C * H * W;
    if (!strcmp(name, "stft")) {
        /* ours (bins, channels, frames, re/im) -> torch.stft's (channels, bins, frames, re/im) */
        int A = C, F = H, T = W / 2;
        float *r = malloc(sizeof(float) * n);
        for (int a = 0; a < A; a++)
            for (int f = 0; f < F; f++)
                for (int t = 0; t < T; t++)
                    for (int k = 0; k < 2; k++)
                        r[(((size_t)a * F + f) * T + t) * 2 + k] = data[(((size_t)f * A + a) * T + t) * 2 + k];
        check(c, name, r, n);
        free(r);
    } else {
        check(c, name, data, n);
    }
}

static void run(const char *model, int expect) {
    char y[256], k[256];
    snprintf(y, sizeof y, "roformer/models/%s.yaml", model);
    snprintf(k, sizeof k, "roformer/models/%s.ckpt", model);
    dmx__roformer *n = NULL;
    dmx_status st = dmx__roformer_load(golden_path(y), golden_path(k), &n);
    if (st != DMX_OK) fprintf(stderr, "load: %s\n", dmx_last_error());
    REQUIRE(st == DMX_OK);
    npy_array mix;
    REQUIRE(npy_load(golden_path("inputs/mix_3s.npy"), &mix) == 0);
    const int len = 13230;
    int64_t T = mix.shape[1];
    float *x = malloc(sizeof(float) * 2 * len), *out = malloc(sizeof(float) * 2 * len);
    for (int a = 0; a < 2; a++) memcpy(x + (size_t)a * len, mix.data + (size_t)a * T, sizeof(float) * len);
    ctx c = {model, 0, 0};
    dmx__arena ar;
    dmx__arena_init(&ar);
    st = dmx__roformer_forward(n, &ar, x, len, out, tap, &c);
    CHECK_MSG(st == DMX_OK, "forward: %s", dmx_last_error());
    check(&c, "output", out, (size_t)2 * len);
    CHECK_MSG(c.checked == expect, "%s: %d layers compared, expected %d", model, c.checked, expect);
    dmx__arena_free(&ar);
    free(x);
    free(out);
    npy_free(&mix);
    dmx__roformer_free(n);
}

int main(void) {
    run("bs_roformer_tiny", 9);       /* stft band_split layer{0,1}_{time,freq} final_norm mask0 output */
    run("mel_band_roformer_tiny", 6); /* band_split layer{0,1}_{time,freq} mask0 */
    return dmx_test_done("test_golden_roformer_layers");
}
