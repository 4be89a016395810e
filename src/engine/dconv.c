/*
 * dconv.c - the DConv residual branch (see dconv.h).
 */
#include "dconv.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "ops.h"
#include "team.h"

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

/* dmx__dconv_glu_half's work in units a team's threads share: a block of
 * rb whole rows (rows of T <= cb), or one column block of a row (longer
 * rows: two passes, the first taking each unit's sums, added per row in
 * unit order, so the statistics do not depend on who computed what). */
#define GLU_PARTS 4
typedef struct glu_job {
    const float *h, *w, *b, *nw, *nb, *scale;
    float *y, *scratch; /* scratch: 2C x rb x cb floats per part */
    double *sums;       /* column blocks, pass 0: two per unit */
    const float *mean, *rstd; /* column blocks, pass 1: per row */
    int hidden, C, rows, T, rb, cb, chunks, units, parts, pass;
} glu_job;

static void glu_rows(const glu_job *j, int u, float *h2) {
    const size_t plane = (size_t)j->rows * j->T;
    const int r0 = u * j->rb, nr = j->rows - r0 < j->rb ? j->rows - r0 : j->rb;
    const int C = j->C, T = j->T, n = nr * T;
    /* the 1x1 conv on rows [r0, r0 + nr): columns of h with stride `plane` */
    dmx__sgemm_rowbias(0, 0, 2 * C, n, j->hidden, j->w, j->hidden, j->h + (size_t)r0 * T,
                       (int)plane, j->b, h2, n);
    /* per row: the statistics, then the affine step, GLU and the residual
     * add in one pass (without a norm, 0 and 1: exact) */
    for (int r = 0; r < nr; r++) {
        float mean = 0, rstd = 1;
        if (j->nw) {
            double s1 = 0, s2 = 0;
            if (nr == 1) /* the row's 2C channels are contiguous */
                dmx__sum_sq(h2, (size_t)2 * C * T, &s1, &s2);
            else
                for (int c = 0; c < 2 * C; c++)
                    dmx__sum_sq(h2 + (size_t)c * n + (size_t)r * T, (size_t)T, &s1, &s2);
            dmx__norm_stats(s1, s2, 2.0 * C * T, 1e-5f, &mean, &rstd);
        }
        dmx__norm_glu_add(h2 + (size_t)r * T, (size_t)n, C, (size_t)T, mean, rstd, j->nw, j->nb,
                          j->scale, j->y + (size_t)(r0 + r) * T, plane);
    }
}

static void glu_cols(const glu_job *j, int u, float *h2) {
    const size_t plane = (size_t)j->rows * j->T;
    const int r = u / j->chunks, t0 = u % j->chunks * j->cb;
    const int n = j->T - t0 < j->cb ? j->T - t0 : j->cb, C = j->C;
    dmx__sgemm_rowbias(0, 0, 2 * C, n, j->hidden, j->w, j->hidden,
                       j->h + (size_t)r * j->T + t0, (int)plane, j->b, h2, n);
    if (j->pass == 0) {
        double *sm = j->sums + 2 * (size_t)u;
        sm[0] = sm[1] = 0;
        dmx__sum_sq(h2, (size_t)2 * C * n, &sm[0], &sm[1]);
    } else {
        dmx__norm_glu_add(h2, (size_t)n, C, (size_t)n, j->nw ? j->mean[r] : 0.0f,
                          j->nw ? j->rstd[r] : 1.0f, j->nw, j->nb, j->scale,
                          j->y + (size_t)r * j->T + t0, plane);
    }
}

static void glu_part(void *ctx, int p) {
    const glu_job *j = ctx;
    float *h2 = j->scratch + (size_t)p * 2 * j->C * j->rb * j->cb;
    int lo, hi;
    dmx__team_share(j->units, j->parts, p, &lo, &hi);
    for (int u = lo; u < hi; u++) {
        if (j->cb == j->T)
            glu_rows(j, u, h2);
        else
            glu_cols(j, u, h2);
    }
}

dmx_status dmx__dconv_glu_half(dmx__arena *ar, const float *h, int hidden, float *y, int C,
                               int rows, int T, const float *w, const float *b, const float *nw,
                               const float *nb, const float *scale) {
    /* floats of 2C-channel scratch per part: half of L2, where the two
     * passes after the product find it (4 MiB went out of a 2 MiB L2 to L3:
     * the encoders and decoders took 3 % longer on an Intel core) */
    if (rows < 1 || T < 1 || C < 1) return DMX_OK;
    const size_t budget = (size_t)dmx__gemm_l2_bytes() / 2 / sizeof(float);
    glu_job j = {.h = h, .w = w, .b = b, .nw = nw, .nb = nb, .scale = scale, .y = y,
                 .hidden = hidden, .C = C, .rows = rows, .T = T, .cb = T};
    j.rb = (int)(budget / ((size_t)2 * C * T));
    if (j.rb < 1) j.rb = 1;
    if (j.rb > rows) j.rb = rows;
    if ((size_t)2 * C * T > budget) {
        j.rb = 1;
        j.cb = (int)(budget / ((size_t)2 * C)) / 64 * 64;
        if (j.cb < 64) j.cb = 64;
        if (j.cb > T) j.cb = T;
    }
    j.chunks = (T + j.cb - 1) / j.cb;
    j.units = j.cb == T ? (rows + j.rb - 1) / j.rb : rows * j.chunks;
    j.parts = j.units < GLU_PARTS ? j.units : GLU_PARTS;
    dmx__arena_mark mk = dmx__arena_save(ar);
    j.scratch = dmx__arena_floats(ar, (size_t)j.parts * 2 * C * j.rb * j.cb);
    if (!j.scratch) {
        dmx__arena_restore(ar, mk);
        return NOMEM();
    }
    if (j.cb < T) {
        float *mr = NULL;
        if (nw) { /* pass 0: each unit's sums, then each row's statistics */
            j.sums = (double *)(void *)dmx__arena_floats(ar, (size_t)4 * j.units);
            mr = dmx__arena_floats(ar, (size_t)2 * rows);
            if (!j.sums || !mr) {
                dmx__arena_restore(ar, mk);
                return NOMEM();
            }
            dmx__team_for(j.parts, glu_part, &j);
            for (int r = 0; r < rows; r++) {
                double s1 = 0, s2 = 0;
                for (int c = 0; c < j.chunks; c++) {
                    s1 += j.sums[2 * ((size_t)r * j.chunks + c)];
                    s2 += j.sums[2 * ((size_t)r * j.chunks + c) + 1];
                }
                dmx__norm_stats(s1, s2, 2.0 * C * T, 1e-5f, &mr[r], &mr[rows + r]);
            }
            j.mean = mr, j.rstd = mr + rows;
        }
        j.pass = 1;
    }
    dmx__team_for(j.parts, glu_part, &j);
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
