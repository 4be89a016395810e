/*
 * dconv.c - the DConv residual branch (see dconv.h).
 */
#include "dconv.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "ops.h"

#define NOMEM() dmx__fail(DMX_ERR_NOMEM, "out of memory in a DConv branch")

dmx__dconvx_opts dmx__dconvx_opts_default(void) {
    dmx__dconvx_opts o = {2, 4.0, 1e-4, 1, 0, 4, 4, 0, 1, 3, 1};
    return o;
}

void dmx__dconvx_bind_b(dmx__binder *b, const char *prefix, int channels, const dmx__dconvx_opts *o,
                        dmx__dconvx *d) {
    memset(d, 0, sizeof *d);
    if (b->st != DMX_OK) return;
    int depth = o->depth < 0 ? -o->depth : o->depth;
    double hd = o->compress > 0 ? channels / o->compress : 0;
    int hidden = hd >= 1 && hd <= (1 << 20) ? (int)hd : 0;
    if (depth > DMX__DCONV_MAX_DEPTH || o->kernel < 1 || o->kernel % 2 == 0 || hidden < 1 ||
        (o->attn && (o->heads < 1 || hidden % o->heads || o->ndecay < 0))) {
        b->st = dmx__fail(DMX_ERR_MODEL,
                          "%s: unsupported DConv (channels %d, depth %d, compress %g, kernel %d, "
                          "attn %d, heads %d)",
                          prefix, channels, o->depth, o->compress, o->kernel, o->attn, o->heads);
        return;
    }
    int64_t start = b->n_params;
    d->channels = channels;
    d->hidden = hidden;
    d->depth = depth;
    d->kernel = o->kernel;
    d->norm = o->norm;
    d->gelu = o->gelu;
    const int64_t C = channels, Hd = hidden;
    char p[256], name[300];
    for (int i = 0; i < depth; i++) {
        dmx__dconvx_layer *L = &d->layers[i];
        L->dilation = o->depth > 0 ? 1 << i : 1;
        snprintf(p, sizeof p, "%s.layers.%d", prefix, i);
        snprintf(name, sizeof name, "%s.0.weight", p);
        L->conv1_w = dmx__bind3(b, Hd, C, o->kernel, name);
        snprintf(name, sizeof name, "%s.0.bias", p);
        L->conv1_b = dmx__bind1(b, Hd, name);
        if (o->norm) {
            snprintf(name, sizeof name, "%s.1.weight", p);
            L->norm1_w = dmx__bind1(b, Hd, name);
            snprintf(name, sizeof name, "%s.1.bias", p);
            L->norm1_b = dmx__bind1(b, Hd, name);
        }
        int idx = 3;
        if (o->lstm) {
            L->has_lstm = 1;
            snprintf(name, sizeof name, "%s.%d", p, idx++);
            dmx__blstm_bind(b, &L->lstm, name, hidden, 2, 200, 1);
        }
        if (o->attn) {
            L->has_attn = 1;
            snprintf(name, sizeof name, "%s.%d", p, idx++);
            dmx__localstate_bind(b, &L->attn, name, hidden, o->heads, o->ndecay);
        }
        snprintf(name, sizeof name, "%s.%d.weight", p, idx);
        L->conv2_w = dmx__bind3(b, 2 * C, Hd, 1, name);
        snprintf(name, sizeof name, "%s.%d.bias", p, idx);
        L->conv2_b = dmx__bind1(b, 2 * C, name);
        if (o->norm) {
            snprintf(name, sizeof name, "%s.%d.weight", p, idx + 1);
            L->norm2_w = dmx__bind1(b, 2 * C, name);
            snprintf(name, sizeof name, "%s.%d.bias", p, idx + 1);
            L->norm2_b = dmx__bind1(b, 2 * C, name);
        }
        snprintf(name, sizeof name, "%s.%d.scale", p, idx + 3);
        L->scale = dmx__bind1(b, C, name);
    }
    d->n_params = b->n_params - start;
}

dmx_status dmx__dconvx_bind(dmx__ckpt *ck, const char *prefix, int channels,
                            const dmx__dconvx_opts *o, dmx__dconvx *out) {
    dmx__binder b;
    dmx_status s = dmx__binder_init(&b, ck, NULL);
    if (s == DMX_OK) {
        dmx__dconvx_bind_b(&b, prefix, channels, o, out);
        s = b.st;
    }
    dmx__binder_done(&b);
    return s;
}

dmx_status dmx__dconv_glu_half(dmx__arena *ar, const float *h, int hidden, float *y, int C,
                               int rows, int T, const float *w, const float *b, const float *nw,
                               const float *nb, const float *scale) {
    const size_t plane = (size_t)rows * T;
    /* floats of 2C-channel scratch: half of L2, where the two passes
     * after the product find it (4 MiB went out of a 2 MiB L2 to L3: the
     * encoders and decoders took 3 % longer on an Intel core) */
    const size_t budget = (size_t)dmx__gemm_l2_bytes() / 2 / sizeof(float);
    int rb = (int)(budget / ((size_t)2 * C * T));
    if (rb < 1) rb = 1;
    if (rb > rows) rb = rows;
    int cb = T;
    if ((size_t)2 * C * T > budget) {
        cb = (int)(budget / ((size_t)2 * C)) / 64 * 64;
        if (cb < 64) cb = 64;
        if (cb > T) cb = T;
    }
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *h2 = dmx__arena_floats(ar, (size_t)2 * C * rb * cb);
    if (!h2) return NOMEM();
    if (cb == T) {
        for (int r0 = 0; r0 < rows; r0 += rb) {
            int nr = rows - r0 < rb ? rows - r0 : rb;
            int n = nr * T;
            /* the 1x1 conv on rows [r0, r0 + nr): columns of h with stride `plane` */
            dmx__sgemm_rowbias(0, 0, 2 * C, n, hidden, w, hidden, h + (size_t)r0 * T, (int)plane,
                               b, h2, n);
            /* per row: the statistics, then the affine step, GLU and the
             * residual add in one pass (without a norm, 0 and 1: exact) */
            for (int r = 0; r < nr; r++) {
                float mean = 0, rstd = 1;
                if (nw) {
                    double s1 = 0, s2 = 0;
                    if (nr == 1) /* the row's 2C channels are contiguous */
                        dmx__sum_sq(h2, (size_t)2 * C * T, &s1, &s2);
                    else
                        for (int c = 0; c < 2 * C; c++)
                            dmx__sum_sq(h2 + (size_t)c * n + (size_t)r * T, (size_t)T, &s1, &s2);
                    dmx__norm_stats(s1, s2, 2.0 * C * T, 1e-5f, &mean, &rstd);
                }
                dmx__norm_glu_add(h2 + (size_t)r * T, (size_t)n, C, (size_t)T, mean, rstd, nw, nb,
                                  scale, y + (size_t)(r0 + r) * T, plane);
            }
        }
    } else {
        for (int r = 0; r < rows; r++) {
            const float *hr = h + (size_t)r * T;
            double s1 = 0, s2 = 0;
            for (int pass = nw ? 0 : 1; pass < 2; pass++) {
                float mean = 0, rstd = 1;
                if (pass == 1 && nw) dmx__norm_stats(s1, s2, 2.0 * C * T, 1e-5f, &mean, &rstd);
                for (int t0 = 0; t0 < T; t0 += cb) {
                    int n = T - t0 < cb ? T - t0 : cb;
                    dmx__sgemm_rowbias(0, 0, 2 * C, n, hidden, w, hidden, hr + t0, (int)plane, b,
                                       h2, n);
                    if (pass == 0)
                        dmx__sum_sq(h2, (size_t)2 * C * n, &s1, &s2);
                    else
                        dmx__norm_glu_add(h2, (size_t)n, C, (size_t)n, mean, rstd, nw, nb, scale,
                                          y + (size_t)r * T + t0, plane);
                }
            }
        }
    }
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}

/* One batch item x (C, T). */
static dmx_status forward_one(const dmx__dconvx *d, dmx__arena *ar, float *x, int T,
                              dmx__tap_fn tap, void *tap_user, const char *tname) {
    char nm[200];
    const int C = d->channels, Hd = d->hidden;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *h = dmx__arena_floats(ar, (size_t)Hd * T);
    if (!h) return NOMEM();
    for (int i = 0; i < d->depth; i++) {
        const dmx__dconvx_layer *L = &d->layers[i];
        int pad = L->dilation * (d->kernel / 2);
        dmx__conv_geom g1 = {C, Hd, 1, d->kernel, 1, 1, 0, pad, 1, L->dilation};
        /* the activation with the norm, or with the convolution without one */
        const dmx__act act = d->gelu ? DMX__ACT_GELU : DMX__ACT_RELU;
        if (dmx__conv2d_act(ar, &g1, x, 1, T, L->conv1_w, L->conv1_b,
                            d->norm ? DMX__ACT_NONE : act, h))
            return NOMEM();
        if (d->norm) dmx__group_norm_act(h, Hd, 1, T, 1, L->norm1_w, L->norm1_b, 1e-5f, act);
        dmx_status s;
        if (L->has_lstm) {
            if ((s = dmx__blstm_forward(&L->lstm, ar, h, T)) != DMX_OK) return s;
            if (tap) {
                snprintf(nm, sizeof nm, "%s_dconv%d_blstm", tname, i);
                tap(tap_user, nm, h, Hd, 1, T);
            }
        }
        if (L->has_attn) {
            if ((s = dmx__localstate_forward(&L->attn, ar, h, T)) != DMX_OK) return s;
            if (tap) {
                snprintf(nm, sizeof nm, "%s_dconv%d_localstate", tname, i);
                tap(tap_user, nm, h, Hd, 1, T);
            }
        }
        if (dmx__dconv_glu_half(ar, h, Hd, x, C, 1, T, L->conv2_w, L->conv2_b,
                                d->norm ? L->norm2_w : NULL, d->norm ? L->norm2_b : NULL,
                                L->scale) != DMX_OK)
            return NOMEM();
    }
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}

dmx_status dmx__dconvx_forward(const dmx__dconvx *d, dmx__arena *ar, float *x, int B, int C,
                               int T) {
    return dmx__dconvx_forward_tap(d, ar, x, B, C, T, NULL, NULL, NULL);
}

dmx_status dmx__dconvx_forward_tap(const dmx__dconvx *d, dmx__arena *ar, float *x, int B, int C,
                                   int T, dmx__tap_fn tap, void *tap_user, const char *name) {
    DMX_ASSERT(C == d->channels);
    if (B != 1 || !name) tap = NULL;
    for (int b = 0; b < B; b++) {
        dmx_status s = forward_one(d, ar, x + (size_t)b * C * T, T, tap, tap_user, name);
        if (s != DMX_OK) return s;
    }
    return DMX_OK;
}
