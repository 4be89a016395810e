/*
 * dirconv.c - direct short 1-D convolutions (see dirconv.h).
 *
 * Work is cut into units (one image row, one chunk of output columns) and
 * the units into at most PARTS parts of consecutive units, each with its
 * own scratch: the chunk's input columns for every input channel, zero
 * where they fall outside the row, so the tiles below read whole vectors
 * anywhere. Weights are transposed once per call to (cin, kw, cout) with
 * cout rounded up to the tile's MR rows (zeros), so the MR weights of one
 * (channel, tap) are consecutive broadcasts.
 *
 * Tile: MR output channels x NV vectors of output columns in registers
 * (AVX2: 6 x 2 of its 16 registers' 12; AVX-512: 6 x 4 of 32's 24); per
 * (channel, tap) NV vector loads and MR broadcasts feed MR * NV fused
 * multiply-adds.
 */
#include "dirconv.h"

#include "simd.h"
#include "team.h"

#include <string.h>

#if defined(VW) && defined(V_FMA)
#define DIRECT 1
#define MR     6
#if VW == 16
#define NV 4
#else
#define NV 2
#endif
#define TW (NV * VW) /* output columns per tile */
#endif

#define PARTS       8
#define MAX_COUT    48
#define MAX_KW      16
#define CHUNK_BYTES (128 << 10) /* one part's input scratch (more where
                                  * one tile's columns need more) */

#ifdef DIRECT
static int round_up(int n, int m) { return (n + m - 1) / m * m; }
#endif

int dmx__dirconv_use(const dmx__conv_geom *g, int H, int W) {
#ifdef DIRECT
    (void)H;
    return g->kh == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->kw >= 2 &&
           g->kw <= MAX_KW && g->cout >= 1 && g->cout <= MAX_COUT && g->cin >= 1 && g->dw >= 1 &&
           dmx__conv_out(W, g->kw, 1, g->pw, g->dw) >= 1;
#else
    (void)g, (void)H, (void)W;
    return 0;
#endif
}

#ifdef DIRECT
typedef struct {
    const dmx__conv_geom *g;
    const float *x, *wt, *b;
    float *y, *scratch;
    int H, W, Wo, coutp;
    int chunk, nchunks; /* output columns per unit (a multiple of TW), units per row */
    int len;            /* scratch floats per input channel: chunk + (kw - 1) dw */
    int units, per;     /* units in all, units per part */
} job;

/* One MR x TW tile: rows o0.. of the output, columns [0, TW) of the chunk
 * starting at xs (column 0's first tap); nr rows and nc columns stored. */
static inline __attribute__((always_inline)) void tile(const job *j, const float *xs, int o0,
                                                       float *yo, size_t ldy, int nr, int nc) {
    const int cin = j->g->cin, kw = j->g->kw, dw = j->g->dw, coutp = j->coutp;
    vf acc[MR][NV];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        vf bi = V_SET1(j->b && o0 + i < j->g->cout ? j->b[o0 + i] : 0.0f);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = bi;
    }
    const float *wp = j->wt + o0;
    for (int c = 0; c < cin; c++) {
        const float *xc = xs + (size_t)c * j->len;
        for (int k = 0; k < kw; k++, wp += coutp) {
            const float *xk = xc + k * dw;
            vf xv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) xv[v] = V_LOAD(xk + v * VW);
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++) {
                vf wi = V_SET1(wp[i]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[i][v] = V_FMA(wi, xv[v], acc[i][v]);
            }
        }
    }
    if (nr == MR && nc == TW) {
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) V_STORE(yo + (size_t)i * ldy + v * VW, acc[i][v]);
        return;
    }
    float t[TW];
    for (int i = 0; i < nr; i++) {
        for (int v = 0; v < NV; v++) V_STORE(t + v * VW, acc[i][v]);
        memcpy(yo + (size_t)i * ldy, t, sizeof(float) * nc);
    }
}

/* Unit u: row u / nchunks, output columns [c0, c0 + chunk). */
static void unit(const job *j, int u, float *xs) {
    const dmx__conv_geom *g = j->g;
    const int h = u / j->nchunks, c0 = u % j->nchunks * j->chunk;
    const int nc = j->Wo - c0 < j->chunk ? j->Wo - c0 : j->chunk;
    /* input columns c0 - pw .. c0 - pw + len - 1, zero outside [0, W) */
    const long first = (long)c0 - g->pw;
    long lo = first < 0 ? -first : 0, hi = (long)j->W - first;
    if (lo > j->len) lo = j->len; /* padding wider than the chunk's input */
    if (hi > j->len) hi = j->len;
    if (hi < lo) hi = lo;
    for (int c = 0; c < g->cin; c++) {
        float *d = xs + (size_t)c * j->len;
        const float *row = j->x + ((size_t)c * j->H + h) * j->W; /* column first + i at i */
        if (lo) memset(d, 0, sizeof(float) * (size_t)lo);
        if (hi > lo) memcpy(d + lo, row + (first + lo), sizeof(float) * (size_t)(hi - lo));
        if (hi < j->len) memset(d + hi, 0, sizeof(float) * (size_t)(j->len - hi));
    }
    const size_t ldy = (size_t)j->H * j->Wo;
    float *yr = j->y + (size_t)h * j->Wo + c0;
    for (int o0 = 0; o0 < g->cout; o0 += MR) {
        const int nr = g->cout - o0 < MR ? g->cout - o0 : MR;
        float *yo = yr + (size_t)o0 * ldy;
        int t = 0;
        if (nr == MR)
            for (; t + TW <= nc; t += TW) tile(j, xs + t, o0, yo + t, ldy, MR, TW);
        for (; t < nc; t += TW) tile(j, xs + t, o0, yo + t, ldy, nr, nc - t < TW ? nc - t : TW);
    }
}

static void part(void *ctx, int p) {
    const job *j = ctx;
    float *xs = j->scratch + (size_t)p * j->g->cin * j->len;
    const int u1 = (p + 1) * j->per < j->units ? (p + 1) * j->per : j->units;
    for (int u = p * j->per; u < u1; u++) unit(j, u, xs);
}
#endif

int dmx__dirconv(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                 const float *w, const float *b, float *y) {
#ifdef DIRECT
    const int Wo = dmx__conv_out(W, g->kw, 1, g->pw, g->dw);
    const int halo = (g->kw - 1) * g->dw;
    job j = {g, x, NULL, b, y, NULL, H, W, Wo, round_up(g->cout, MR), 0, 0, 0, 0, 0};
    /* chunks of whole tiles whose input fits the scratch budget */
    int chunk = (int)(CHUNK_BYTES / sizeof(float) / (size_t)g->cin) - halo;
    chunk = chunk < TW ? TW : chunk / TW * TW;
    if (chunk > round_up(Wo, TW)) chunk = round_up(Wo, TW);
    j.chunk = chunk;
    j.nchunks = (Wo + chunk - 1) / chunk;
    j.len = round_up(chunk + halo, VW);
    j.units = H * j.nchunks;
    const int parts = j.units < PARTS ? j.units : PARTS;
    j.per = (j.units + parts - 1) / parts;
    const int used = (j.units + j.per - 1) / j.per;
    dmx__arena_mark m = dmx__arena_save(ar);
    const size_t nw = (size_t)g->cin * g->kw * j.coutp;
    float *wt = dmx__arena_floats(ar, nw);
    float *xs = dmx__arena_floats(ar, (size_t)used * g->cin * j.len);
    if (!wt || !xs) return dmx__arena_restore(ar, m), -1;
    memset(wt, 0, sizeof(float) * nw);
    for (int o = 0; o < g->cout; o++)
        for (int c = 0; c < g->cin; c++)
            for (int k = 0; k < g->kw; k++)
                wt[((size_t)c * g->kw + k) * j.coutp + o] = w[((size_t)o * g->cin + c) * g->kw + k];
    j.wt = wt;
    j.scratch = xs;
    const int prof = dmx__gemm_profiling();
    const double t0 = prof ? dmx__seconds_now() : 0;
    dmx__team_for(used, part, &j);
    const long K = (long)g->cin * g->kw, N = (long)H * Wo;
    dmx__flops_add(2ull * (uint64_t)g->cout * (uint64_t)N * (uint64_t)K);
    if (prof)
        dmx__gemm_profile_add(DMX__DIRCONV_SHAPE, DMX__DIRCONV_SHAPE, g->cout, (int)N, (int)K, 1,
                              dmx__seconds_now() - t0);
    dmx__arena_restore(ar, m);
    return 0;
#else
    (void)ar, (void)g, (void)x, (void)H, (void)W, (void)w, (void)b, (void)y;
    return -1;
#endif
}
