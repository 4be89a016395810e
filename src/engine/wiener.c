/*
 * wiener.c - see wiener.h. open-unmix works on tensors shaped (frames, bins,
 * channels, re/im, sources); here the spectrogram stays in the engine's
 * planar layout and the EM runs one frequency bin at a time: its only
 * coupling is over the frames of a window (the spatial covariance of a bin
 * sums over them), so a bin's estimates fit in a few kilobytes of scratch.
 * Arithmetic is float32 like upstream's; the frame sums of the covariance
 * updates are accumulated in double (upstream's summation order is torch's).
 */
#include "wiener.h"

#include <math.h>
#include <string.h>

#include "error.h"

#define EPS          1e-10f
#define SCALE_FACTOR 10.0f

/* open-unmix's atan2 on a mixture bin whose real part was already fixed
 * (an all-zero bin has re = 1). pi is float32 2·asin(1). */
static float ou_atan2(float y, float x) {
    const float pi = 2.0f * asinf(1.0f);
    float out = atanf(y / x);
    if (y >= 0 && x < 0) out += pi;
    if (y < 0 && x < 0) out -= pi;
    if (y > 0 && x == 0) out = pi / 2;
    if (y < 0 && x == 0) out = -pi / 2;
    return out;
}

typedef struct cpx {
    float re, im;
} cpx;

static cpx cmul(cpx a, cpx b) {
    return (cpx){a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
static cpx cinv(cpx z) {
    float n = z.re * z.re + z.im * z.im;
    return (cpx){z.re / n, -z.im / n};
}

/* EM on one frequency bin of one window: y (Tw, Sr, C) complex estimates
 * (already divided by max_abs), x (Tw, C) the scaled mixture; v (Tw, Sr)
 * and R (Sr, C, C) scratch. */
static void em_bin(cpx *y, const cpx *x, float *v, cpx *R, int Tw, int Sr, int C, int iters) {
    const float reg = sqrtf(EPS);
    for (int it = 0; it < iters; it++) {
        for (int t = 0; t < Tw; t++)
            for (int j = 0; j < Sr; j++) {
                float s = 0;
                for (int c = 0; c < C; c++) {
                    cpx a = y[((size_t)t * Sr + j) * C + c];
                    s += a.re * a.re + a.im * a.im;
                }
                v[(size_t)t * Sr + j] = s / (float)C;
            }
        for (int j = 0; j < Sr; j++) {
            double w = EPS, acc[2 * 2 * 2] = {0};
            for (int t = 0; t < Tw; t++) {
                const cpx *yj = y + ((size_t)t * Sr + j) * C;
                for (int a = 0; a < C; a++)
                    for (int b = 0; b < C; b++) {
                        cpx p = cmul(yj[a], (cpx){yj[b].re, -yj[b].im});
                        acc[(a * C + b) * 2] += p.re;
                        acc[(a * C + b) * 2 + 1] += p.im;
                    }
                w += v[(size_t)t * Sr + j];
            }
            float wf = (float)w;
            for (int k = 0; k < C * C; k++)
                R[(size_t)j * C * C + k] =
                    (cpx){(float)acc[2 * k] / wf, (float)acc[2 * k + 1] / wf};
        }
        for (int t = 0; t < Tw; t++) {
            cpx M[4], inv[4];
            for (int k = 0; k < C * C; k++) M[k] = (cpx){(k % (C + 1)) == 0 ? reg : 0.0f, 0.0f};
            for (int j = 0; j < Sr; j++) {
                float vj = v[(size_t)t * Sr + j];
                for (int k = 0; k < C * C; k++) {
                    M[k].re += vj * R[(size_t)j * C * C + k].re;
                    M[k].im += vj * R[(size_t)j * C * C + k].im;
                }
            }
            if (C == 1) {
                inv[0] = cinv(M[0]);
            } else {
                cpx d0 = cmul(M[0], M[3]), d1 = cmul(M[1], M[2]);
                cpx id = cinv((cpx){d0.re - d1.re, d0.im - d1.im});
                cpx nid = {-id.re, -id.im};
                inv[0] = cmul(id, M[3]);
                inv[2] = cmul(nid, M[2]);
                inv[1] = cmul(nid, M[1]);
                inv[3] = cmul(id, M[0]);
            }
            const cpx *xt = x + (size_t)t * C;
            for (int j = 0; j < Sr; j++) {
                const cpx *Rj = R + (size_t)j * C * C;
                float vj = v[(size_t)t * Sr + j];
                cpx *yj = y + ((size_t)t * Sr + j) * C;
                for (int a = 0; a < C; a++) {
                    cpx acc = {0, 0};
                    for (int i = 0; i < C; i++) {
                        cpx g = {0, 0};
                        for (int c = 0; c < C; c++) {
                            cpx p = cmul(Rj[a * C + c], inv[c * C + i]);
                            g.re += p.re;
                            g.im += p.im;
                        }
                        g.re *= vj;
                        g.im *= vj;
                        cpx p = cmul(g, xt[i]);
                        acc.re += p.re;
                        acc.im += p.im;
                    }
                    yj[a] = acc;
                }
            }
        }
    }
}

void dmx__wiener_magnitude(const float *spec, int C, size_t plane, float *mag) {
    for (int c = 0; c < C; c++) {
        const float *re = spec + (size_t)c * 2 * plane, *im = re + plane;
        for (size_t i = 0; i < plane; i++) mag[(size_t)c * plane + i] = hypotf(re[i], im[i]);
    }
}

dmx_status dmx__wiener(dmx__arena *ar, const float *mag, const float *mix, int S, int C, int F,
                       int T, int iters, int residual, float *out) {
    if (S < 1 || C < 1 || F < 1 || T < 1 || (iters > 0 && C > 2))
        return dmx__fail(DMX_ERR_INVALID_ARG,
                         "wiener: %d sources, %d channels (EM needs 1 or 2), %d x %d bins", S, C, F,
                         T);
    const size_t plane = (size_t)F * T;
#define MIX_RE(c, f, t)    mix[((size_t)(c)*2 * F + (f)) * T + (t)]
#define MIX_IM(c, f, t)    mix[(((size_t)(c)*2 + 1) * F + (f)) * T + (t)]
#define OUT_RE(j, c, f, t) out[(((size_t)(j)*C + (c)) * 2 * F + (f)) * T + (t)]
#define OUT_IM(j, c, f, t) out[((((size_t)(j)*C + (c)) * 2 + 1) * F + (f)) * T + (t)]
    if (iters < 0) {
        /* z / (1e-8 + |z|) * m */
        for (int j = 0; j < S; j++)
            for (int c = 0; c < C; c++)
                for (size_t i = 0; i < plane; i++) {
                    int f = (int)(i / T), t = (int)(i % T);
                    float re = MIX_RE(c, f, t), im = MIX_IM(c, f, t);
                    float m = mag[((size_t)j * C + c) * plane + i];
                    float den = 1e-8f + hypotf(re, im);
                    OUT_RE(j, c, f, t) = re / den * m;
                    OUT_IM(j, c, f, t) = im / den * m;
                }
        return DMX_OK;
    }
    if (iters == 0 && !residual) {
        /* the mixture's phase on every magnitude; windows do not matter */
        for (int c = 0; c < C; c++)
            for (size_t i = 0; i < plane; i++) {
                int f = (int)(i / T), t = (int)(i % T);
                float re = MIX_RE(c, f, t), im = MIX_IM(c, f, t);
                if (re == 0 && im == 0) re = 1.0f;
                float ang = ou_atan2(im, re), co = cosf(ang), si = sinf(ang);
                for (int j = 0; j < S; j++) {
                    float m = mag[((size_t)j * C + c) * plane + i];
                    OUT_RE(j, c, f, t) = m * co;
                    OUT_IM(j, c, f, t) = m * si;
                }
            }
        return DMX_OK;
    }
    const int Sr = S + (residual ? 1 : 0);
    const int W = DMX__WIENER_WINDOW;
    dmx__arena_mark mk = dmx__arena_save(ar);
    cpx *y = (cpx *)dmx__arena_floats(ar, (size_t)2 * W * Sr * C);
    cpx *x = (cpx *)dmx__arena_floats(ar, (size_t)2 * W * C);
    float *v = dmx__arena_floats(ar, (size_t)W * Sr);
    cpx *R = (cpx *)dmx__arena_floats(ar, (size_t)2 * Sr * C * C);
    if (!y || !x || !v || !R) {
        dmx__arena_restore(ar, mk);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory in Wiener filtering");
    }
    for (int t0 = 0; t0 < T; t0 += W) {
        const int Tw = T - t0 < W ? T - t0 : W;
        /* max_abs over the window's (fixed) mixture */
        float max_abs = 1.0f;
        if (iters > 0) {
            float mx = 0;
            for (int c = 0; c < C; c++)
                for (int f = 0; f < F; f++)
                    for (int t = t0; t < t0 + Tw; t++) {
                        float re = MIX_RE(c, f, t), im = MIX_IM(c, f, t);
                        if (re == 0 && im == 0) re = 1.0f;
                        float n = sqrtf(fabsf(re) * fabsf(re) + fabsf(im) * fabsf(im));
                        if (n > mx) mx = n;
                    }
            if (mx / SCALE_FACTOR > max_abs) max_abs = mx / SCALE_FACTOR;
        }
        for (int f = 0; f < F; f++) {
            for (int t = 0; t < Tw; t++)
                for (int c = 0; c < C; c++) {
                    float re = MIX_RE(c, f, t0 + t), im = MIX_IM(c, f, t0 + t);
                    if (re == 0 && im == 0) re = 1.0f;
                    float ang = ou_atan2(im, re), co = cosf(ang), si = sinf(ang);
                    for (int j = 0; j < S; j++) {
                        float m = mag[((size_t)j * C + c) * plane + (size_t)f * T + t0 + t];
                        cpx e = {m * co, m * si};
                        y[((size_t)t * Sr + j) * C + c] = e;
                    }
                    if (residual) {
                        float sre = 0, sim = 0;
                        for (int j = 0; j < S; j++) {
                            sre += y[((size_t)t * Sr + j) * C + c].re;
                            sim += y[((size_t)t * Sr + j) * C + c].im;
                        }
                        y[((size_t)t * Sr + S) * C + c] = (cpx){re - sre, im - sim};
                    }
                    x[(size_t)t * C + c] = (cpx){re / max_abs, im / max_abs};
                }
            if (iters > 0) {
                for (size_t k = 0; k < (size_t)Tw * Sr * C; k++) {
                    y[k].re /= max_abs;
                    y[k].im /= max_abs;
                }
                em_bin(y, x, v, R, Tw, Sr, C, iters);
                for (size_t k = 0; k < (size_t)Tw * Sr * C; k++) {
                    y[k].re *= max_abs;
                    y[k].im *= max_abs;
                }
            }
            for (int t = 0; t < Tw; t++)
                for (int j = 0; j < S; j++)
                    for (int c = 0; c < C; c++) {
                        cpx e = y[((size_t)t * Sr + j) * C + c];
                        OUT_RE(j, c, f, t0 + t) = e.re;
                        OUT_IM(j, c, f, t0 + t) = e.im;
                    }
        }
    }
#undef MIX_RE
#undef MIX_IM
#undef OUT_RE
#undef OUT_IM
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}
