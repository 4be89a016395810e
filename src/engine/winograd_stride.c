/*
 * winograd_stride.c - kernel-2S, stride-S convolutions by F(3, 2); see
 * winograd_stride.h.
 *
 * Both directions reduce to two-tap correlations y[i] = g[0] d[i] + g[1]
 * d[i + 1] over rows (W wide, the vector dimension throughout). A tile
 * holds three consecutive outputs i = 3t .. 3t + 2 from d[3t .. 3t + 3]:
 *   V_k = sum_a BT[k][a] d[3t + a]          (input transform)
 *   U_k = G[k][0] g[0] + G[k][1] g[1]       (kernel transform)
 *   M_k = U_k V_k                           (4 matrix products)
 *   y[3t + j] = sum_k AT[j][k] M_k           (output transform)
 * The products' inner dimension Q and rows R:
 *   convolution: Q = S cin (q = p cin + ci, d = input phase p of channel
 *                ci: d[i] = x[S i + p - ph]), R = cout;
 *   transposed:  Q = cin (d[i] = x[i - 1]), R = S cout (r = p cout + co,
 *                the output phase: y[S m + p]).
 * A band holds the tiles whose transformed input and products fit the
 * scratch budget; its parts run on the caller's team like winograd.c's.
 */
#include "winograd_stride.h"

#include "team.h"

#include <string.h>

#define NP          4 /* transformed positions */
#define TM          3 /* outputs of a tile */
#define PARTS       8
#define BAND_BUDGET ((size_t)2 << 20) /* floats of V and M in one band (8 MiB) */

/* Points 0, 1, -1 and infinity: BT = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1,
 * 1, 0}, {0, -1, 0, 1}} and AT = {{1, 1, 1, 0}, {0, 1, -1, 0}, {0, 1, 1, 1}}
 * are written out in part_in and part_out; G is applied to the weights. */
static const float GM[NP][2] = {{1, 0}, {0.5f, 0.5f}, {0.5f, -0.5f}, {0, 1}};

/* kernel 2S x 1, stride S x 1, nothing along W, no dilation, enough
 * channels and width */
static int shape_ok(const dmx__conv_geom *g, int W) {
    return g->sh >= 2 && g->kh == 2 * g->sh && g->kw == 1 && g->sw == 1 && g->pw == 0 &&
           g->dh == 1 && g->dw == 1 && g->cin >= 32 && W >= 8;
}

int dmx__wino_conv_s_use(const dmx__conv_geom *g, int H, int W) {
    if (!shape_ok(g, W) || g->ph < 0 || g->ph >= g->kh || g->cout < 32) return 0;
    return dmx__conv_out(H, g->kh, g->sh, g->ph, 1) >= 2;
}

int dmx__wino_tr_use(const dmx__conv_geom *g, int H, int W) {
    return shape_ok(g, W) && g->ph == 0 && g->cout * g->sh >= 32 && H >= 2;
}

typedef struct sband {
    const dmx__conv_geom *g;
    int tr;                  /* transposed */
    const float *x, *b, *U;  /* U (NP, R, Q) */
    const float *zero;       /* W zeros: the rows outside the input */
    float *V, *M, *y;        /* V (NP, Q, P), M (NP, R, P) */
    int H, W, S, Q, R, n_out; /* n_out: outputs i of the correlation */
    dmx__act act;             /* over each output row as it is written */
    int crop, rows;           /* transposed: rows [crop, crop + rows) of each plane kept */
    int t0, nt;               /* the band's tiles */
    size_t P, vplane, mplane, yplane;
} sband;

/* d[i] of inner index q, or NULL for a zero row */
static const float *in_row(const sband *c, int q, int i) {
    int ci = q, r = i - 1;
    if (!c->tr) {
        ci = q % c->g->cin;
        r = c->S * i + q / c->g->cin - c->g->ph;
    }
    return (r >= 0 && r < c->H) ? c->x + ((size_t)ci * c->H + r) * c->W : NULL;
}

/* output row i of product row r, or NULL for a row cropped away */
static float *out_row(const sband *c, int r, int i) {
    if (!c->tr) return c->y + (size_t)r * c->yplane + (size_t)i * c->W;
    int co = r % c->g->cout, p = r / c->g->cout, row = c->S * i + p - c->crop;
    if (row < 0 || row >= c->rows) return NULL;
    return c->y + (size_t)co * c->yplane + (size_t)row * c->W;
}

/* V's four rows of one tile, each in one pass (BT's rows by hand): d0 - d2,
 * d1 + d2, d2 - d1, d3 - d1 */
static void part_in(void *ctx, int part) {
    const sband *c = ctx;
    const int W = c->W;
    int lo, hi;
    dmx__team_share(c->Q, PARTS, part, &lo, &hi);
    for (int q = lo; q < hi; q++)
        for (int tl = 0; tl < c->nt; tl++) {
            const float *d[NP];
            for (int a = 0; a < NP; a++) {
                d[a] = in_row(c, q, TM * (c->t0 + tl) + a);
                if (!d[a]) d[a] = c->zero;
            }
            float *v = c->V + (size_t)q * c->P + (size_t)tl * W;
            float *v0 = v, *v1 = v + c->vplane, *v2 = v + 2 * c->vplane, *v3 = v + 3 * c->vplane;
            const float *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3];
            for (int i = 0; i < W; i++) {
                v0[i] = d0[i] - d2[i];
                v1[i] = d1[i] + d2[i];
                v2[i] = d2[i] - d1[i];
                v3[i] = d3[i] - d1[i];
            }
        }
}

static void part_product(void *ctx, int k) {
    const sband *c = ctx;
    dmx__sgemm(0, 0, c->R, (int)c->P, c->Q, 1.0f, c->U + (size_t)k * c->R * c->Q, c->Q,
               c->V + k * c->vplane, (int)c->P, 0.0f, c->M + k * c->mplane, (int)c->P);
}

/* A tile's three output rows in one pass each (AT's rows by hand): m0 +
 * m1 + m2, m1 - m2, m1 + m2 + m3, plus the bias; act over each row while
 * it is in L1 */
static void part_out(void *ctx, int part) {
    const sband *c = ctx;
    const int W = c->W, cout = c->g->cout;
    int lo, hi;
    dmx__team_share(c->R, PARTS, part, &lo, &hi);
    for (int r = lo; r < hi; r++) {
        const float bias = c->b ? c->b[r % cout] : 0.0f;
        for (int tl = 0; tl < c->nt; tl++) {
            const float *m0 = c->M + (size_t)r * c->P + (size_t)tl * W, *m1 = m0 + c->mplane,
                        *m2 = m1 + c->mplane, *m3 = m2 + c->mplane;
            const int i0 = TM * (c->t0 + tl);
            float *y0 = out_row(c, r, i0);
            if (y0) {
                for (int e = 0; e < W; e++) y0[e] = bias + ((m0[e] + m1[e]) + m2[e]);
                dmx__act_apply(y0, (size_t)W, c->act);
            }
            if (i0 + 1 >= c->n_out) continue;
            float *y1 = out_row(c, r, i0 + 1);
            if (y1) {
                for (int e = 0; e < W; e++) y1[e] = bias + (m1[e] - m2[e]);
                dmx__act_apply(y1, (size_t)W, c->act);
            }
            if (i0 + 2 >= c->n_out) continue;
            float *y2 = out_row(c, r, i0 + 2);
            if (y2) {
                for (int e = 0; e < W; e++) y2[e] = bias + ((m1[e] + m2[e]) + m3[e]);
                dmx__act_apply(y2, (size_t)W, c->act);
            }
        }
    }
}

/* The bands over c's tiles; U is set. */
static int run(dmx__arena *ar, sband *c) {
    const int tiles = (c->n_out + TM - 1) / TM;
    const size_t per_tile = (size_t)NP * (size_t)(c->Q + c->R) * c->W;
    int nt = (int)(BAND_BUDGET / per_tile);
    if (nt < 1) nt = 1;
    if (nt > tiles) nt = tiles;
    const int bands = (tiles + nt - 1) / nt;
    nt = (tiles + bands - 1) / bands; /* equal bands */
    dmx__arena_mark mk = dmx__arena_save(ar);
    c->V = dmx__arena_floats(ar, (size_t)NP * c->Q * nt * c->W);
    c->M = dmx__arena_floats(ar, (size_t)NP * c->R * nt * c->W);
    c->zero = dmx__arena_zeros(ar, (size_t)c->W);
    if (!c->V || !c->M || !c->zero) return dmx__arena_restore(ar, mk), -1;
    for (int t0 = 0; t0 < tiles; t0 += nt) {
        c->t0 = t0;
        c->nt = tiles - t0 < nt ? tiles - t0 : nt;
        c->P = (size_t)c->nt * c->W;
        c->vplane = (size_t)c->Q * c->P, c->mplane = (size_t)c->R * c->P;
        dmx__team_for(PARTS, part_in, c);
        dmx__team_for(NP, part_product, c);
        dmx__team_for(PARTS, part_out, c);
    }
    dmx__arena_restore(ar, mk);
    return 0;
}

int dmx__wino_conv_s(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                     const float *w, const float *b, dmx__act act, float *y) {
    const int S = g->sh, cin = g->cin, cout = g->cout, Q = S * cin;
    const int Ho = dmx__conv_out(H, g->kh, g->sh, g->ph, 1);
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *U = dmx__arena_floats(ar, (size_t)NP * cout * Q);
    if (!U) return dmx__arena_restore(ar, mk), -1;
    /* U[k][co][p cin + ci] from the taps w[co][ci][p] (d[i]), w[co][ci][p + S] (d[i + 1]) */
    const size_t uplane = (size_t)cout * Q;
    for (int co = 0; co < cout; co++)
        for (int p = 0; p < S; p++)
            for (int ci = 0; ci < cin; ci++) {
                const float *k = w + ((size_t)co * cin + ci) * g->kh;
                const float g0 = k[p], g1 = k[p + S];
                for (int t = 0; t < NP; t++)
                    U[t * uplane + (size_t)co * Q + (size_t)p * cin + ci] = GM[t][0] * g0 + GM[t][1] * g1;
            }
    sband c = {.g = g, .tr = 0, .x = x, .b = b, .U = U, .y = y, .H = H, .W = W, .S = S,
               .Q = Q, .R = cout, .n_out = Ho, .act = act, .yplane = (size_t)Ho * W};
    int rc = run(ar, &c);
    dmx__arena_restore(ar, mk);
    return rc;
}

int dmx__wino_tr(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                 const float *w, int ldw, const float *b, int crop, dmx__act act, float *y) {
    const int S = g->sh, cin = g->cin, cout = g->cout, R = S * cout;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *U = dmx__arena_floats(ar, (size_t)NP * R * cin);
    if (!U) return dmx__arena_restore(ar, mk), -1;
    /* U[k][p cout + co][ci] from the taps w[ci][co][p + S] (d[m] = x[m - 1]),
     * w[ci][co][p] (d[m + 1] = x[m]) */
    const size_t uplane = (size_t)R * cin;
    for (int p = 0; p < S; p++)
        for (int co = 0; co < cout; co++) {
            const size_t r = (size_t)p * cout + co;
            for (int ci = 0; ci < cin; ci++) {
                const float *k = w + (size_t)ci * ldw + (size_t)co * g->kh;
                const float g0 = k[p + S], g1 = k[p];
                for (int t = 0; t < NP; t++) U[t * uplane + r * cin + ci] = GM[t][0] * g0 + GM[t][1] * g1;
            }
        }
    /* outputs m = 0 .. H of every phase: rows S m + p fill all (H + 1) S,
     * of which the planes keep [crop, (H + 1) S - crop) */
    const int rows = S * (H + 1) - 2 * crop;
    sband c = {.g = g, .tr = 1, .x = x, .b = b, .U = U, .y = y, .H = H, .W = W, .S = S,
               .Q = cin, .R = R, .n_out = H + 1, .act = act, .crop = crop, .rows = rows,
               .yplane = (size_t)rows * W};
    int rc = run(ar, &c);
    dmx__arena_restore(ar, mk);
    return rc;
}
