/*
 * roformer.c - BS-RoFormer / Mel-Band RoFormer forward pass (see roformer.h),
 * after MSST's models/bs_roformer/{bs,mel_band}_roformer.py and attend.py
 * and lucidrains' rotary-embedding-torch.
 *
 * Layouts (batch 1, row-major):
 *   spec   (R rows, t frames, 2)   row = bin * A + channel, torch.stft output
 *   tokens (t, bands, D)           the reference's 'b t f d'
 * Time transformers run on the transposed (bands, t, D) copy, frequency
 * transformers in place. A transformer processes groups of whole sequences
 * of about TOKENS tokens, so its scratch (qkv, feed-forward hidden) is
 * bounded whatever the chunk length; attention is attention.c's fused
 * kernel, heads side by side, so no L x L score matrix exists.
 * Residual adds ride on sgemm's beta = 1. Weights are the checkpoint's own
 * arrays, bound once and only read.
 */
#include "roformer.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "error.h"
#include "stft.h"
#include "ops.h"

#define TOKENS 4096

typedef struct rf_block {
    int linear; /* linear attention (no rope, no gates) */
    const float *norm, *w_qkv, *w_gates, *b_gates, *w_out, *freqs, *temperature;
    const float *ff_norm, *ff_w1, *ff_b1, *ff_w2, *ff_b2;
    int ff_inner;
} rf_block;

typedef struct rf_tr {
    int n;
    rf_block *blk;
    const float *norm; /* output RMSNorm (Mel-Band), or NULL */
} rf_tr;

typedef struct rf_mlp {
    int n_lin;
    const float **w, **b;
    int *dout;
} rf_mlp;

struct dmx__roformer {
    dmx__rf_config cfg;
    dmx__ckpt *ck;
    dmx__rf_bands bands;
    int A, F, R, D, H, Dh, nb, maxfeat;
    int *feat_off; /* (nb + 1) feature offsets (2 per row) in band-split order */
    const float **bs_norm, **bs_w, **bs_b;
    rf_tr *tr; /* depth x (linear?, time, freq) */
    int per_layer;
    const float *final_norm;
    rf_mlp *mask; /* (stems x nb) */
    int mlp_hidden;
    float *window; /* (n_fft) hann(win_length) centred */
    fftwf_plan fwd, inv;
};

/* FFTW's planner is not thread-safe; plans are made under this lock. */
static pthread_mutex_t g_plan_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- building ---------------------------------------------------------------- */

typedef struct binder {
    dmx__ckpt *ck;
    unsigned char *used;
    const dmx__tensor *base;
    dmx_status st;
} binder;

static const float *bind(binder *b, int d0, int d1, int d2, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static const float *bind(binder *b, int d0, int d1, int d2, const char *fmt, ...) {
    if (b->st != DMX_OK) return NULL;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const dmx__tensor *t = dmx__ckpt_find(b->ck, name);
    if (!t) {
        b->st = dmx__fail(
            DMX_ERR_MODEL,
            "roformer: checkpoint has no tensor '%s' (config and checkpoint disagree?)", name);
        return NULL;
    }
    int want[3] = {d0, d1, d2}, nd = d2 > 0 ? 3 : d1 > 0 ? 2 : 1;
    int ok = t->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char got[96] = "", exp[64] = "";
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        for (int i = 0; i < nd; i++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%d", i ? ", " : "", want[i]);
        b->st = dmx__fail(DMX_ERR_MODEL,
                          "roformer: tensor '%s' has shape (%s), the config implies (%s)", name,
                          got, exp);
        return NULL;
    }
    b->used[t - b->base] = 1;
    return t->data;
}

static int has(binder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int has(binder *b, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return dmx__ckpt_find(b->ck, name) != NULL;
}

static void bind_tr(binder *b, const dmx__rf_config *c, rf_tr *tr, int depth, int linear,
                    const char *pre) {
    int D = c->dim, inner = c->heads * c->dim_head;
    tr->n = depth;
    tr->blk = calloc((size_t)depth, sizeof *tr->blk);
    if (!tr->blk) {
        if (b->st == DMX_OK) b->st = dmx__fail(DMX_ERR_NOMEM, "roformer: out of memory");
        return;
    }
    for (int j = 0; j < depth; j++) {
        rf_block *k = &tr->blk[j];
        k->linear = linear;
        k->norm = bind(b, D, 0, 0, "%s.layers.%d.0.norm.gamma", pre, j);
        if (linear) {
            k->temperature = bind(b, c->heads, 1, 1, "%s.layers.%d.0.temperature", pre, j);
            k->w_qkv = bind(b, 3 * inner, D, 0, "%s.layers.%d.0.to_qkv.0.weight", pre, j);
            k->w_out = bind(b, D, inner, 0, "%s.layers.%d.0.to_out.1.weight", pre, j);
        } else {
            k->freqs = bind(b, c->dim_head / 2, 0, 0, "%s.layers.%d.0.rotary_embed.freqs", pre, j);
            k->w_qkv = bind(b, 3 * inner, D, 0, "%s.layers.%d.0.to_qkv.weight", pre, j);
            k->w_gates = bind(b, c->heads, D, 0, "%s.layers.%d.0.to_gates.weight", pre, j);
            k->b_gates = bind(b, c->heads, 0, 0, "%s.layers.%d.0.to_gates.bias", pre, j);
            k->w_out = bind(b, D, inner, 0, "%s.layers.%d.0.to_out.0.weight", pre, j);
        }
        /* FeedForward(dim, mult=4) */
        k->ff_inner = 4 * D;
        k->ff_norm = bind(b, D, 0, 0, "%s.layers.%d.1.net.0.gamma", pre, j);
        k->ff_w1 = bind(b, k->ff_inner, D, 0, "%s.layers.%d.1.net.1.weight", pre, j);
        k->ff_b1 = bind(b, k->ff_inner, 0, 0, "%s.layers.%d.1.net.1.bias", pre, j);
        k->ff_w2 = bind(b, D, k->ff_inner, 0, "%s.layers.%d.1.net.4.weight", pre, j);
        k->ff_b2 = bind(b, D, 0, 0, "%s.layers.%d.1.net.4.bias", pre, j);
    }
    /* BS-RoFormer's transformers have norm_output=False, Mel-Band's True */
    if (c->kind == DMX__RF_MEL) tr->norm = bind(b, D, 0, 0, "%s.norm.gamma", pre);
}

static void free_net(dmx__roformer *n) {
    if (!n) return;
    if (n->tr)
        for (int i = 0; i < n->cfg.depth * n->per_layer; i++) free(n->tr[i].blk);
    free(n->tr);
    if (n->mask)
        for (int i = 0; i < n->cfg.num_stems * n->nb; i++) {
            free(n->mask[i].w);
            free(n->mask[i].b);
            free(n->mask[i].dout);
        }
    free(n->mask);
    free(n->bs_norm);
    free(n->bs_w);
    free(n->bs_b);
    free(n->feat_off);
    free(n->window);
    pthread_mutex_lock(&g_plan_lock);
    if (n->fwd) fftwf_destroy_plan(n->fwd);
    if (n->inv) fftwf_destroy_plan(n->inv);
    pthread_mutex_unlock(&g_plan_lock);
    dmx__rf_bands_free(&n->bands);
    dmx__ckpt_free(n->ck);
    free(n);
}

void dmx__roformer_free(dmx__roformer *n) { free_net(n); }

const dmx__rf_config *dmx__roformer_config(const dmx__roformer *n) { return &n->cfg; }

dmx_status dmx__roformer_build(const dmx__rf_config *cfg, dmx__ckpt *ck, dmx__roformer **out) {
    *out = NULL;
    dmx__roformer *n = calloc(1, sizeof *n);
    if (!n) {
        dmx__ckpt_free(ck);
        return dmx__fail(DMX_ERR_NOMEM, "roformer: out of memory");
    }
    n->cfg = *cfg;
    n->ck = ck;
    const dmx__rf_config *c = &n->cfg;
    dmx_status st = dmx__rf_bands_make(c, &n->bands);
    if (st != DMX_OK) {
        free_net(n);
        return st;
    }
    n->A = c->stereo ? 2 : 1;
    n->F = c->n_fft / 2 + 1;
    n->R = n->F * n->A;
    n->D = c->dim;
    n->H = c->heads;
    n->Dh = c->dim_head;
    n->nb = c->n_bands;
    /* dim_freqs_in is accepted and ignored, as the reference ignores it */
    n->per_layer = (c->linear_depth > 0) + 2;
    n->feat_off = malloc(sizeof(int) * (n->nb + 1));
    n->bs_norm = calloc((size_t)n->nb, sizeof(float *));
    n->bs_w = calloc((size_t)n->nb, sizeof(float *));
    n->bs_b = calloc((size_t)n->nb, sizeof(float *));
    n->tr = calloc((size_t)c->depth * n->per_layer, sizeof *n->tr);
    n->mask = calloc((size_t)c->num_stems * n->nb, sizeof *n->mask);
    size_t nt = dmx__ckpt_n_tensors(ck);
    binder b = {ck, calloc(nt ? nt : 1, 1), nt ? dmx__ckpt_tensor_at(ck, 0) : NULL, DMX_OK};
    if (!n->feat_off || !n->bs_norm || !n->bs_w || !n->bs_b || !n->tr || !n->mask || !b.used) {
        free(b.used);
        free_net(n);
        return dmx__fail(DMX_ERR_NOMEM, "roformer: out of memory");
    }
    n->feat_off[0] = 0;
    n->maxfeat = 0;
    for (int k = 0; k < n->nb; k++) {
        int fb = 2 * n->A * (n->bands.off[k + 1] - n->bands.off[k]);
        n->feat_off[k + 1] = n->feat_off[k] + fb;
        if (fb > n->maxfeat) n->maxfeat = fb;
        n->bs_norm[k] = bind(&b, fb, 0, 0, "band_split.to_features.%d.0.gamma", k);
        n->bs_w[k] = bind(&b, n->D, fb, 0, "band_split.to_features.%d.1.weight", k);
        n->bs_b[k] = bind(&b, n->D, 0, 0, "band_split.to_features.%d.1.bias", k);
    }
    for (int i = 0; i < c->depth; i++) {
        int j = 0;
        char pre[64];
        if (c->linear_depth > 0) {
            snprintf(pre, sizeof pre, "layers.%d.%d", i, j);
            bind_tr(&b, c, &n->tr[i * n->per_layer + j], c->linear_depth, 1, pre);
            j++;
        }
        snprintf(pre, sizeof pre, "layers.%d.%d", i, j);
        bind_tr(&b, c, &n->tr[i * n->per_layer + j], c->time_depth, 0, pre);
        j++;
        snprintf(pre, sizeof pre, "layers.%d.%d", i, j);
        bind_tr(&b, c, &n->tr[i * n->per_layer + j], c->freq_depth, 0, pre);
    }
    if (c->kind == DMX__RF_BS) n->final_norm = bind(&b, n->D, 0, 0, "final_norm.gamma");
    /* MaskEstimator: MLP(dim, 2 * features, hidden = dim * mlp_expansion_factor,
     * depth) + GLU. The number of Linears is the reference's (BS: depth,
     * Mel-Band: depth + 1): counted in the checkpoint and checked. */
    n->mlp_hidden = n->D * c->mlp_expansion_factor;
    int n_lin = c->kind == DMX__RF_BS ? c->mask_estimator_depth : c->mask_estimator_depth + 1;
    if (b.st == DMX_OK && has(&b, "mask_estimators.0.to_freqs.0.0.%d.weight", 2 * n_lin))
        b.st = dmx__fail(DMX_ERR_MODEL,
                         "roformer: the checkpoint's mask estimators have more layers than "
                         "mask_estimator_depth = %d "
                         "implies",
                         c->mask_estimator_depth);
    for (int s = 0; s < c->num_stems && b.st == DMX_OK; s++)
        for (int k = 0; k < n->nb && b.st == DMX_OK; k++) {
            rf_mlp *m = &n->mask[s * n->nb + k];
            m->n_lin = n_lin;
            m->w = calloc((size_t)n_lin, sizeof *m->w);
            m->b = calloc((size_t)n_lin, sizeof *m->b);
            m->dout = calloc((size_t)n_lin, sizeof *m->dout);
            if (!m->w || !m->b || !m->dout) {
                b.st = dmx__fail(DMX_ERR_NOMEM, "roformer: out of memory");
                break;
            }
            int fb = n->feat_off[k + 1] - n->feat_off[k];
            for (int l = 0; l < n_lin; l++) {
                int din = l == 0 ? n->D : n->mlp_hidden;
                int dout = l == n_lin - 1 ? 2 * fb : n->mlp_hidden;
                m->dout[l] = dout;
                m->w[l] = bind(&b, dout, din, 0, "mask_estimators.%d.to_freqs.%d.0.%d.weight", s, k,
                               2 * l);
                m->b[l] =
                    bind(&b, dout, 0, 0, "mask_estimators.%d.to_freqs.%d.0.%d.bias", s, k, 2 * l);
            }
        }
    if (b.st == DMX_OK && has(&b, "mask_estimators.%d.to_freqs.0.0.0.weight", c->num_stems))
        b.st = dmx__fail(DMX_ERR_MODEL,
                         "roformer: the checkpoint has more mask estimators than num_stems = %d",
                         c->num_stems);
    for (size_t i = 0; b.st == DMX_OK && i < nt; i++)
        if (!b.used[i])
            b.st = dmx__fail(DMX_ERR_MODEL,
                             "roformer: unexpected tensor '%s' in the checkpoint (config and "
                             "checkpoint disagree?)",
                             dmx__ckpt_tensor_at(ck, i)->name);
    free(b.used);
    if (b.st != DMX_OK) {
        free_net(n);
        return b.st;
    }
    /* torch.hann_window(win_length) (periodic), zero-padded to n_fft, centred */
    n->window = calloc((size_t)c->n_fft, sizeof(float));
    float *rbuf = fftwf_alloc_real((size_t)c->n_fft);
    fftwf_complex *cbuf = fftwf_alloc_complex((size_t)n->F);
    if (!n->window || !rbuf || !cbuf) {
        fftwf_free(rbuf);
        fftwf_free(cbuf);
        free_net(n);
        return dmx__fail(DMX_ERR_NOMEM, "roformer: out of memory");
    }
    int left = (c->n_fft - c->win_length) / 2;
    for (int i = 0; i < c->win_length; i++)
        n->window[left + i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / c->win_length));
    pthread_mutex_lock(&g_plan_lock);
    n->fwd = fftwf_plan_dft_r2c_1d(c->n_fft, rbuf, cbuf, FFTW_ESTIMATE);
    n->inv = fftwf_plan_dft_c2r_1d(c->n_fft, cbuf, rbuf, FFTW_ESTIMATE);
    pthread_mutex_unlock(&g_plan_lock);
    fftwf_free(rbuf);
    fftwf_free(cbuf);
    if (!n->fwd || !n->inv) {
        free_net(n);
        return dmx__fail(DMX_ERR_INTERNAL, "roformer: FFTW could not plan an FFT of %d", c->n_fft);
    }
    *out = n;
    return DMX_OK;
}

dmx_status dmx__roformer_load(const char *config_path, const char *ckpt_path, dmx__roformer **out) {
    *out = NULL;
    dmx__rf_config cfg;
    dmx_status s = dmx__rf_config_load(config_path, &cfg);
    if (s != DMX_OK) return s;
    dmx__ckpt *ck = NULL;
    s = dmx__ckpt_load_state_dict(ckpt_path, &ck);
    if (s != DMX_OK) return s;
    return dmx__roformer_build(&cfg, ck, out);
}

int64_t dmx__roformer_out_len(const dmx__roformer *n, int64_t len) {
    if (n->cfg.kind == DMX__RF_BS || n->cfg.match_input_audio_length) return len;
    return (int64_t)n->cfg.hop * (len / n->cfg.hop);
}

/* ---- kernels ------------------------------------------------------------------- */

/* y = x / max(||x||, 1e-12) * sqrt(dim) * gamma, per row (F.normalize-based RMSNorm) */
static void rms_norm(const float *x, int ldx, float *y, int ldy, int N, int dim,
                     const float *gamma) {
    const float scale = sqrtf((float)dim);
    for (int i = 0; i < N; i++) {
        const float *xr = x + (size_t)i * ldx;
        float *yr = y + (size_t)i * ldy;
        double sum = 0, ss = 0;
        dmx__sum_sq(xr, (size_t)dim, &sum, &ss);
        float nrm = (float)sqrt(ss);
        float inv = 1.0f / (nrm > 1e-12f ? nrm : 1e-12f);
        for (int j = 0; j < dim; j++) yr[j] = xr[j] * inv * scale * gamma[j];
    }
}

static void add_bias_rows(float *y, int ld, int N, int dim, const float *b) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < dim; j++) y[(size_t)i * ld + j] += b[j];
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Rotary embedding on one head's columns (interleaved pairs), rows = positions
 * 0..L-1 of each sequence in a group of nseq sequences. */
static void rope(float *q, int ld, int nseq, int L, int Dh, const float *cs) {
    for (int s = 0; s < nseq; s++)
        for (int p = 0; p < L; p++) {
            float *r = q + ((size_t)s * L + p) * ld;
            const float *c = cs + (size_t)p * Dh; /* cos, sin interleaved per pair */
            for (int i = 0; i < Dh / 2; i++) {
                float x0 = r[2 * i], x1 = r[2 * i + 1], co = c[2 * i], si = c[2 * i + 1];
                r[2 * i] = x0 * co - x1 * si;
                r[2 * i + 1] = x1 * co + x0 * si;
            }
        }
}

/* Softmax attention block over nseq sequences of L tokens, x (nseq*L, D) += attn(x). */
static int attn_softmax(const dmx__roformer *n, dmx__arena *ar, const rf_block *k, float *x,
                        int nseq, int L) {
    const int D = n->D, H = n->H, Dh = n->Dh, inner = H * Dh, N = nseq * L;
    dmx__arena_mark m = dmx__arena_save(ar);
    float *h = dmx__arena_floats(ar, (size_t)N * D);
    float *qkv = dmx__arena_floats(ar, (size_t)N * 3 * inner);
    float *g = dmx__arena_floats(ar, (size_t)N * H);
    float *o = dmx__arena_floats(ar, (size_t)N * inner);
    float *cs = dmx__arena_floats(ar, (size_t)L * Dh);
    if (!h || !qkv || !g || !o || !cs) {
        dmx__arena_restore(ar, m);
        return -1;
    }
    const size_t row = (size_t)3 * inner;
    const dmx__attn at = {.heads = H, .nseq = nseq, .Nq = L, .Nk = L, .D = Dh,
                          .scale = 1.0f / sqrtf((float)Dh), .q = qkv, .k = qkv + inner,
                          .v = qkv + 2 * inner, .ldq = (int)row, .ldk = (int)row, .ldv = (int)row,
                          .seq_q = L * row, .seq_k = L * row, .seq_v = L * row, .out = o,
                          .ldo = inner, .seq_o = (size_t)L * inner, .gain = g, .ld_gain = H,
                          .seq_gain = (size_t)L * H};
    float *scratch = dmx__arena_floats(ar, dmx__attn_scratch(&at) * H);
    if (!scratch) {
        dmx__arena_restore(ar, m);
        return -1;
    }
    rms_norm(x, D, h, D, N, D, k->norm);
    dmx__sgemm(0, 1, N, 3 * inner, D, 1.0f, h, D, k->w_qkv, D, 0.0f, qkv, 3 * inner);
    dmx__sgemm(0, 1, N, H, D, 1.0f, h, D, k->w_gates, D, 0.0f, g, H);
    for (int i = 0; i < N; i++)
        for (int hh = 0; hh < H; hh++)
            g[(size_t)i * H + hh] = sigmoidf(g[(size_t)i * H + hh] + k->b_gates[hh]);
    /* angles: float32 product position * freq, as torch forms it */
    for (int p = 0; p < L; p++)
        for (int i = 0; i < Dh / 2; i++) {
            float a = (float)p * k->freqs[i];
            cs[(size_t)p * Dh + 2 * i] = (float)cos((double)a);
            cs[(size_t)p * Dh + 2 * i + 1] = (float)sin((double)a);
        }
    for (int hh = 0; hh < H; hh++) {
        rope(qkv + hh * Dh, 3 * inner, nseq, L, Dh, cs);
        rope(qkv + inner + hh * Dh, 3 * inner, nseq, L, Dh, cs);
    }
    /* heads side by side on a team; each head's gate scales its output */
    dmx__attn_run(&at, scratch);
    dmx__sgemm(0, 1, N, D, inner, 1.0f, o, inner, k->w_out, inner, 1.0f, x, D);
    dmx__arena_restore(ar, m);
    return 0;
}

/* Linear attention over one sequence of N tokens, x (N, D) += attn(x), in
 * two passes over blocks of TOKENS tokens so no whole-sequence q, k, v is
 * held: pass 1 sums each head's q/k column norms and its Gram matrix
 * G = q^T k (Dh x Dh); since l2norm along the tokens only scales columns,
 * softmax_j(8 * (q / |q|_col * e^temp)^T (k / |k|_col)) is formed from G;
 * pass 2 recomputes v and adds out = v A^T through to_out. */
static int attn_linear(const dmx__roformer *n, dmx__arena *ar, const rf_block *k, float *x, int N) {
    const int D = n->D, H = n->H, Dh = n->Dh, inner = H * Dh;
    const int B = N < TOKENS ? N : TOKENS;
    dmx__arena_mark m = dmx__arena_save(ar);
    float *h = dmx__arena_floats(ar, (size_t)B * D);
    float *qkv = dmx__arena_floats(ar, (size_t)B * 3 * inner);
    float *o = dmx__arena_floats(ar, (size_t)B * inner);
    float *G = dmx__arena_zeros(ar, (size_t)H * Dh * Dh);
    float *nq = dmx__arena_zeros(
        ar, (size_t)2 * inner); /* |q| then |k| per (head, d), as sums of squares */
    if (!h || !qkv || !o || !G || !nq) {
        dmx__arena_restore(ar, m);
        return -1;
    }
    double *ss = (double *)dmx__arena_zeros(ar, (size_t)4 * inner); /* 2 * inner doubles */
    if (!ss) {
        dmx__arena_restore(ar, m);
        return -1;
    }
    for (int t0 = 0; t0 < N; t0 += B) {
        int nb = N - t0 < B ? N - t0 : B;
        rms_norm(x + (size_t)t0 * D, D, h, D, nb, D, k->norm);
        dmx__sgemm(0, 1, nb, 2 * inner, D, 1.0f, h, D, k->w_qkv, D, 0.0f, qkv, 3 * inner);
        for (int i = 0; i < nb; i++)
            for (int j = 0; j < 2 * inner; j++) {
                double v = qkv[(size_t)i * 3 * inner + j];
                ss[j] += v * v;
            }
        for (int hh = 0; hh < H; hh++)
            dmx__sgemm(1, 0, Dh, Dh, nb, 1.0f, qkv + hh * Dh, 3 * inner, qkv + inner + hh * Dh,
                       3 * inner, 1.0f, G + (size_t)hh * Dh * Dh, Dh);
    }
    for (int j = 0; j < 2 * inner; j++) {
        float nrm = (float)sqrt(ss[j]);
        nq[j] = 1.0f / (nrm > 1e-12f ? nrm : 1e-12f);
    }
    for (int hh = 0; hh < H; hh++) {
        float *A = G + (size_t)hh * Dh * Dh;
        float te = expf(k->temperature[hh]);
        for (int i = 0; i < Dh; i++)
            for (int j = 0; j < Dh; j++)
                A[i * Dh + j] =
                    8.0f * (A[i * Dh + j] * (nq[hh * Dh + i] * te) * nq[inner + hh * Dh + j]);
        dmx__softmax_rows(A, Dh, Dh);
    }
    for (int t0 = 0; t0 < N; t0 += B) {
        int nb = N - t0 < B ? N - t0 : B;
        float *xb = x + (size_t)t0 * D;
        rms_norm(xb, D, h, D, nb, D, k->norm);
        float *v = qkv; /* (nb, inner) */
        dmx__sgemm(0, 1, nb, inner, D, 1.0f, h, D, k->w_qkv + (size_t)2 * inner * D, D, 0.0f, v,
                   inner);
        for (int hh = 0; hh < H; hh++)
            dmx__sgemm(0, 1, nb, Dh, Dh, 1.0f, v + hh * Dh, inner, G + (size_t)hh * Dh * Dh, Dh,
                       0.0f, o + hh * Dh, inner);
        dmx__sgemm(0, 1, nb, D, inner, 1.0f, o, inner, k->w_out, inner, 1.0f, xb, D);
    }
    dmx__arena_restore(ar, m);
    return 0;
}

/* x (N, D) += ff(x) */
static int feed_forward(const dmx__roformer *n, dmx__arena *ar, const rf_block *k, float *x,
                        int N) {
    const int D = n->D, I = k->ff_inner;
    dmx__arena_mark m = dmx__arena_save(ar);
    float *h = dmx__arena_floats(ar, (size_t)N * D);
    float *u = dmx__arena_floats(ar, (size_t)N * I);
    if (!h || !u) {
        dmx__arena_restore(ar, m);
        return -1;
    }
    rms_norm(x, D, h, D, N, D, k->ff_norm);
    dmx__linear_act(h, N, D, k->ff_w1, k->ff_b1, I, u, DMX__ACT_GELU);
    dmx__sgemm(0, 1, N, D, I, 1.0f, u, I, k->ff_w2, I, 1.0f, x, D);
    add_bias_rows(x, D, N, D, k->ff_b2);
    dmx__arena_restore(ar, m);
    return 0;
}

/* One transformer over nseq sequences of L tokens stored (nseq, L, D). */
static int run_tr(const dmx__roformer *n, dmx__arena *ar, const rf_tr *tr, float *x, int nseq,
                  int L) {
    const int D = n->D;
    if (tr->n > 0 && tr->blk[0].linear) {
        /* one sequence of all tokens */
        int N = nseq * L;
        for (int j = 0; j < tr->n; j++)
            if (attn_linear(n, ar, &tr->blk[j], x, N) || feed_forward(n, ar, &tr->blk[j], x, N))
                return -1;
    } else {
        int G = TOKENS / L;
        if (G < 1) G = 1;
        for (int s0 = 0; s0 < nseq; s0 += G) {
            int g = nseq - s0 < G ? nseq - s0 : G;
            float *xg = x + (size_t)s0 * L * D;
            for (int j = 0; j < tr->n; j++)
                if (attn_softmax(n, ar, &tr->blk[j], xg, g, L) ||
                    feed_forward(n, ar, &tr->blk[j], xg, g * L))
                    return -1;
        }
    }
    if (tr->norm) rms_norm(x, D, x, D, nseq * L, D, tr->norm);
    return 0;
}

/* ---- STFT ---------------------------------------------------------------------- */

/* mix (A, len) -> spec (R, t, 2), row = bin * A + channel */
static int stft(const dmx__roformer *n, dmx__arena *ar, const float *mix, int len, int t,
                float *spec) {
    const int nfft = n->cfg.n_fft, hop = n->cfg.hop, A = n->A, F = n->F;
    dmx__arena_mark m = dmx__arena_save(ar);
    float *fr = dmx__arena_floats(ar, (size_t)nfft);
    float *cb = dmx__arena_floats(ar, (size_t)2 * F);
    if (!fr || !cb) {
        dmx__arena_restore(ar, m);
        return -1;
    }
    const float norm = n->cfg.normalized ? (float)(1.0 / sqrt((double)nfft)) : 1.0f;
    for (int a = 0; a < A; a++) {
        const float *x = mix + (size_t)a * len;
        for (int f0 = 0; f0 < t; f0++) {
            long s0 = (long)f0 * hop - nfft / 2;
            for (int i = 0; i < nfft; i++) fr[i] = x[dmx__reflect(s0 + i, len)] * n->window[i];
            fftwf_execute_dft_r2c(n->fwd, fr, (fftwf_complex *)cb);
            for (int f = 0; f < F; f++) {
                float *d = spec + (((size_t)f * A + a) * t + f0) * 2;
                d[0] = cb[2 * f] * norm;
                d[1] = cb[2 * f + 1] * norm;
            }
        }
    }
    dmx__arena_restore(ar, m);
    return 0;
}

/* spec (R, t, 2) of one stem -> out (A, len): torch.istft(center=True), length
 * out_len (zeros past what the frames cover), zeros up to len. Returns 0, -1
 * out of memory, 1 when the window fails the NOLA condition. */
static int istft(const dmx__roformer *n, dmx__arena *ar, const float *spec, int t, int len,
                 int out_len, float *out) {
    const int nfft = n->cfg.n_fft, hop = n->cfg.hop, A = n->A, F = n->F;
    const long total = (long)nfft + (long)hop * (t - 1);
    dmx__arena_mark m = dmx__arena_save(ar);
    float *fr = dmx__arena_floats(ar, (size_t)nfft);
    float *cb = dmx__arena_floats(ar, (size_t)2 * F);
    float *acc = dmx__arena_floats(ar, (size_t)total);
    float *env = dmx__arena_zeros(ar, (size_t)total);
    if (!fr || !cb || !acc || !env) {
        dmx__arena_restore(ar, m);
        return -1;
    }
    const float scale = (n->cfg.normalized ? (float)sqrt((double)nfft) : 1.0f) / (float)nfft;
    for (int f0 = 0; f0 < t; f0++)
        for (int i = 0; i < nfft; i++) env[(long)f0 * hop + i] += n->window[i] * n->window[i];
    /* torch.istft refuses a window whose overlap-added square vanishes (NOLA) */
    for (long j = nfft / 2; j < total - nfft / 2 && j < nfft / 2 + out_len; j++)
        if (env[j] < 1e-11f) {
            dmx__arena_restore(ar, m);
            return 1;
        }
    for (int a = 0; a < A; a++) {
        memset(acc, 0, sizeof(float) * (size_t)total);
        for (int f0 = 0; f0 < t; f0++) {
            for (int f = 0; f < F; f++) {
                const float *s = spec + (((size_t)f * A + a) * t + f0) * 2;
                cb[2 * f] = s[0];
                cb[2 * f + 1] = s[1];
            }
            cb[1] = 0.0f; /* imaginary parts of DC and Nyquist are ignored */
            cb[2 * (F - 1) + 1] = 0.0f;
            fftwf_execute_dft_c2r(n->inv, (fftwf_complex *)cb, fr);
            float *d = acc + (long)f0 * hop;
            for (int i = 0; i < nfft; i++) d[i] += fr[i] * scale * n->window[i];
        }
        float *o = out + (size_t)a * len;
        long c = nfft / 2;
        for (int i = 0; i < len; i++) {
            long j = c + i;
            o[i] = (i < out_len && j < total - c) ? acc[j] / env[j] : 0.0f;
        }
    }
    dmx__arena_restore(ar, m);
    return 0;
}

/* ---- forward ------------------------------------------------------------------- */

static dmx_status oom(void) {
    return dmx__fail(DMX_ERR_NOMEM, "roformer: out of memory for activations");
}

dmx_status dmx__roformer_forward(const dmx__roformer *n, dmx__arena *ar, const float *mix, int len,
                                 float *out, dmx__tap_fn tap, void *tap_user) {
    const dmx__rf_config *c = &n->cfg;
    const int A = n->A, R = n->R, D = n->D, nb = n->nb, S = c->num_stems;
    if (len <= c->n_fft / 2)
        return dmx__fail(DMX_ERR_BAD_INPUT,
                         "roformer: %d samples are too few for an STFT of %d (need more than %d)",
                         len, c->n_fft, c->n_fft / 2);
    const int t = 1 + len / c->hop;
    const int out_len = (int)dmx__roformer_out_len(n, len);
    dmx__arena_mark m0 = dmx__arena_save(ar);
    float *spec = dmx__arena_floats(ar, (size_t)R * t * 2);
    float *x = dmx__arena_floats(ar, (size_t)t * nb * D);
    float *y = dmx__arena_floats(ar, (size_t)t * nb * D);
    float *skip = c->skip_connection ? dmx__arena_zeros(ar, (size_t)t * nb * D) : NULL;
    if (!spec || !x || !y || (c->skip_connection && !skip) || stft(n, ar, mix, len, t, spec)) {
        dmx__arena_restore(ar, m0);
        return oom();
    }
    if (tap) tap(tap_user, "stft", spec, A, n->F, t * 2);

    /* band split */
    {
        dmx__arena_mark m = dmx__arena_save(ar);
        float *fb = dmx__arena_floats(ar, (size_t)t * n->maxfeat);
        if (!fb) {
            dmx__arena_restore(ar, m0);
            return oom();
        }
        for (int b = 0; b < nb; b++) {
            int nf = n->feat_off[b + 1] - n->feat_off[b];
            int k = 0;
            for (int i = n->bands.off[b]; i < n->bands.off[b + 1]; i++)
                for (int a = 0; a < A; a++, k++) {
                    const float *s = spec + ((size_t)n->bands.bins[i] * A + a) * t * 2;
                    for (int f0 = 0; f0 < t; f0++) {
                        fb[(size_t)f0 * nf + 2 * k] = s[2 * f0];
                        fb[(size_t)f0 * nf + 2 * k + 1] = s[2 * f0 + 1];
                    }
                }
            rms_norm(fb, nf, fb, nf, t, nf, n->bs_norm[b]);
            float *xb = x + (size_t)b * D;
            const dmx__gemm_epi e = {.col_bias = n->bs_b[b]};
            dmx__sgemm_epi(0, 1, t, D, nf, 1.0f, fb, nf, n->bs_w[b], nf, 0.0f, xb, nb * D, &e);
        }
        dmx__arena_restore(ar, m);
    }
    if (tap) tap(tap_user, "band_split", x, t, nb, D);

    /* layers */
    for (int i = 0; i < c->depth; i++) {
        const rf_tr *tr = &n->tr[i * n->per_layer];
        if (c->linear_depth > 0) {
            if (run_tr(n, ar, tr, x, 1, t * nb)) goto fail;
            tr++;
        }
        if (skip)
            dmx__add(x, skip, (size_t)t * nb * D); /* x + sum of the earlier layers' outputs */
        /* time: (t, nb, D) -> (nb, t, D) */
        for (int f0 = 0; f0 < t; f0++)
            for (int b = 0; b < nb; b++)
                memcpy(y + ((size_t)b * t + f0) * D, x + ((size_t)f0 * nb + b) * D,
                       sizeof(float) * D);
        if (run_tr(n, ar, tr, y, nb, t)) goto fail;
        char name[32];
        snprintf(name, sizeof name, "layer%d_time", i);
        if (tap) tap(tap_user, name, y, nb, t, D);
        for (int f0 = 0; f0 < t; f0++)
            for (int b = 0; b < nb; b++)
                memcpy(x + ((size_t)f0 * nb + b) * D, y + ((size_t)b * t + f0) * D,
                       sizeof(float) * D);
        if (run_tr(n, ar, tr + 1, x, t, nb)) goto fail;
        snprintf(name, sizeof name, "layer%d_freq", i);
        if (tap) tap(tap_user, name, x, t, nb, D);
        if (skip) dmx__add(skip, x, (size_t)t * nb * D);
    }
    if (n->final_norm) {
        rms_norm(x, D, x, D, t * nb, D, n->final_norm);
        if (tap) tap(tap_user, "final_norm", x, t, nb, D);
    }

    /* mask estimators, masking, istft: one stem at a time */
    {
        dmx__arena_mark m = dmx__arena_save(ar);
        float *mask = dmx__arena_floats(ar, (size_t)R * t * 2);
        float *hid = dmx__arena_floats(
            ar, (size_t)t * (n->mlp_hidden > 2 * n->maxfeat ? n->mlp_hidden : 2 * n->maxfeat));
        float *hid2 = dmx__arena_floats(
            ar, (size_t)t * (n->mlp_hidden > 2 * n->maxfeat ? n->mlp_hidden : 2 * n->maxfeat));
        float *m0tap = tap ? dmx__arena_floats(ar, (size_t)t * n->feat_off[nb]) : NULL;
        if (!mask || !hid || !hid2 || (tap && !m0tap)) goto fail;
        for (int s = 0; s < S; s++) {
            memset(mask, 0, sizeof(float) * (size_t)R * t * 2);
            for (int b = 0; b < nb; b++) {
                const rf_mlp *mlp = &n->mask[s * nb + b];
                const float *in = x + (size_t)b * D;
                int ldin = nb * D, din = D;
                float *cur = hid, *other = hid2;
                for (int l = 0; l < mlp->n_lin; l++) {
                    int dout = mlp->dout[l];
                    const dmx__gemm_epi e = {.col_bias = mlp->b[l]};
                    dmx__sgemm_epi(0, 1, t, dout, din, 1.0f, in, ldin, mlp->w[l], din, 0.0f, cur,
                                   dout, &e);
                    if (l < mlp->n_lin - 1) dmx__tanh(cur, (size_t)t * dout);
                    in = cur;
                    ldin = din = dout;
                    float *sw = cur;
                    cur = other;
                    other = sw;
                }
                /* GLU: first half * sigmoid(second half); `in` holds (t, 2 nf) */
                int nf = n->feat_off[b + 1] - n->feat_off[b];
                int k = 0;
                for (int i = n->bands.off[b]; i < n->bands.off[b + 1]; i++)
                    for (int a = 0; a < A; a++, k++) {
                        float *d = mask + ((size_t)n->bands.bins[i] * A + a) * t * 2;
                        for (int f0 = 0; f0 < t; f0++) {
                            const float *r = in + (size_t)f0 * 2 * nf;
                            float re = r[2 * k] * sigmoidf(r[nf + 2 * k]);
                            float im = r[2 * k + 1] * sigmoidf(r[nf + 2 * k + 1]);
                            d[2 * f0] += re;
                            d[2 * f0 + 1] += im;
                            if (m0tap && s == 0) {
                                m0tap[(size_t)f0 * n->feat_off[nb] + n->feat_off[b] + 2 * k] = re;
                                m0tap[(size_t)f0 * n->feat_off[nb] + n->feat_off[b] + 2 * k + 1] =
                                    im;
                            }
                        }
                    }
            }
            if (m0tap && s == 0) tap(tap_user, "mask0", m0tap, 1, t, n->feat_off[nb]);
            /* average over the bands holding each bin (Mel-Band), complex multiply, zero_dc */
            for (int r = 0; r < R; r++) {
                int f = r / A;
                float *mr = mask + (size_t)r * t * 2;
                const float *sr = spec + (size_t)r * t * 2;
                for (int f0 = 0; f0 < t; f0++) {
                    float mre = mr[2 * f0], mim = mr[2 * f0 + 1];
                    if (c->kind == DMX__RF_MEL)
                        mre /= (float)n->bands.per_bin[f], mim /= (float)n->bands.per_bin[f];
                    float a = sr[2 * f0], bb = sr[2 * f0 + 1];
                    mr[2 * f0] = a * mre - bb * mim;
                    mr[2 * f0 + 1] = a * mim + bb * mre;
                    if (c->zero_dc && f == 0) mr[2 * f0] = mr[2 * f0 + 1] = 0.0f;
                }
            }
            int r = istft(n, ar, mask, t, len, out_len, out + (size_t)s * A * len);
            if (r > 0) {
                dmx__arena_restore(ar, m0);
                return dmx__fail(
                    DMX_ERR_MODEL,
                    "roformer: the STFT window (win_length %d, hop %d) does not overlap "
                    "enough to invert (torch.istft's NOLA condition)",
                    c->win_length, c->hop);
            }
            if (r) goto fail;
        }
        dmx__arena_restore(ar, m);
    }
    dmx__arena_restore(ar, m0);
    return DMX_OK;
fail:
    dmx__arena_restore(ar, m0);
    return oom();
}

/* ---- dmx__net_vt ------------------------------------------------------------------ */

/* A RoFormer is built from its YAML config plus a bare state dict
 * (dmx__roformer_net_load); a checkpoint alone does not describe it. */
static dmx_status vt_build(dmx__ckpt *ck, void **out) {
    *out = NULL;
    dmx__ckpt_free(ck);
    return dmx__fail(DMX_ERR_UNSUPPORTED,
                     "a RoFormer checkpoint needs its MSST YAML config (--model-config)");
}

static void vt_free(void *net) { dmx__roformer_free(net); }

static void vt_describe(const void *net, dmx__net_desc *d) {
    const dmx__roformer *n = net;
    memset(d, 0, sizeof *d);
    d->klass = n->cfg.kind == DMX__RF_BS ? "BSRoformer" : "MelBandRoformer";
    d->n_sources = n->cfg.num_stems;
    for (int i = 0; i < n->cfg.num_stems && i < DMX__MAX_SOURCES; i++)
        d->sources[i] = n->cfg.stems[i];
    d->audio_channels = n->A;
    d->samplerate = n->cfg.audio_sample_rate;
    d->seg_num = n->cfg.chunk_size;
    d->seg_den = n->cfg.audio_sample_rate;
    d->segment = (double)n->cfg.chunk_size / n->cfg.audio_sample_rate;
    d->training_length = n->cfg.chunk_size;
    /* fixed_segment 0: not an HTDemucs (upstream's isinstance rule); sources
     * are owned by the network's config copy */
    size_t np = 0; /* every state tensor (the shared rotary frequencies once per layer) */
    for (size_t i = 0; i < dmx__ckpt_n_tensors(n->ck); i++)
        np += dmx__ckpt_tensor_at(n->ck, i)->numel;
    d->n_params = (int64_t)np;
}

static int64_t vt_valid_length(const void *net, int64_t length) {
    (void)net;
    return length;
}

static dmx_status vt_forward(const void *net, dmx__arena *ar, const float *mix, int len, float *out,
                             dmx__tap_fn tap, void *tap_user) {
    return dmx__roformer_forward(net, ar, mix, len, out, tap, tap_user);
}

const dmx__net_vt dmx__bs_roformer_vt = {"bs_roformer", vt_build,        vt_free,
                                         vt_describe,   vt_valid_length, vt_forward};
const dmx__net_vt dmx__mel_band_roformer_vt = {"mel_band_roformer", vt_build,        vt_free,
                                               vt_describe,         vt_valid_length, vt_forward};

dmx_status dmx__roformer_net_load(const char *config_path, const char *ckpt_path, dmx__net **out) {
    *out = NULL;
    dmx__roformer *r = NULL;
    dmx_status s = dmx__roformer_load(config_path, ckpt_path, &r);
    if (s != DMX_OK) return s;
    dmx__net *n = calloc(1, sizeof *n);
    if (!n) {
        dmx__roformer_free(r);
        return dmx__fail(DMX_ERR_NOMEM, "roformer: out of memory");
    }
    n->vt = r->cfg.kind == DMX__RF_BS ? &dmx__bs_roformer_vt : &dmx__mel_band_roformer_vt;
    n->impl = r;
    n->vt->describe(r, &n->desc);
    *out = n;
    return DMX_OK;
}
