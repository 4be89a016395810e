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

int dmx__wino_band(dmx__arena *ar, const dmx__conv_geom *g, const float *U, const float *x, int H,
                   int W, const float *b, int oh0, int oh1, float *dst, size_t ld) {
    const int ci_n = g->cin, co_n = g->cout;
    const int tw = (W + WM - 1) / WM, ty0 = oh0 / WM, ty1 = (oh1 + WM - 1) / WM;
    const int P = (ty1 - ty0) * tw;
    /* a tile row reads input columns -1 .. tw*WM; padded index c + 1, and
     * phase arrays one tile longer than the row for the last patch */
    const int PW = (tw + 1) * WM;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *V = dmx__arena_floats(ar, (size_t)WK * ci_n * P);
    float *M = dmx__arena_floats(ar, (size_t)WK * co_n * P);
    float *rows = dmx__arena_floats(ar, (size_t)WA * PW);     /* input rows, padded */
    float *ph = dmx__arena_floats(ar, (size_t)WA * PW);       /* vertical transform by phase; outputs by phase */
    float *tt = dmx__arena_floats(ar, (size_t)WM * WA * tw);  /* output: A^T m */
    if (!V || !M || !rows || !ph || !tt) {
        dmx__arena_restore(ar, mk);
        return -1;
    }
    const size_t vplane = (size_t)ci_n * P, mplane = (size_t)co_n * P;
    const int tpp = tw + 1; /* entries per phase */
    /* input transform */
    for (int ci = 0; ci < ci_n; ci++) {
        const float *xc = x + (size_t)ci * H * W;
        for (int ty = ty0; ty < ty1; ty++) {
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
                const float *src = xc + (size_t)hi * W;
                split_phases(src, W, tpp, rw);
            }
            for (int i = 0; i < WA; i++) {
                float *pi = ph + (size_t)i * PW;
                for (int c = 0; c < PW; c++) pi[c] = 0;
                for (int a = 0; a < WA; a++) {
                    float coef = BT[i][a];
                    if (coef == 0) continue;
                    const float *ra = rows + (size_t)a * PW;
                    for (int c = 0; c < PW; c++) pi[c] += coef * ra[c];
                }
            }
            size_t p0 = (size_t)(ty - ty0) * tw;
            for (int i = 0; i < WA; i++) {
                const float *pi = ph + (size_t)i * PW;
                for (int j = 0; j < WA; j++) {
                    float *v = V + (size_t)(i * WA + j) * vplane + (size_t)ci * P + p0;
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
    for (int k = 0; k < WK; k++)
        dmx__sgemm(0, 0, co_n, P, ci_n, 1.0f, U + (size_t)k * co_n * ci_n, ci_n, V + k * vplane,
                   P, 0.0f, M + k * mplane, P);
    /* output transform, plus the bias, cropped to the band and the width */
    for (int co = 0; co < co_n; co++) {
        float bias = b ? b[co] : 0.0f;
        float *yc = dst + (size_t)co * ld;
        for (int ty = ty0; ty < ty1; ty++) {
            size_t p0 = (size_t)(ty - ty0) * tw;
            for (int a = 0; a < WM; a++) /* tt[a][j] = sum_i AT[a][i] m[i][j] */
                for (int j = 0; j < WA; j++) {
                    float *d = tt + ((size_t)a * WA + j) * tw;
                    for (int t = 0; t < tw; t++) d[t] = 0;
                    for (int i = 0; i < WA; i++) {
                        float coef = AT[a][i];
                        if (coef == 0) continue;
                        const float *m = M + (size_t)(i * WA + j) * mplane + (size_t)co * P + p0;
                        for (int t = 0; t < tw; t++) d[t] += coef * m[t];
                    }
                }
            for (int a = 0; a < WM; a++) {
                int oy = WM * ty + a;
                if (oy < oh0 || oy >= oh1) continue;
                float *yr = yc + (size_t)(oy - oh0) * W;
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
    dmx__arena_restore(ar, mk);
    return 0;
}
