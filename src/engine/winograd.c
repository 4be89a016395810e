/*
 * winograd.c - F(m x m, 3x3) convolutions; see winograd.h.
 *
 * Transforms (Lavin & Gray, "Fast Algorithms for Convolutional Neural
 * Networks"), for tiles of m x m outputs from (m+2) x (m+2) input patches:
 *   V = B^T d B (input), U = G g G^T (kernel), Y = A^T (U .* V) A (output).
 * A band of output rows is cut into tiles, P of them; the transformed input
 * V is (a*a, cin, P) with a = m + 2, the products M = U V (a*a, cout, P),
 * one matrix product per transformed position.
 *
 * The transforms run a tile row at a time with the tiles as the vector
 * dimension: the input's rows are transformed vertically as whole rows,
 * then split by column phase (column m*t + q in phase q) so each
 * horizontal term is a contiguous run over the tiles.
 */
#include "winograd.h"

#include "team.h"

#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

/* Scratch budget of one band (V and M), in floats (8 MiB). */
#define BAND_BUDGET ((size_t)2 << 20)

#define WM 2         /* outputs per tile side */
#define WA (WM + 2)  /* input patch side */
#define WK (WA * WA) /* transformed positions */

#if WM == 2
static const float BT[WA][WA] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
static const float GM[WA][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
static const float AT[WM][WA] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
#else
/* interpolation points 0, 1, -1, 2, -2 and infinity */
static const float BT[WA][WA] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                 {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
static const float GM[WA][3] = {{1.0f / 4, 0, 0},
                                {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                {0, 0, 1}};
static const float AT[WM][WA] = {
    {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
#endif

/* An input row (W floats) split by column phase, padded column c + 1 =
 * WM * t + q into dst[q * tpp + t] for t < tpp, zeros outside the row. */
static void split_phases(const float *src, int W, int tpp, float *dst) {
    int t0 = 0; /* entries below t0 done by the vector loop (WM 2, AVX2) */
#if WM == 2 && defined(__AVX2__)
    /* entry t of the two phases is the pair src[2t - 1], src[2t]: sixteen
     * columns from 2t - 1 give eight entries of each, de-interleaved */
    float *d0 = dst, *d1 = dst + tpp;
    int t = 1;
    for (; t + 8 <= tpp && 2 * t + 15 <= W; t += 8) {
        __m256 a = _mm256_loadu_ps(src + 2 * t - 1), b = _mm256_loadu_ps(src + 2 * t + 7);
        __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        _mm256_storeu_ps(d0 + t, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xd8)));
        _mm256_storeu_ps(d1 + t, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xd8)));
    }
    if (t > 1) {
        d0[0] = 0.0f; /* column -1 */
        d1[0] = W > 0 ? src[0] : 0.0f;
        t0 = t;
    }
#endif
    for (int q = 0; q < WM; q++) {
        float *dq = dst + (size_t)q * tpp;
        for (int t = t0; t < tpp; t++) {
            int c = WM * t + q - 1;
            dq[t] = (c >= 0 && c < W) ? src[c] : 0.0f;
        }
    }
}

int dmx__wino_use(const dmx__conv_geom *g, int H, int W) {
    if (g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 || g->ph != 1 || g->pw != 1 ||
        g->dh != 1 || g->dw != 1)
        return 0;
    /* the transforms cost a few dozen operations per tile and channel
     * against 2 * cin * cout per position for the products: worth it with
     * a few dozen channels, and tiles enough to fill the products */
    return g->cin >= 32 && g->cout >= 32 && H >= WM && W >= 4 * WM;
}

float *dmx__wino_weights(dmx__arena *ar, const dmx__conv_geom *g, const float *w) {
    int co_n = g->cout, ci_n = g->cin;
    float *U = dmx__arena_floats(ar, (size_t)WK * co_n * ci_n);
    if (!U) return NULL;
    size_t plane = (size_t)co_n * ci_n;
    for (int co = 0; co < co_n; co++) {
        for (int ci = 0; ci < ci_n; ci++) {
            const float *k = w + ((size_t)co * ci_n + ci) * 9;
            float t[WA][3]; /* G k */
            for (int i = 0; i < WA; i++)
                for (int j = 0; j < 3; j++)
                    t[i][j] = GM[i][0] * k[j] + GM[i][1] * k[3 + j] + GM[i][2] * k[6 + j];
            size_t at = (size_t)co * ci_n + ci;
            for (int i = 0; i < WA; i++) /* (G k) G^T */
                for (int j = 0; j < WA; j++)
                    U[(size_t)(i * WA + j) * plane + at] =
                        t[i][0] * GM[j][0] + t[i][1] * GM[j][1] + t[i][2] * GM[j][2];
        }
    }
    return U;
}

int dmx__wino_band_rows(const dmx__conv_geom *g, int H, int W) {
    size_t tiles_w = (size_t)(W + WM - 1) / WM;
    size_t per_tile_row = WK * (size_t)(g->cin + g->cout) * tiles_w;
    size_t tr = BAND_BUDGET / (per_tile_row ? per_tile_row : 1);
    if (tr < 1) tr = 1;
    size_t rows = WM * tr, whole = ((size_t)H + WM - 1) / WM * WM;
    return (int)(rows < whole ? rows : whole);
}

/* One band's work, shared by its parts: the input transform by input
 * channels, the 16 products, the output transform by output channels —
 * each a dmx__team_for over parts that write disjoint rows, so helpers
 * (a lone evaluation on several threads) share the band, and every value
 * is computed by the same arithmetic whoever runs it. */
#define PARTS 8
typedef struct band {
    const dmx__conv_geom *g;
    const float *U, *x, *b;
    int H, W, oh0, oh1, tw, ty0, ty1, P, PW, tpp;
    float *V, *M, *dst, *scratch; /* scratch: `per` floats for each part */
    size_t ld, vplane, mplane, per;
} band;

static void range(int n, int p, int *lo, int *hi) {
    *lo = (int)((long)n * p / PARTS);
    *hi = (int)((long)n * (p + 1) / PARTS);
}

/* input channel ci into V: rows (WA x PW) and ph (WA x PW) are scratch */
static void in_channel(const band *c, int ci, float *rows, float *ph) {
    const int H = c->H, W = c->W, tw = c->tw, PW = c->PW, tpp = c->tpp;
    const float *xc = c->x + (size_t)ci * H * W;
    for (int ty = c->ty0; ty < c->ty1; ty++) {
        int r0 = WM * ty - 1;
        /* the patch rows split by column phase (padded column c + 1 =
         * WM * t + q in phase q at t), zeros outside; then the vertical
         * transform on the phase arrays (a permutation commutes with it) */
        for (int a = 0; a < WA; a++) {
            float *rw = rows + (size_t)a * PW;
            int hi = r0 + a;
            if (hi < 0 || hi >= H) {
                memset(rw, 0, sizeof(float) * PW);
                continue;
            }
            split_phases(xc + (size_t)hi * W, W, tpp, rw);
        }
        for (int i = 0; i < WA; i++) {
            float *pi = ph + (size_t)i * PW;
            for (int q = 0; q < PW; q++) pi[q] = 0;
            for (int a = 0; a < WA; a++) {
                float coef = BT[i][a];
                if (coef == 0) continue;
                const float *ra = rows + (size_t)a * PW;
                for (int q = 0; q < PW; q++) pi[q] += coef * ra[q];
            }
        }
        size_t p0 = (size_t)(ty - c->ty0) * tw;
        for (int i = 0; i < WA; i++) {
            const float *pi = ph + (size_t)i * PW;
            for (int j = 0; j < WA; j++) {
                float *v = c->V + (size_t)(i * WA + j) * c->vplane + (size_t)ci * c->P + p0;
                for (int t = 0; t < tw; t++) v[t] = 0;
                for (int bb = 0; bb < WA; bb++) {
                    float coef = BT[j][bb];
                    if (coef == 0) continue;
                    const float *src = pi + (bb % WM) * tpp + bb / WM;
                    for (int t = 0; t < tw; t++) v[t] += coef * src[t];
                }
            }
        }
    }
}

/* output channel co from M, plus the bias, cropped to the band and the
 * width: tt (WM x WA x tw) and ph (WM x tw) are scratch */
static void out_channel(const band *c, int co, float *tt, float *ph) {
    const int W = c->W, tw = c->tw;
    const float bias = c->b ? c->b[co] : 0.0f;
    float *yc = c->dst + (size_t)co * c->ld;
    for (int ty = c->ty0; ty < c->ty1; ty++) {
        size_t p0 = (size_t)(ty - c->ty0) * tw;
        for (int a = 0; a < WM; a++) /* tt[a][j] = sum_i AT[a][i] m[i][j] */
            for (int j = 0; j < WA; j++) {
                float *d = tt + ((size_t)a * WA + j) * tw;
                for (int t = 0; t < tw; t++) d[t] = 0;
                for (int i = 0; i < WA; i++) {
                    float coef = AT[a][i];
                    if (coef == 0) continue;
                    const float *m = c->M + (size_t)(i * WA + j) * c->mplane + (size_t)co * c->P + p0;
                    for (int t = 0; t < tw; t++) d[t] += coef * m[t];
                }
            }
        for (int a = 0; a < WM; a++) {
            int oy = WM * ty + a;
            if (oy < c->oh0 || oy >= c->oh1) continue;
            float *yr = yc + (size_t)(oy - c->oh0) * W;
            for (int bb = 0; bb < WM; bb++) { /* column phase bb, then interleaved */
                float *yq = ph + (size_t)bb * tw;
                for (int t = 0; t < tw; t++) yq[t] = bias;
                for (int j = 0; j < WA; j++) {
                    float coef = AT[bb][j];
                    if (coef == 0) continue;
                    const float *src = tt + ((size_t)a * WA + j) * tw;
                    for (int t = 0; t < tw; t++) yq[t] += coef * src[t];
                }
            }
            for (int bb = 0; bb < WM; bb++) {
                const float *yq = ph + (size_t)bb * tw;
                int full = (W - bb + WM - 1) / WM; /* tiles whose column bb is inside */
                for (int t = 0; t < full; t++) yr[WM * t + bb] = yq[t];
            }
        }
    }
}

static void part_in(void *ctx, int p) {
    const band *c = ctx;
    float *rows = c->scratch + (size_t)p * c->per, *ph = rows + (size_t)WA * c->PW;
    int lo, hi;
    range(c->g->cin, p, &lo, &hi);
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
    float *tt = c->scratch + (size_t)p * c->per, *ph = tt + (size_t)WM * WA * c->tw;
    int lo, hi;
    range(c->g->cout, p, &lo, &hi);
    for (int co = lo; co < hi; co++) out_channel(c, co, tt, ph);
}

int dmx__wino_band(dmx__arena *ar, const dmx__conv_geom *g, const float *U, const float *x, int H,
                   int W, const float *b, int oh0, int oh1, float *dst, size_t ld) {
    band c = {.g = g, .U = U, .x = x, .b = b, .H = H, .W = W, .oh0 = oh0, .oh1 = oh1};
    c.tw = (W + WM - 1) / WM, c.ty0 = oh0 / WM, c.ty1 = (oh1 + WM - 1) / WM;
    c.P = (c.ty1 - c.ty0) * c.tw;
    /* a tile row reads input columns -1 .. tw*WM; padded index c + 1, and
     * phase arrays one tile longer than the row for the last patch */
    c.PW = (c.tw + 1) * WM, c.tpp = c.tw + 1;
    c.dst = dst, c.ld = ld;
    c.vplane = (size_t)g->cin * c.P, c.mplane = (size_t)g->cout * c.P;
    /* a part's scratch: input rows and their vertical transform (2 WA x PW),
     * or the output's A^T m (WM x WA x tw) and its phases (WM x tw) */
    size_t in_need = (size_t)2 * WA * c.PW, out_need = (size_t)WM * WA * c.tw + (size_t)WM * c.tw;
    c.per = ((in_need > out_need ? in_need : out_need) + 15) / 16 * 16;
    dmx__arena_mark mk = dmx__arena_save(ar);
    c.V = dmx__arena_floats(ar, WK * c.vplane);
    c.M = dmx__arena_floats(ar, WK * c.mplane);
    c.scratch = dmx__arena_floats(ar, PARTS * c.per);
    if (!c.V || !c.M || !c.scratch) {
        dmx__arena_restore(ar, mk);
        return -1;
    }
    dmx__team_for(PARTS, part_in, &c);
    dmx__team_for(WK, part_product, &c);
    dmx__team_for(PARTS, part_out, &c);
    dmx__arena_restore(ar, mk);
    return 0;
}
