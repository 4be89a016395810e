/*
 * transformer.c - HTDemucs' CrossTransformerEncoder (upstream transformer.py),
 * inference only.
 *
 * Tokens are row-major (N, dim) matrices. The frequency branch (dim, F, T1) is
 * flattened time-major ("b c fr t1 -> b (t1 fr) c"), the time branch
 * (dim, T2) is transposed. Attention is attention.c's fused kernel, a strip
 * of queries of one head at a time, so no heads x N x N score matrix exists.
 */
#include <math.h>
#include <string.h>

#include "attention.h"
#include "error.h"
#include "ffn.h"
#include "htdemucs.h"


/* Position embeddings, computed in float32 the way upstream's torch code
 * does so the rounding matches. */
static void sin_embedding_1d(float *pe, int T, int C, float max_period, int cape_mean) {
    /* create_sin_embedding / create_sin_embedding_cape (eval): (T, C) */
    int half = C / 2;
    float mean = cape_mean ? (float)(T - 1) / 2.0f : 0.0f;
    for (int k = 0; k < half; k++) {
        float e = (float)k / (float)(half - 1);
        float div = powf(max_period, e);
        for (int t = 0; t < T; t++) {
            float phase = ((float)t - mean) / div;
            pe[(size_t)t * C + k] = cosf(phase);
            pe[(size_t)t * C + half + k] = sinf(phase);
        }
    }
}

static void sin_embedding_2d_add(float *x, int C, int F, int T1, float max_period, float weight) {
    /* create_2d_sin_embedding(C, F, T1), added to tokens x (T1*F, C) */
    int half = C / 2;
    float mul = (float)(-(log((double)max_period) / half));
    for (int i = 0; i < half / 2; i++) {
        float div = expf((float)(2 * i) * mul);
        for (int t = 0; t < T1; t++) {
            float pw = (float)t * div;
            float sw = sinf(pw), cw = cosf(pw);
            for (int f = 0; f < F; f++) {
                float ph = (float)f * div;
                float *tok = x + ((size_t)t * F + f) * C;
                tok[2 * i] += weight * sw;
                tok[2 * i + 1] += weight * cw;
                tok[half + 2 * i] += weight * sinf(ph);
                tok[half + 2 * i + 1] += weight * cosf(ph);
            }
        }
    }
}

/* GroupNorm over token matrix x (N, C): `groups` groups of channels,
 * statistics over all tokens (upstream MyGroupNorm). */
static void token_group_norm(float *x, int N, int C, const dmx__norm *n) {
    int cpg = C / n->groups;
    for (int g = 0; g < n->groups; g++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < N; i++) {
            dmx__sum_sq(x + (size_t)i * C + g * cpg, (size_t)cpg, &s, &s2);
        }
        double cnt = (double)N * cpg, mean = s / cnt, var = s2 / cnt - mean * mean;
        if (var < 0) var = 0;
        float rstd = (float)(1.0 / sqrt(var + 1e-5)), fm = (float)mean;
        for (int i = 0; i < N; i++) {
            float *p = x + (size_t)i * C + g * cpg;
            for (int c = 0; c < cpg; c++) {
                int cc = g * cpg + c;
                p[c] = (p[c] - fm) * rstd * n->w[cc] + n->b[cc];
            }
        }
    }
}

/* The norms of a layer: LayerNorm unless the model uses group norms. */
static void apply_norm(const float *x, float *y, int N, int C, const dmx__norm *n, int group) {
    if (group) {
        if (y != x) memcpy(y, x, sizeof(float) * (size_t)N * C);
        dmx__norm g = *n;
        g.groups = group;
        token_group_norm(y, N, C, &g);
    } else {
        dmx__layer_norm(x, y, N, C, n->w, n->b, 1e-5f);
    }
}

/* Multi-head attention: out (Nq, C) = MHA(q_in (Nq, C), kv_in (Nk, C)).
 * The heads run fused (attention.c), side by side on a team. */
static dmx_status mha(const dmx__tlayer *L, int heads, dmx__arena *ar, const float *q_in, int Nq,
                      const float *kv_in, int Nk, int C, float *out) {
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *q = dmx__arena_floats(ar, (size_t)Nq * C);
    float *k = dmx__arena_floats(ar, (size_t)Nk * C);
    float *v = dmx__arena_floats(ar, (size_t)Nk * C);
    float *o = dmx__arena_floats(ar, (size_t)Nq * C);
    const int D = C / heads;
    /* upstream divides q by sqrt(head_dim) before q @ k^T */
    const dmx__attn at = {.heads = heads, .nseq = 1, .Nq = Nq, .Nk = Nk, .D = D,
                          .scale = 1.0f / sqrtf((float)D), .q = q, .k = k, .v = v,
                          .ldq = C, .ldk = C, .ldv = C, .out = o, .ldo = C};
    float *scratch = dmx__arena_floats(ar, dmx__attn_scratch(&at) * heads);
    if (!q || !k || !v || !o || !scratch)
        return dmx__fail(DMX_ERR_NOMEM, "out of memory in attention");
    dmx__linear(q_in, Nq, C, L->in_w, L->in_b, C, q);
    dmx__linear(kv_in, Nk, C, L->in_w + (size_t)C * C, L->in_b + C, C, k);
    dmx__linear(kv_in, Nk, C, L->in_w + (size_t)2 * C * C, L->in_b + 2 * C, C, v);
    dmx__attn_run(&at, scratch);
    dmx__linear(o, Nq, C, L->out_w, L->out_b, C, out);
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}

static void add_scaled(float *x, const float *a, const float *gamma, int N, int C) {
    for (int i = 0; i < N; i++) {
        float *p = x + (size_t)i * C;
        const float *q = a + (size_t)i * C;
        if (gamma)
            for (int c = 0; c < C; c++) p[c] += gamma[c] * q[c];
        else
            for (int c = 0; c < C; c++) p[c] += q[c];
    }
}

/* One layer on x (N, C); kv (Nk, C) for cross layers. */
static dmx_status layer_forward(const dmx__xformer *xf, const dmx__tlayer *L, dmx__arena *ar,
                                float *x, int N, const float *kv, int Nk) {
    int C = xf->dim;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *h = dmx__arena_floats(ar, (size_t)N * C);
    float *a = dmx__arena_floats(ar, (size_t)N * C);
    float *hk = L->cross ? dmx__arena_floats(ar, (size_t)Nk * C) : NULL;
    if (!h || !a || (L->cross && !hk))
        return dmx__fail(DMX_ERR_NOMEM, "out of memory in transformer");
    dmx_status st;
    const dmx__norm *nff = L->cross ? &L->n3 : &L->n2;
    const dmx__act act = xf->gelu ? DMX__ACT_GELU : DMX__ACT_RELU;
    if (xf->norm_first) {
        apply_norm(x, h, N, C, &L->n1, xf->group_norm);
        if (L->cross) {
            apply_norm(kv, hk, Nk, C, &L->n2, xf->group_norm);
            st = mha(L, xf->heads, ar, h, N, hk, Nk, C, a);
        } else {
            st = mha(L, xf->heads, ar, h, N, h, N, C, a);
        }
        if (st != DMX_OK) return st;
        add_scaled(x, a, L->g1, N, C);
        apply_norm(x, h, N, C, nff, xf->group_norm);
        if (dmx__ffn(ar, h, N, C, L->l1_w, L->l1_b, xf->hidden, act, L->l2_w, L->l2_b, C, a))
            return dmx__fail(DMX_ERR_NOMEM, "out of memory in transformer");
        add_scaled(x, a, L->g2, N, C);
        if (L->norm_out.groups) token_group_norm(x, N, C, &L->norm_out);
    } else {
        st = L->cross ? mha(L, xf->heads, ar, x, N, kv, Nk, C, a)
                      : mha(L, xf->heads, ar, x, N, x, N, C, a);
        if (st != DMX_OK) return st;
        add_scaled(x, a, L->g1, N, C);
        apply_norm(x, x, N, C, &L->n1, xf->group_norm);
        if (dmx__ffn(ar, x, N, C, L->l1_w, L->l1_b, xf->hidden, act, L->l2_w, L->l2_b, C, a))
            return dmx__fail(DMX_ERR_NOMEM, "out of memory in transformer");
        add_scaled(x, a, L->g2, N, C);
        apply_norm(x, x, N, C, &L->n2, xf->group_norm);
    }
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}

static void norm_in(const dmx__xformer *xf, float *x, int N, const dmx__norm *n) {
    if (xf->norm_in == 1)
        dmx__layer_norm(x, x, N, xf->dim, n->w, n->b, 1e-5f);
    else if (xf->norm_in == 2)
        token_group_norm(x, N, xf->dim, n);
}

dmx_status dmx__xformer_forward(const dmx__xformer *xf, dmx__arena *ar, float *x, int F, int T1,
                                float *xt, int T2) {
    const int C = xf->dim, N1 = F * T1;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *tx = dmx__arena_floats(ar, (size_t)N1 * C);
    float *tt = dmx__arena_floats(ar, (size_t)T2 * C);
    float *old = dmx__arena_floats(ar, (size_t)N1 * C);
    float *pe = dmx__arena_floats(ar, (size_t)T2 * C);
    if (!tx || !tt || !old || !pe) return dmx__fail(DMX_ERR_NOMEM, "out of memory in transformer");
    /* (C, F, T1) -> tokens (T1*F, C) */
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f++)
            for (int t = 0; t < T1; t++)
                tx[((size_t)t * F + f) * C + c] = x[((size_t)c * F + f) * T1 + t];
    norm_in(xf, tx, N1, &xf->norm_in_x);
    sin_embedding_2d_add(tx, C, F, T1, xf->max_period, xf->weight_pos_embed);
    for (int c = 0; c < C; c++)
        for (int t = 0; t < T2; t++) tt[(size_t)t * C + c] = xt[(size_t)c * T2 + t];
    norm_in(xf, tt, T2, &xf->norm_in_t);
    if (xf->emb_scaled) {
        /* ScaledEmbedding: embedding(arange(T2)) * boost (3.0) */
        if (T2 > xf->pos_emb_rows) {
            dmx__arena_restore(ar, mk);
            return dmx__fail(
                DMX_ERR_INVALID_ARG,
                "%d time steps reach the transformer but its learned positions stop at %d "
                "(t_max_positions); use a shorter segment",
                T2, xf->pos_emb_rows);
        }
        for (size_t i = 0; i < (size_t)T2 * C; i++) pe[i] = xf->pos_emb[i] * 3.0f;
    } else {
        sin_embedding_1d(pe, T2, C, xf->max_period, xf->emb_cape && xf->cape_mean_normalize);
    }
    for (size_t i = 0; i < (size_t)T2 * C; i++) tt[i] += xf->weight_pos_embed * pe[i];

    dmx_status st = DMX_OK;
    for (int i = 0; i < xf->n_layers && st == DMX_OK; i++) {
        if (!xf->lx[i].cross) {
            st = layer_forward(xf, &xf->lx[i], ar, tx, N1, NULL, 0);
            if (st == DMX_OK) st = layer_forward(xf, &xf->lt[i], ar, tt, T2, NULL, 0);
        } else {
            memcpy(old, tx, sizeof(float) * (size_t)N1 * C);
            st = layer_forward(xf, &xf->lx[i], ar, tx, N1, tt, T2);
            if (st == DMX_OK) st = layer_forward(xf, &xf->lt[i], ar, tt, T2, old, N1);
        }
    }
    if (st == DMX_OK) {
        for (int c = 0; c < C; c++)
            for (int f = 0; f < F; f++)
                for (int t = 0; t < T1; t++)
                    x[((size_t)c * F + f) * T1 + t] = tx[((size_t)t * F + f) * C + c];
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T2; t++) xt[(size_t)c * T2 + t] = tt[(size_t)t * C + c];
    }
    dmx__arena_restore(ar, mk);
    return st;
}
