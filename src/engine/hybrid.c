/*
 * hybrid.c - the steps of HEncLayer / HDecLayer.forward both hybrid
 * networks share (see hybrid.h).
 */
#include "hybrid.h"

#include <string.h>

void dmx__norm_image(float *x, int C, size_t L, const dmx__norm *n) {
    dmx__norm_image_act(x, C, L, n, DMX__ACT_NONE);
}

void dmx__norm_image_act(float *x, int C, size_t L, const dmx__norm *n, dmx__act act) {
    if (n->groups)
        dmx__group_norm_act(x, C, 1, (int)L, n->groups, n->w, n->b, 1e-5f, act);
    else
        dmx__act_apply(x, (size_t)C * L, act);
}

int dmx__enc_conv(dmx__arena *ar, const dmx__conv *cv, const dmx__norm *norm1, const float *x,
                  int H, int W, const float *inject, int empty, float *c) {
    const dmx__conv_geom *g = &cv->g;
    const int fused = !empty && !inject && !norm1->groups;
    if (dmx__conv2d_act(ar, g, x, H, W, cv->w, cv->b, fused ? DMX__ACT_GELU : DMX__ACT_NONE, c))
        return -1;
    if (empty || fused) return 0;
    const int ho = dmx__conv_out(H, g->kh, g->sh, g->ph, g->dh);
    const int wo = dmx__conv_out(W, g->kw, g->sw, g->pw, g->dw);
    if (inject) dmx__inject(c, inject, g->cout, ho, wo);
    dmx__norm_image_act(c, g->cout, (size_t)ho * wo, norm1, DMX__ACT_GELU);
    return 0;
}

int dmx__dec_conv_tr(dmx__arena *ar, const dmx__conv *cv, const dmx__norm *norm2, int freq,
                     int pad, int last, const float *y, int H, int W, int hf, int wf, int ho,
                     int wo, float *z) {
    const dmx__conv_geom *g = &cv->g;
    const dmx__act act = last ? DMX__ACT_NONE : DMX__ACT_GELU;
    const int fused = !norm2->groups, crop = fused && freq ? pad : 0;
    if (dmx__conv_tr2d_crop(ar, g, y, H, W, cv->w, g->cout * g->kh * g->kw, cv->b, crop,
                            fused ? act : DMX__ACT_NONE, z))
        return -1;
    if (!fused) dmx__norm_image_act(z, g->cout, (size_t)hf * wf, norm2, act);
    if (!crop) dmx__tr_trim(z, g->cout, freq, pad, hf, wf, ho, wo);
    return 0;
}

int dmx__rewrite_glu(dmx__arena *ar, const dmx__conv *cv, const dmx__norm *n, const float *x,
                     int H, int W, float *y) {
    if (!n->groups) return dmx__conv2d_glu(ar, &cv->g, x, H, W, cv->w, cv->b, y);
    size_t plane = (size_t)H * W;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *r = dmx__arena_floats(ar, (size_t)cv->g.cout * plane);
    if (!r || dmx__conv2d(ar, &cv->g, x, H, W, cv->w, cv->b, r)) return -1;
    dmx__norm_image(r, cv->g.cout, plane, n);
    dmx__glu(r, y, cv->g.cout, plane);
    dmx__arena_restore(ar, mk);
    return 0;
}

const float *dmx__pad_cols(dmx__arena *ar, const float *x, int rows, int W, int Wp) {
    if (Wp == W) return x;
    float *xp = dmx__arena_floats(ar, (size_t)rows * Wp);
    if (!xp) return NULL;
    for (int r = 0; r < rows; r++) {
        memcpy(xp + (size_t)r * Wp, x + (size_t)r * W, sizeof(float) * W);
        memset(xp + (size_t)r * Wp + W, 0, sizeof(float) * (Wp - W));
    }
    return xp;
}

void dmx__inject(float *c, const float *inject, int C, int H, int W) {
    for (int ch = 0; ch < C; ch++)
        for (int f = 0; f < H; f++) dmx__add(c + ((size_t)ch * H + f) * W, inject + (size_t)ch * W, W);
}

size_t dmx__tr_shape(const dmx__conv_geom *g, int freq, int pad, int length, int chout, int H,
                     int W, int *hf, int *wf, int *ho, int *wo) {
    *hf = (H - 1) * g->sh + g->kh;
    *wf = (W - 1) * g->sw + g->kw;
    *ho = freq ? *hf - 2 * pad : *hf;
    *wo = freq ? *wf : length;
    size_t untrimmed = (size_t)chout * *hf * *wf, trimmed = (size_t)chout * *ho * *wo;
    return untrimmed > trimmed ? untrimmed : trimmed;
}

void dmx__tr_trim(float *z, int C, int freq, int pad, int hf, int wf, int ho, int wo) {
    /* destination offsets never pass their sources: compact forward */
    for (int c = 0; c < C; c++) {
        if (freq) {
            if (pad)
                memmove(z + (size_t)c * ho * wo, z + ((size_t)c * hf + pad) * wf,
                        sizeof(float) * (size_t)ho * wo);
        } else { /* keep [pad, pad + wo) of the single row (H == 1) */
            int avail = wf - pad, n = wo < avail ? wo : avail;
            memmove(z + (size_t)c * wo, z + (size_t)c * wf + pad, sizeof(float) * n);
            if (n < wo) memset(z + (size_t)c * wo + n, 0, sizeof(float) * (wo - n));
        }
    }
}
