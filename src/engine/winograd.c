/*
 * winograd.c - F(m x m, 3x3) and F(m, 3) convolutions; see winograd.h.
 *
 * Transforms (Lavin & Gray, "Fast Algorithms for Convolutional Neural
 * Networks"), for tiles of m x m outputs from (m+2) x (m+2) input patches:
 *   V = B^T d B (input), U = G g G^T (kernel), Y = A^T (U .* V) A (output).
 * A 1 x 3 kernel (a convolution along W only) takes the same transforms
 * along W alone: tiles of 1 x m outputs from 1 x (m+2) patches (the loops
 * skip the vertical transforms: patch and tile height 1, the kernel's
 * taps used as they are).
 * A band (output rows, and for long 1D rows a range of columns) is cut
 * into tiles, P of them; the transformed input V is (positions, cin, P)
 * with (m+2)^2 or m+2 positions, the products M = U V (positions, cout,
 * P), one matrix product per transformed position.
 *
 * The transforms run a tile row at a time with the tiles as the vector
 * dimension: the input's rows are transformed vertically as whole rows,
 * then split by column phase (column m*t + q in phase q) so each
 * horizontal term is a contiguous run over the tiles.
 */
#include "winograd.h"

#include "simd.h"
#include "team.h"

#include <string.h>

/* Scratch budget of one band (V and M), in floats (8 MiB). */
#define BAND_BUDGET ((size_t)2 << 20)

#define WM 4         /* outputs per tile side */
#define WA (WM + 2)  /* input patch side */

#if WM == 2
static const float BT[WA][WA] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
static const float GM[WA][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
static const float AT[WM][WA] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
#else
/* interpolation points 0, 1, -1, 1/2, -2 and infinity: a third of the
 * rounding error of the usual 0, +-1, +-2 on 3x3 layers of a few hundred
 * channels (max error 4e-6 of the output's peak against 1.3e-5 in a float32
 * simulation; F(2x2): 6e-7) */
static const float BT[WA][WA] = {{1, -1.5f, -2, 1.5f, 1, 0},  {0, -1, 0.5f, 2.5f, 1, 0},
                                 {0, 1, -2.5f, 0.5f, 1, 0},   {0, -2, -1, 2, 1, 0},
                                 {0, 0.5f, -1, -0.5f, 1, 0},  {0, 1, -1.5f, -2, 1.5f, 1}};
static const float GM[WA][3] = {{1, 0, 0},
                                {1.0f / 3, 1.0f / 3, 1.0f / 3},
                                {-1.0f / 3, 1.0f / 3, -1.0f / 3},
                                {-16.0f / 15, -8.0f / 15, -4.0f / 15},
                                {1.0f / 15, -2.0f / 15, 4.0f / 15},
                                {0, 0, 1}};
static const float AT[WM][WA] = {{1, 1, 1, 1, 1, 0},
                                 {0, 1, -1, 0.5f, -2, 0},
                                 {0, 1, 1, 0.25f, 4, 0},
                                 {0, 1, -1, 0.125f, -8, 1}};
#endif

/* An input row (W floats) split by column phase: entry t of phase q
 * (dst[q * tpp + t], t < tpp) is column c0 + WM * t + q - 1, zero outside
 * the row. */
static void split_phases(const float *row, int W, int c0, int tpp, float *dst) {
    int t0 = 0; /* entries below t0 done by the vector loop (WM 4, AVX2) */
#if WM == 4 && defined(__AVX2__)
    /* entry t of the four phases is the group of columns c0 + 4t - 1 ..
     * c0 + 4t + 2: eight groups, t .. t + 3 in the low lanes and t + 4 ..
     * t + 7 in the high ones, transposed 4 x 4 within each lane */
    int t = 1;
    for (; t + 8 <= tpp && c0 + 4 * t + 31 <= W; t += 8) {
        const float *s0 = row + c0 + 4 * t - 1;
        __m256 a = _mm256_loadu2_m128(s0 + 16, s0), b = _mm256_loadu2_m128(s0 + 20, s0 + 4);
        __m256 c = _mm256_loadu2_m128(s0 + 24, s0 + 8), d = _mm256_loadu2_m128(s0 + 28, s0 + 12);
        __m256 t0v = _mm256_unpacklo_ps(a, b), t1v = _mm256_unpackhi_ps(a, b);
        __m256 t2v = _mm256_unpacklo_ps(c, d), t3v = _mm256_unpackhi_ps(c, d);
        _mm256_storeu_ps(dst + t, _mm256_shuffle_ps(t0v, t2v, _MM_SHUFFLE(1, 0, 1, 0)));
        _mm256_storeu_ps(dst + tpp + t, _mm256_shuffle_ps(t0v, t2v, _MM_SHUFFLE(3, 2, 3, 2)));
        _mm256_storeu_ps(dst + 2 * tpp + t, _mm256_shuffle_ps(t1v, t3v, _MM_SHUFFLE(1, 0, 1, 0)));
        _mm256_storeu_ps(dst + 3 * tpp + t, _mm256_shuffle_ps(t1v, t3v, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    if (t > 1) {
        for (int q = 0; q < WM; q++) {
            int c = c0 + q - 1;
            dst[(size_t)q * tpp] = (c >= 0 && c < W) ? row[c] : 0.0f;
        }
        t0 = t;
    }
#endif
    for (int q = 0; q < WM; q++) {
        float *dq = dst + (size_t)q * tpp;
        for (int t = t0; t < tpp; t++) {
            int c = c0 + WM * t + q - 1;
            dq[t] = (c >= 0 && c < W) ? row[c] : 0.0f;
        }
    }
}

/* The inverse of split_phases for an output row: phase q's entry t (ph +
 * q * tw) is column WM * t + q of yr, W columns. */
static void merge_phases(const float *ph, int tw, int W, float *yr) {
    int t0 = 0; /* tiles below t0 done by the vector loop (WM 4, AVX2) */
#if WM == 4 && defined(__AVX2__)
    for (; t0 + 8 <= tw && 4 * t0 + 32 <= W; t0 += 8) {
        __m256 a = _mm256_loadu_ps(ph + t0), b = _mm256_loadu_ps(ph + tw + t0);
        __m256 c = _mm256_loadu_ps(ph + 2 * (size_t)tw + t0), d = _mm256_loadu_ps(ph + 3 * (size_t)tw + t0);
        __m256 t0v = _mm256_unpacklo_ps(a, b), t1v = _mm256_unpackhi_ps(a, b);
        __m256 t2v = _mm256_unpacklo_ps(c, d), t3v = _mm256_unpackhi_ps(c, d);
        float *y = yr + 4 * t0; /* row k of the transpose: tile t0 + k (low), t0 + 4 + k (high) */
        _mm256_storeu2_m128(y + 16, y, _mm256_shuffle_ps(t0v, t2v, _MM_SHUFFLE(1, 0, 1, 0)));
        _mm256_storeu2_m128(y + 20, y + 4, _mm256_shuffle_ps(t0v, t2v, _MM_SHUFFLE(3, 2, 3, 2)));
        _mm256_storeu2_m128(y + 24, y + 8, _mm256_shuffle_ps(t1v, t3v, _MM_SHUFFLE(1, 0, 1, 0)));
        _mm256_storeu2_m128(y + 28, y + 12, _mm256_shuffle_ps(t1v, t3v, _MM_SHUFFLE(3, 2, 3, 2)));
    }
#endif
    for (int q = 0; q < WM; q++) {
        const float *yq = ph + (size_t)q * tw;
        int full = (W - q + WM - 1) / WM; /* tiles whose column q is inside */
        for (int t = t0; t < full; t++) yr[WM * t + q] = yq[t];
    }
}

/* The geometry's tile: 3 x 3 kernels take m x m tiles, 1 x 3 ones 1 x m. */
static int is_1d(const dmx__conv_geom *g) { return g->kh == 1; }
static int tile_h(const dmx__conv_geom *g) { return is_1d(g) ? 1 : WM; }  /* output rows */
static int patch_h(const dmx__conv_geom *g) { return is_1d(g) ? 1 : WA; } /* input rows */
static int positions(const dmx__conv_geom *g) { return patch_h(g) * WA; }

int dmx__wino_use(const dmx__conv_geom *g, int H, int W) {
    int shape2d = g->kh == 3 && g->ph == 1, shape1d = g->kh == 1 && g->ph == 0;
    if (!(shape2d || shape1d) || g->kw != 3 || g->sh != 1 || g->sw != 1 || g->pw != 1 ||
        g->dh != 1 || g->dw != 1)
        return 0;
    /* the transforms cost a few dozen operations per tile and channel
     * against 2 * cin * cout per position for the products: worth it with
     * a few dozen channels, and tiles enough to fill the products */
    /* (a 1D tile saves half the products against three quarters for a 2D
     * one, for the same transform work per output: measured on the time
     * decoders, 48 input channels lost and 96 gained) */
    const int min_cin = is_1d(g) ? 64 : 32;
    return g->cin >= min_cin && g->cout >= 32 && H >= tile_h(g) && W >= 4 * WM;
}

float *dmx__wino_weights(dmx__arena *ar, const dmx__conv_geom *g, const float *w) {
    enum { CB = 16 }; /* input channels per block: the vector dimension */
    const int co_n = g->cout, ci_n = g->cin, ah = patch_h(g), taps = g->kh * 3;
    float *U = dmx__arena_floats(ar, (size_t)positions(g) * co_n * ci_n);
    if (!U) return NULL;
    const size_t plane = (size_t)co_n * ci_n;
    for (int co = 0; co < co_n; co++) {
        for (int c0 = 0; c0 < ci_n; c0 += CB) {
            const int n = ci_n - c0 < CB ? ci_n - c0 : CB;
            float k[9][CB], t[WA][3][CB]; /* the block's kernels by tap; G k (1D: k) */
            for (int c = 0; c < n; c++)
                for (int e = 0; e < taps; e++) k[e][c] = w[((size_t)co * ci_n + c0 + c) * taps + e];
            for (int i = 0; i < ah; i++)
                for (int j = 0; j < 3; j++)
                    for (int c = 0; c < n; c++)
                        t[i][j][c] = ah == 1 ? k[j][c]
                                             : GM[i][0] * k[j][c] + GM[i][1] * k[3 + j][c] +
                                                   GM[i][2] * k[6 + j][c];
            float *u = U + (size_t)co * ci_n + c0;
            for (int i = 0; i < ah; i++) /* (G k) G^T, each position's plane contiguous */
                for (int j = 0; j < WA; j++) {
                    float *d = u + (size_t)(i * WA + j) * plane;
                    for (int c = 0; c < n; c++)
                        d[c] = t[i][0][c] * GM[j][0] + t[i][1][c] * GM[j][1] + t[i][2][c] * GM[j][2];
                }
        }
    }
    return U;
}

/* Scratch floats of one tile's transformed input and products. */
static size_t per_tile(const dmx__conv_geom *g) {
    return (size_t)positions(g) * (size_t)(g->cin + g->cout);
}

void dmx__wino_bands(const dmx__conv_geom *g, int H, int W, int *rows, int *cols) {
    const size_t tiles_w = (size_t)(W + WM - 1) / WM, mh = (size_t)tile_h(g);
    const size_t per_tile_row = per_tile(g) * tiles_w;
    size_t tr = BAND_BUDGET / (per_tile_row ? per_tile_row : 1);
    *cols = (int)(tiles_w * WM);
    if (tr < 1 && is_1d(g)) {
        /* a long 1D row: cut along W into equal bands within the budget (a
         * 2D band keeps whole tile rows: narrower ones starve the products) */
        size_t fit = BAND_BUDGET / per_tile(g), nb = (tiles_w + (fit ? fit : 1) - 1) / (fit ? fit : 1);
        *cols = (int)((tiles_w + nb - 1) / nb * WM);
    }
    if (tr < 1) tr = 1;
    size_t r = mh * tr, whole = ((size_t)H + mh - 1) / mh * mh;
    *rows = (int)(r < whole ? r : whole);
}

/* One band's work, shared by its parts: the input transform by input
 * channels, the products (one per position), the output transform by
 * output channels (with glu, by pairs of a value channel and its gate) —
 * each a dmx__team_for over parts that write disjoint
 * rows, so helpers (a lone evaluation on several threads) share the band,
 * and every value is computed by the same arithmetic whoever runs it. */
#define PARTS 8
typedef struct band {
    const dmx__conv_geom *g;
    const float *U, *x, *b;
    int H, W, oh0, oh1, ow0, ow1; /* the band: output rows and columns */
    int mh, ah, nk;               /* tile rows, patch rows, positions */
    int tx0, tw, ty0, ty1, P, PW, tpp;
    int glu;                      /* dst gets GLU(channels co, co + cout / 2) */
    float *V, *M, *dst, *scratch; /* scratch: `per` floats for each part */
    size_t ld, ldr, vplane, mplane, per;
} band;

/* Several rows of a transform in one pass: out[j][t] = init + sum over a
 * of T[j][a] in[a][t] (t < n, j < nj, a < na), each input row read once
 * and each output row written once. The sum runs over a in order from
 * init, zero coefficients skipped: the rounding of adding the rows one at
 * a time as `v += c * x` did (fused where the target has FMA, as the
 * compiler contracts it: fma(c, x, 0) is c x rounded, fma(+-1, x, s) is s
 * +- x; a product then a sum elsewhere). Inlined with a constant table,
 * the loops over j and a unroll and the coefficients fold into the code.
 * Without FMA vectors, 4-float vectors of GCC's (SSE2, NEON). */
static inline __attribute__((always_inline)) void rows_tr(const float (*T)[WA], int nj, int na,
                                                          const float *const *in, float *const *out,
                                                          int n, float init) {
    int t = 0;
#if defined(VW) && defined(V_FMA)
    for (; t + VW <= n; t += VW) {
        vf x[WA];
#pragma GCC unroll 8
        for (int a = 0; a < na; a++) x[a] = V_LOAD(in[a] + t);
#pragma GCC unroll 8
        for (int j = 0; j < nj; j++) {
            vf acc = V_SET1(init);
#pragma GCC unroll 8
            for (int a = 0; a < na; a++)
                if (T[j][a] != 0) acc = V_FMA(V_SET1(T[j][a]), x[a], acc);
            V_STORE(out[j] + t, acc);
        }
    }
#else
    typedef float v4f __attribute__((vector_size(16)));
    for (; t + 4 <= n; t += 4) {
        v4f x[WA];
#pragma GCC unroll 8
        for (int a = 0; a < na; a++) memcpy(&x[a], in[a] + t, sizeof x[a]);
#pragma GCC unroll 8
        for (int j = 0; j < nj; j++) {
            v4f acc = {init, init, init, init};
#pragma GCC unroll 8
            for (int a = 0; a < na; a++)
                if (T[j][a] != 0) acc += T[j][a] * x[a];
            memcpy(out[j] + t, &acc, sizeof acc);
        }
    }
#endif
    for (; t < n; t++) {
        float x[WA];
        for (int a = 0; a < na; a++) x[a] = in[a][t];
        for (int j = 0; j < nj; j++) {
            float acc = init;
            for (int a = 0; a < na; a++)
                if (T[j][a] != 0) acc += T[j][a] * x[a];
            out[j][t] = acc;
        }
    }
}

/* input channel ci into V: rows (ah x PW) and ph (ah x PW) are scratch */
static void in_channel(const band *c, int ci, float *rows, float *ph) {
    const int H = c->H, W = c->W, tw = c->tw, PW = c->PW, tpp = c->tpp, ah = c->ah;
    const float *xc = c->x + (size_t)ci * H * W;
    for (int ty = c->ty0; ty < c->ty1; ty++) {
        int r0 = c->mh * ty - c->g->ph;
        /* the patch rows split by column phase (column tx0 * WM + WM * t +
         * q - 1 in phase q at t), zeros outside; then the vertical
         * transform on the phase arrays (a permutation commutes with it;
         * none for a 1D band) */
        for (int a = 0; a < ah; a++) {
            float *rw = rows + (size_t)a * PW;
            int hi = r0 + a;
            if (hi < 0 || hi >= H) {
                memset(rw, 0, sizeof(float) * PW);
                continue;
            }
            split_phases(xc + (size_t)hi * W, W, c->tx0 * WM, tpp, rw);
        }
        const float *vt = rows; /* the vertically transformed rows */
        if (ah > 1) {
            const float *in[WA];
            float *out[WA];
            for (int a = 0; a < WA; a++) in[a] = rows + (size_t)a * PW, out[a] = ph + (size_t)a * PW;
            rows_tr(BT, WA, WA, in, out, PW, 0.0f);
            vt = ph;
        }
        size_t p0 = (size_t)(ty - c->ty0) * tw;
        for (int i = 0; i < ah; i++) {
            const float *pi = vt + (size_t)i * PW, *in[WA];
            float *out[WA];
            for (int j = 0; j < WA; j++) {
                in[j] = pi + (j % WM) * tpp + j / WM; /* column WM t + j - 1 of the patch row */
                out[j] = c->V + (size_t)(i * WA + j) * c->vplane + (size_t)ci * c->P + p0;
            }
            rows_tr(BT, WA, WA, in, out, tw, 0.0f);
        }
    }
}

/* Output channel co's tile row ty up to its column phases: tt (mh x WA x
 * tw) receives A^T m (the vertical half; a 1D band reads M's rows in its
 * place), then each output row a of the tile row is rows_tr'd into its WM
 * phases (WM x tw at ph + a * WM * tw), the bias included. */
static void out_phases(const band *c, int co, int ty, float *tt, float *ph) {
    const int tw = c->tw, mh = c->mh, ah = c->ah;
    const float bias = c->b ? c->b[co] : 0.0f;
    const float *m0 = c->M + (size_t)co * c->P + (size_t)(ty - c->ty0) * tw; /* position k: + k mplane */
    if (ah > 1) /* tt[a][j] = sum_i AT[a][i] m[i][j] */
        for (int j = 0; j < WA; j++) {
            const float *in[WA];
            float *o[WA];
            for (int i = 0; i < WA; i++) in[i] = m0 + (size_t)(i * WA + j) * c->mplane;
            for (int a = 0; a < WM; a++) o[a] = tt + ((size_t)a * WA + j) * tw;
            rows_tr(AT, WM, WA, in, o, tw, 0.0f);
        }
    for (int a = 0; a < mh; a++) {
        const float *in[WA]; /* the row's WA terms (1D: M's rows themselves) */
        float *out[WA];
        for (int j = 0; j < WA; j++)
            in[j] = ah > 1 ? tt + ((size_t)a * WA + j) * tw : m0 + (size_t)j * c->mplane;
        for (int q = 0; q < WM; q++) out[q] = ph + ((size_t)a * WM + q) * tw;
        rows_tr(AT, WM, WA, in, out, tw, bias);
    }
}

/* Output channel co of the band (with glu, channel co of GLU(channels co,
 * co + cout / 2)), cropped to the band, its rows merged from the phases:
 * tt and ph are out_phases' scratch, twice over with glu (the gate's after
 * the value's: ph's mh * WM * tw floats, then the gate's). */
static void out_channel(const band *c, int co, float *tt, float *ph) {
    const int tw = c->tw, mh = c->mh;
    const int wcols = (c->ow1 < c->W ? c->ow1 : c->W) - c->ow0; /* columns written */
    const size_t nph = (size_t)mh * WM * tw;
    float *yc = c->dst + (size_t)co * c->ld;
    for (int ty = c->ty0; ty < c->ty1; ty++) {
        out_phases(c, co, ty, tt, ph);
        if (c->glu) {
            out_phases(c, co + c->g->cout / 2, ty, tt, ph + nph);
            dmx__glu(ph, ph, 2, nph); /* value * sigmoid(gate), element by element */
        }
        for (int a = 0; a < mh; a++) {
            int oy = mh * ty + a;
            if (oy < c->oh0 || oy >= c->oh1 || oy >= c->H) continue;
            merge_phases(ph + (size_t)a * WM * tw, tw, wcols, yc + (size_t)(oy - c->oh0) * c->ldr);
        }
    }
}

static void part_in(void *ctx, int p) {
    const band *c = ctx;
    float *rows = c->scratch + (size_t)p * c->per, *ph = rows + (size_t)c->ah * c->PW;
    int lo, hi;
    dmx__team_share(c->g->cin, PARTS, p, &lo, &hi);
    for (int ci = lo; ci < hi; ci++) in_channel(c, ci, rows, ph);
}

static void part_product(void *ctx, int k) {
    const band *c = ctx;
    const int co_n = c->g->cout, ci_n = c->g->cin;
    dmx__sgemm(0, 0, co_n, c->P, ci_n, 1.0f, c->U + (size_t)k * co_n * ci_n, ci_n,
               c->V + k * c->vplane, c->P, 0.0f, c->M + k * c->mplane, c->P);
}

static void part_out(void *ctx, int p) {
    const band *c = ctx;
    float *tt = c->scratch + (size_t)p * c->per, *ph = tt + (size_t)c->mh * WA * c->tw;
    int lo, hi; /* (ph: the value's phases, then with glu the gate's) */
    dmx__team_share(c->glu ? c->g->cout / 2 : c->g->cout, PARTS, p, &lo, &hi);
    for (int co = lo; co < hi; co++) out_channel(c, co, tt, ph);
}

int dmx__wino_band(dmx__arena *ar, const dmx__conv_geom *g, const float *U, const float *x, int H,
                   int W, const float *b, int oh0, int oh1, int ow0, int ow1, int glu, float *dst,
                   size_t ld, size_t ldr) {
    band c = {.g = g, .U = U, .x = x, .b = b, .H = H, .W = W, .oh0 = oh0, .oh1 = oh1,
              .ow0 = ow0, .ow1 = ow1, .glu = glu};
    c.mh = tile_h(g), c.ah = patch_h(g), c.nk = positions(g);
    c.tx0 = ow0 / WM, c.tw = (ow1 - ow0 + WM - 1) / WM;
    c.ty0 = oh0 / c.mh, c.ty1 = (oh1 + c.mh - 1) / c.mh;
    c.P = (c.ty1 - c.ty0) * c.tw;
    /* a tile row reads input columns ow0 - 1 .. ow0 + tw*WM; phase arrays
     * one tile longer than the band for the last patch */
    c.PW = (c.tw + 1) * WM, c.tpp = c.tw + 1;
    c.dst = dst, c.ld = ld, c.ldr = ldr;
    c.vplane = (size_t)g->cin * c.P, c.mplane = (size_t)g->cout * c.P;
    /* a part's scratch: input rows and their vertical transform (2 ah x PW),
     * or the output's A^T m (mh x WA x tw) and its rows' phases (mh x WM x
     * tw; with glu, the value's and the gate's) */
    size_t in_need = (size_t)2 * c.ah * c.PW,
           out_need = (size_t)c.mh * WA * c.tw + (size_t)(glu ? 2 : 1) * c.mh * WM * c.tw;
    c.per = ((in_need > out_need ? in_need : out_need) + 15) / 16 * 16;
    dmx__arena_mark mk = dmx__arena_save(ar);
    c.V = dmx__arena_floats(ar, (size_t)c.nk * c.vplane);
    c.M = dmx__arena_floats(ar, (size_t)c.nk * c.mplane);
    c.scratch = dmx__arena_floats(ar, PARTS * c.per);
    if (!c.V || !c.M || !c.scratch) {
        dmx__arena_restore(ar, mk);
        return -1;
    }
    dmx__team_for(PARTS, part_in, &c);
    dmx__team_for(c.nk, part_product, &c);
    dmx__team_for(PARTS, part_out, &c);
    dmx__arena_restore(ar, mk);
    return 0;
}
