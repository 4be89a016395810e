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
