/*
 * winograd.c - F(2x2, 3x3) convolutions; see winograd.h.
 *
 * Transforms (Lavin & Gray, "Fast Algorithms for Convolutional Neural
 * Networks"):
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]      (input, 4x4 patch)
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]    (kernel, 3x3)
 *   A^T = [1 1 1 0; 0 1 -1 -1]                         (output, 2x2)
 * A band of output rows is cut into 2x2 tiles, P of them; the transformed
 * input V is (16, cin, P), the products M = U V are (16, cout, P).
 */
#include "winograd.h"

#include <string.h>

/* Scratch budget of one band (V and M), in floats (8 MiB). */
#define BAND_BUDGET ((size_t)2 << 20)

int dmx__wino_use(const dmx__conv_geom *g, int H, int W) {
    if (g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 || g->ph != 1 || g->pw != 1 ||
        g->dh != 1 || g->dw != 1)
        return 0;
    /* the transforms cost about (cin + cout) * 16 * 4 operations per tile
     * against 16 * cin * cout * 2 for the products: worth it with a few
     * dozen channels, and tiles enough to fill the products */
    return g->cin >= 32 && g->cout >= 32 && H >= 2 && W >= 8;
}

float *dmx__wino_weights(dmx__arena *ar, const dmx__conv_geom *g, const float *w) {
    int co_n = g->cout, ci_n = g->cin;
    float *U = dmx__arena_floats(ar, (size_t)16 * co_n * ci_n);
    if (!U) return NULL;
    size_t plane = (size_t)co_n * ci_n;
    for (int co = 0; co < co_n; co++) {
        for (int ci = 0; ci < ci_n; ci++) {
            const float *k = w + ((size_t)co * ci_n + ci) * 9;
            float t[4][3]; /* G k */
            for (int j = 0; j < 3; j++) {
                float a = k[j], b = k[3 + j], c = k[6 + j];
                t[0][j] = a;
                t[1][j] = 0.5f * (a + b + c);
                t[2][j] = 0.5f * (a - b + c);
                t[3][j] = c;
            }
            size_t at = (size_t)co * ci_n + ci;
            for (int i = 0; i < 4; i++) { /* (G k) G^T */
                float a = t[i][0], b = t[i][1], c = t[i][2];
                U[(size_t)(i * 4 + 0) * plane + at] = a;
                U[(size_t)(i * 4 + 1) * plane + at] = 0.5f * (a + b + c);
                U[(size_t)(i * 4 + 2) * plane + at] = 0.5f * (a - b + c);
                U[(size_t)(i * 4 + 3) * plane + at] = c;
            }
        }
    }
    return U;
}

int dmx__wino_band_rows(const dmx__conv_geom *g, int H, int W) {
    size_t tiles_w = (size_t)(W + 1) / 2;
    size_t per_tile_row = 16 * (size_t)(g->cin + g->cout) * tiles_w;
    size_t tr = BAND_BUDGET / (per_tile_row ? per_tile_row : 1);
    if (tr < 1) tr = 1;
    size_t rows = 2 * tr;
    if (rows > (size_t)H + 1) rows = ((size_t)H + 1) / 2 * 2;
    return (int)rows;
}

/* The 4x4 patch of channel plane xc (H, W) whose top-left input is (r, c),
 * zeros outside. */
static void load_patch(float d[4][4], const float *xc, int H, int W, int r, int c) {
    for (int i = 0; i < 4; i++) {
        int hi = r + i;
        if (hi < 0 || hi >= H) {
            d[i][0] = d[i][1] = d[i][2] = d[i][3] = 0.0f;
            continue;
        }
        const float *row = xc + (size_t)hi * W;
        for (int j = 0; j < 4; j++) {
            int wj = c + j;
            d[i][j] = (wj >= 0 && wj < W) ? row[wj] : 0.0f;
        }
    }
}

int dmx__wino_band(dmx__arena *ar, const dmx__conv_geom *g, const float *U, const float *x, int H,
                   int W, const float *b, int oh0, int oh1, float *dst, size_t ld) {
    const int ci_n = g->cin, co_n = g->cout;
    const int tw = (W + 1) / 2, ty0 = oh0 / 2, ty1 = (oh1 + 1) / 2;
    const int P = (ty1 - ty0) * tw;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *V = dmx__arena_floats(ar, (size_t)16 * ci_n * P);
    float *M = dmx__arena_floats(ar, (size_t)16 * co_n * P);
    if (!V || !M) {
        dmx__arena_restore(ar, mk);
        return -1;
    }
    const size_t vplane = (size_t)ci_n * P, mplane = (size_t)co_n * P;
    /* input transform: V[k][ci][p] = (B^T d B)[k] */
    for (int ci = 0; ci < ci_n; ci++) {
        const float *xc = x + (size_t)ci * H * W;
        float *vc = V + (size_t)ci * P;
        for (int ty = ty0; ty < ty1; ty++) {
            for (int tx = 0; tx < tw; tx++) {
                int p = (ty - ty0) * tw + tx;
                float d[4][4], t[4][4];
                int r = 2 * ty - 1, c = 2 * tx - 1;
                if (r >= 0 && r + 3 < H && c >= 0 && c + 3 < W) {
                    for (int i = 0; i < 4; i++) memcpy(d[i], xc + (size_t)(r + i) * W + c, 16);
                } else {
                    load_patch(d, xc, H, W, r, c);
                }
                for (int j = 0; j < 4; j++) { /* B^T d */
                    t[0][j] = d[0][j] - d[2][j];
                    t[1][j] = d[1][j] + d[2][j];
                    t[2][j] = d[2][j] - d[1][j];
                    t[3][j] = d[1][j] - d[3][j];
                }
                for (int i = 0; i < 4; i++) { /* (B^T d) B */
                    float *v = vc + (size_t)(i * 4) * vplane + p;
                    v[0] = t[i][0] - t[i][2];
                    v[vplane] = t[i][1] + t[i][2];
                    v[2 * vplane] = t[i][2] - t[i][1];
                    v[3 * vplane] = t[i][1] - t[i][3];
                }
            }
        }
    }
    for (int k = 0; k < 16; k++)
        dmx__sgemm(0, 0, co_n, P, ci_n, 1.0f, U + (size_t)k * co_n * ci_n, ci_n, V + k * vplane,
                   P, 0.0f, M + k * mplane, P);
    /* output transform: Y = A^T m A, plus the bias, cropped to the band */
    for (int co = 0; co < co_n; co++) {
        const float *mc = M + (size_t)co * P;
        float bias = b ? b[co] : 0.0f;
        float *yc = dst + (size_t)co * ld;
        for (int ty = ty0; ty < ty1; ty++) {
            int oy = 2 * ty;
            int two_rows = oy + 1 < oh1;
            float *y0 = yc + (size_t)(oy - oh0) * W, *y1 = y0 + W;
            for (int tx = 0; tx < tw; tx++) {
                int p = (ty - ty0) * tw + tx;
                float m[16], t[2][4];
                for (int q = 0; q < 16; q++) m[q] = mc[q * mplane + p];
                for (int j = 0; j < 4; j++) { /* A^T m */
                    t[0][j] = m[j] + m[4 + j] + m[8 + j];
                    t[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
                }
                int ox = 2 * tx;
                y0[ox] = t[0][0] + t[0][1] + t[0][2] + bias;
                if (ox + 1 < W) y0[ox + 1] = t[0][1] - t[0][2] - t[0][3] + bias;
                if (two_rows) {
                    y1[ox] = t[1][0] + t[1][1] + t[1][2] + bias;
                    if (ox + 1 < W) y1[ox + 1] = t[1][1] - t[1][2] - t[1][3] + bias;
                }
            }
        }
    }
    dmx__arena_restore(ar, mk);
    return 0;
}
