/*
 * test_wiener.c - dmx__wiener against a naive double-precision transcription
 * of openunmix.filtering.wiener as HDemucs._wiener calls it (tensors laid out
 * as open-unmix's (frames, bins, channels, re/im, sources), windows of 300
 * frames), on small random spectrograms: 0 iterations (mixture phase, all
 * four quadrants, axes and all-zero bins), EM with and without the residual
 * source, stereo and mono, and the plain masking of iters < 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "testutil.h"
#include "wiener.h"

static unsigned long long rng = 88172645463325252ULL;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* ---- naive reference, double, open-unmix layout ---- */
typedef struct { double re, im; } dc;
static dc dmul(dc a, dc b) { return (dc){a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re}; }
static dc dinv(dc z) { double n = z.re * z.re + z.im * z.im; return (dc){z.re / n, -z.im / n}; }

/* y[(((t*F + f)*C + c)*Sr + j)] for one window: mag (Tw,F,C,S), mix (Tw,F,C) */
static void ref_window(const double *mag, dc *mix, int Tw, int F, int C, int S, int iters, int residual, dc *y) {
    const double pi = 3.14159274101257324; /* float32 2*asin(1) */
    int Sr = S + residual;
    for (int i = 0; i < Tw * F * C; i++) {
        if (mix[i].re == 0 && mix[i].im == 0) mix[i].re = 1; /* upstream's in-place atan2 fix */
        double xr = mix[i].re, yi = mix[i].im, a = atan(yi / xr);
        if (yi >= 0 && xr < 0) a += pi;
        if (yi < 0 && xr < 0) a -= pi;
        if (yi > 0 && xr == 0) a = pi / 2;
        if (yi < 0 && xr == 0) a = -pi / 2;
        dc sum = {0, 0};
        for (int j = 0; j < S; j++) {
            double m = mag[(size_t)i * S + j];
            y[(size_t)i * Sr + j] = (dc){m * cos(a), m * sin(a)};
            sum.re += m * cos(a);
            sum.im += m * sin(a);
        }
        if (residual) y[(size_t)i * Sr + S] = (dc){mix[i].re - sum.re, mix[i].im - sum.im};
    }
    if (iters == 0) return;
    double mx = 0;
    for (int i = 0; i < Tw * F * C; i++) mx = fmax(mx, sqrt(mix[i].re * mix[i].re + mix[i].im * mix[i].im));
    double max_abs = fmax(1.0, mx / 10.0), eps = 1e-10;
    for (int i = 0; i < Tw * F * C; i++) mix[i].re /= max_abs, mix[i].im /= max_abs;
    for (int i = 0; i < Tw * F * C * Sr; i++) y[i].re /= max_abs, y[i].im /= max_abs;
    double *v = calloc((size_t)Tw * F * Sr, sizeof *v);
    dc *R = calloc((size_t)F * Sr * C * C, sizeof *R);
#define Y(t, f, c, j) y[((((size_t)(t) * F + (f)) * C + (c)) * Sr + (j))]
    for (int it = 0; it < iters; it++) {
        for (int t = 0; t < Tw; t++)
            for (int f = 0; f < F; f++)
                for (int j = 0; j < Sr; j++) {
                    double s = 0;
                    for (int c = 0; c < C; c++) s += Y(t, f, c, j).re * Y(t, f, c, j).re + Y(t, f, c, j).im * Y(t, f, c, j).im;
                    v[((size_t)t * F + f) * Sr + j] = s / C;
                }
        for (int j = 0; j < Sr; j++)
            for (int f = 0; f < F; f++) {
                double w = eps;
                dc acc[4] = {{0, 0}};
                for (int t = 0; t < Tw; t++) {
                    for (int a = 0; a < C; a++)
                        for (int b = 0; b < C; b++) {
                            dc p = dmul(Y(t, f, a, j), (dc){Y(t, f, b, j).re, -Y(t, f, b, j).im});
                            acc[a * C + b].re += p.re;
                            acc[a * C + b].im += p.im;
                        }
                    w += v[((size_t)t * F + f) * Sr + j];
                }
                for (int k = 0; k < C * C; k++) R[((size_t)f * Sr + j) * C * C + k] = (dc){acc[k].re / w, acc[k].im / w};
            }
        for (int t = 0; t < Tw; t++)
            for (int f = 0; f < F; f++) {
                dc M[4], I[4];
                for (int k = 0; k < C * C; k++) M[k] = (dc){k % (C + 1) == 0 ? sqrt(eps) : 0, 0};
                for (int j = 0; j < Sr; j++)
                    for (int k = 0; k < C * C; k++) {
                        double vj = v[((size_t)t * F + f) * Sr + j];
                        M[k].re += vj * R[((size_t)f * Sr + j) * C * C + k].re;
                        M[k].im += vj * R[((size_t)f * Sr + j) * C * C + k].im;
                    }
                if (C == 1) {
                    I[0] = dinv(M[0]);
                } else {
                    dc d = dmul(M[0], M[3]), e = dmul(M[1], M[2]);
                    dc id = dinv((dc){d.re - e.re, d.im - e.im});
                    I[0] = dmul(id, M[3]);
                    I[1] = dmul((dc){-id.re, -id.im}, M[1]);
                    I[2] = dmul((dc){-id.re, -id.im}, M[2]);
                    I[3] = dmul(id, M[0]);
                }
                for (int j = 0; j < Sr; j++) {
                    double vj = v[((size_t)t * F + f) * Sr + j];
                    for (int a = 0; a < C; a++) {
                        dc acc = {0, 0};
                        for (int i = 0; i < C; i++) {
                            dc g = {0, 0};
                            for (int c = 0; c < C; c++) {
                                dc p = dmul(R[((size_t)f * Sr + j) * C * C + a * C + c], I[c * C + i]);
                                g.re += p.re;
                                g.im += p.im;
                            }
                            dc p = dmul((dc){g.re * vj, g.im * vj}, mix[((size_t)t * F + f) * C + i]);
                            acc.re += p.re;
                            acc.im += p.im;
                        }
                        Y(t, f, a, j) = acc;
                    }
                }
            }
    }
#undef Y
    for (int i = 0; i < Tw * F * C * Sr; i++) y[i].re *= max_abs, y[i].im *= max_abs;
    free(v);
    free(R);
}

/* Runs one case; `window` is the reference's window (300 as upstream). */
static double run_case(int S, int C, int F, int T, int iters, int residual, int window) {
    size_t plane = (size_t)F * T;
    float *mag = malloc(sizeof(float) * S * C * plane);
    float *mix = malloc(sizeof(float) * C * 2 * plane);
    float *out = malloc(sizeof(float) * S * C * 2 * plane);
    for (size_t i = 0; i < (size_t)S * C * plane; i++) mag[i] = (float)(urand() * 2.0);
    for (size_t i = 0; i < (size_t)C * 2 * plane; i++) mix[i] = (float)((urand() - 0.5) * 30.0);
    /* axes and all-zero bins */
    for (int c = 0; c < C; c++) {
        float *re = mix + (size_t)c * 2 * plane, *im = re + plane;
        re[0] = 0, im[0] = 0;
        re[1] = 0, im[1] = 2.5f;
        re[2] = 0, im[2] = -1.5f;
        re[3] = -2.0f, im[3] = 0;
        re[4] = -0.0f, im[4] = -0.0f;
        re[T + 1] = 0, im[T + 1] = 0;
    }
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__wiener(&ar, mag, mix, S, C, F, T, iters, residual, out) == DMX_OK);
    dmx__arena_free(&ar);
    int Sr = S + residual;
    double maxd = 0, maxr = 0;
    for (int t0 = 0; t0 < T; t0 += window) {
        int Tw = T - t0 < window ? T - t0 : window;
        double *m = malloc(sizeof(double) * Tw * F * C * S);
        dc *x = malloc(sizeof(dc) * Tw * F * C);
        dc *y = malloc(sizeof(dc) * Tw * F * C * Sr);
        for (int t = 0; t < Tw; t++)
            for (int f = 0; f < F; f++)
                for (int c = 0; c < C; c++) {
                    size_t i = ((size_t)t * F + f) * C + c, p = (size_t)f * T + t0 + t;
                    x[i] = (dc){mix[(size_t)c * 2 * plane + p], mix[((size_t)c * 2 + 1) * plane + p]};
                    for (int j = 0; j < S; j++) m[i * S + j] = mag[((size_t)j * C + c) * plane + p];
                }
        ref_window(m, x, Tw, F, C, S, iters, residual, y);
        for (int t = 0; t < Tw; t++)
            for (int f = 0; f < F; f++)
                for (int c = 0; c < C; c++)
                    for (int j = 0; j < S; j++) {
                        dc r = y[(((size_t)t * F + f) * C + c) * Sr + j];
                        size_t p = (size_t)f * T + t0 + t, o = ((size_t)j * C + c) * 2 * plane + p;
                        maxd = fmax(maxd, fmax(fabs(out[o] - r.re), fabs(out[o + plane] - r.im)));
                        maxr = fmax(maxr, fmax(fabs(r.re), fabs(r.im)));
                    }
        free(m);
        free(x);
        free(y);
    }
    free(mag);
    free(mix);
    free(out);
    return maxd / maxr;
}

static void masking_case(void) {
    /* iters < 0: z / (1e-8 + |z|) * m */
    float mix[2 * 3] = {3, 0, -1, 4, 0, 0};
    float mag[3] = {2, 5, 7}, out[6];
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__wiener(&ar, mag, mix, 1, 1, 3, 1, -1, 0, out) == DMX_OK);
    dmx__arena_free(&ar);
    /* bins 3+4i, 0, -1 (re plane then im plane) */
    CHECK(fabsf(out[0] - 1.2f) < 1e-6f && fabsf(out[3] - 1.6f) < 1e-6f);
    CHECK(out[1] == 0.0f && out[4] == 0.0f);
    CHECK(fabsf(out[2] + 7.0f) < 1e-5f && out[5] == 0.0f);
}

int main(void) {
    struct { int S, C, F, T, iters, residual; } cases[] = {
        {4, 2, 5, 37, 0, 0},  {4, 2, 3, 650, 0, 1}, {4, 2, 3, 650, 1, 0},
        {4, 2, 3, 650, 2, 1}, {3, 1, 4, 310, 2, 0}, {2, 1, 2, 40, 3, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        double r = run_case(cases[k].S, cases[k].C, cases[k].F, cases[k].T, cases[k].iters, cases[k].residual,
                            DMX__WIENER_WINDOW);
        printf("S=%d C=%d F=%d T=%d iters=%d residual=%d: ratio %.3e\n", cases[k].S, cases[k].C, cases[k].F,
               cases[k].T, cases[k].iters, cases[k].residual, r);
        CHECK_MSG(r <= 1e-4, "case %zu: ratio %.3e", k, r);
    }
    /* The 300-frame windows matter for the EM: a whole-track reference differs. */
    double whole = run_case(4, 2, 3, 650, 2, 0, 650);
    printf("EM against an unwindowed reference: ratio %.3e (must differ)\n", whole);
    CHECK(whole > 1e-3);
    /* invalid sizes */
    dmx__arena ar;
    dmx__arena_init(&ar);
    float z[8] = {0};
    CHECK(dmx__wiener(&ar, z, z, 1, 3, 1, 1, 1, 0, z) == DMX_ERR_INVALID_ARG);
    CHECK(dmx__wiener(&ar, z, z, 0, 1, 1, 1, 0, 0, z) == DMX_ERR_INVALID_ARG);
    dmx__arena_free(&ar);
    masking_case();
    return dmx_test_done("test_wiener");
}
