/*
 * test_ops.c - the optimised kernels (im2col + GEMM convolutions, transposed
 * convolutions, norms) against naive reference loops, over geometries that
 * cover stride, dilation, padding, 1x1 fast paths and several column blocks.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "simd.h"
#include "winograd.h"
#include "testutil.h"

static unsigned rng = 12345;
static float frand(void) {
    rng = rng * 1103515245u + 12345u;
    return ((rng >> 8) & 0xffff) / 32768.0f - 1.0f;
}
static float *rand_buf(size_t n) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

static void naive_conv(const dmx__conv_geom *g, const float *x, int H, int W, const float *w,
                       const float *b, float *y, int Ho, int Wo) {
    for (int co = 0; co < g->cout; co++)
        for (int ho = 0; ho < Ho; ho++)
            for (int wo = 0; wo < Wo; wo++) {
                double acc = b ? b[co] : 0;
                for (int ci = 0; ci < g->cin; ci++)
                    for (int ki = 0; ki < g->kh; ki++)
                        for (int kj = 0; kj < g->kw; kj++) {
                            int hi = ho * g->sh + ki * g->dh - g->ph;
                            int wi = wo * g->sw + kj * g->dw - g->pw;
                            if (hi < 0 || hi >= H || wi < 0 || wi >= W) continue;
                            acc += (double)w[((co * g->cin + ci) * g->kh + ki) * g->kw + kj] *
                                   x[((size_t)ci * H + hi) * W + wi];
                        }
                y[((size_t)co * Ho + ho) * Wo + wo] = (float)acc;
            }
}

static void naive_conv_tr(const dmx__conv_geom *g, const float *x, int H, int W, const float *w,
                          const float *b, float *y, int Ho, int Wo) {
    for (int co = 0; co < g->cout; co++)
        for (size_t i = 0; i < (size_t)Ho * Wo; i++) y[(size_t)co * Ho * Wo + i] = b ? b[co] : 0;
    for (int ci = 0; ci < g->cin; ci++)
        for (int h = 0; h < H; h++)
            for (int wi = 0; wi < W; wi++)
                for (int co = 0; co < g->cout; co++)
                    for (int ki = 0; ki < g->kh; ki++)
                        for (int kj = 0; kj < g->kw; kj++)
                            y[((size_t)co * Ho + h * g->sh + ki) * Wo + wi * g->sw + kj] +=
                                w[((ci * g->cout + co) * g->kh + ki) * g->kw + kj] *
                                x[((size_t)ci * H + h) * W + wi];
}

/* Winograd's transforms (winograd.h, F(4x4, 3x3)) round a few times more
 * than a direct sum: bounded relative to the output's peak, 1e-5 (its error
 * measured about 4e-6 on these sizes; the parity budget is 1e-4 of the
 * model output), instead of the direct sums' absolute bound. */
static double conv_tol(const dmx__conv_geom *g, int H, int W, const float *ref, size_t n, double direct) {
    if (!dmx__wino_use(g, H, W)) return direct;
    double peak = 0;
    for (size_t i = 0; i < n; i++) peak = fabs(ref[i]) > peak ? fabs(ref[i]) : peak;
    return 1e-5 * peak;
}

static int no_bias; /* check_conv without a bias */

static void check_conv(dmx__conv_geom g, int H, int W) {
    int Ho = dmx__conv_out(H, g.kh, g.sh, g.ph, g.dh), Wo = dmx__conv_out(W, g.kw, g.sw, g.pw, g.dw);
    float *x = rand_buf((size_t)g.cin * H * W);
    float *w = rand_buf((size_t)g.cout * g.cin * g.kh * g.kw);
    float *b = no_bias ? NULL : rand_buf(g.cout);
    float *y = malloc(sizeof(float) * g.cout * Ho * Wo), *r = malloc(sizeof(float) * g.cout * Ho * Wo);
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__conv2d(&ar, &g, x, H, W, w, b, y) == 0);
    naive_conv(&g, x, H, W, w, b, r, Ho, Wo);
    double d = max_diff(y, r, (size_t)g.cout * Ho * Wo);
    /* float sums of K products of values in [-1, 1): rounding grows as sqrt(K) */
    int K = g.cin * g.kh * g.kw;
    double tol = conv_tol(&g, H, W, r, (size_t)g.cout * Ho * Wo, 1e-4 * (K > 1024 ? sqrt(K / 1024.0) : 1.0));
    CHECK_MSG(d < tol, "conv %dx%d k(%d,%d) s(%d,%d) p(%d,%d) d(%d,%d) on %dx%d: diff %g", g.cin, g.cout,
              g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, H, W, d);
    dmx__arena_free(&ar);
    free(x), free(w), free(b), free(y), free(r);
}

/* the fused conv + GLU against the naive conv followed by a scalar GLU */
static void check_conv_glu(dmx__conv_geom g, int H, int W) {
    int Ho = dmx__conv_out(H, g.kh, g.sh, g.ph, g.dh), Wo = dmx__conv_out(W, g.kw, g.sw, g.pw, g.dw);
    size_t plane = (size_t)Ho * Wo;
    float *x = rand_buf((size_t)g.cin * H * W);
    float *w = rand_buf((size_t)g.cout * g.cin * g.kh * g.kw);
    float *b = rand_buf(g.cout);
    float *full = malloc(sizeof(float) * g.cout * plane), *ref = malloc(sizeof(float) * g.cout / 2 * plane);
    float *y = malloc(sizeof(float) * g.cout / 2 * plane);
    naive_conv(&g, x, H, W, w, b, full, Ho, Wo);
    for (size_t i = 0; i < (size_t)g.cout / 2 * plane; i++)
        ref[i] = full[i] / (1.0f + expf(-full[i + (size_t)g.cout / 2 * plane]));
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__conv2d_glu(&ar, &g, x, H, W, w, b, y) == 0);
    double d = max_diff(y, ref, (size_t)g.cout / 2 * plane);
    double tol = conv_tol(&g, H, W, ref, (size_t)g.cout / 2 * plane, 1e-4);
    CHECK_MSG(d < tol, "conv_glu k(%d,%d) on %dx%d: diff %g (bound %g)", g.kh, g.kw, H, W, d, tol);
    dmx__arena_free(&ar);
    free(x), free(w), free(b), free(full), free(ref), free(y);
}

/* extra: floats after each input channel's weights (dmx__conv_tr2d_ld's
 * ldw, as the last decoder's per-source slices read them); none: the plain
 * call */
static void check_conv_tr_ld(dmx__conv_geom g, int H, int W, int extra) {
    int Ho = (H - 1) * g.sh + g.kh, Wo = (W - 1) * g.sw + g.kw;
    int row = g.cout * g.kh * g.kw, ldw = row + extra;
    float *x = rand_buf((size_t)g.cin * H * W);
    float *w = rand_buf((size_t)g.cin * row), *wl = rand_buf((size_t)g.cin * ldw);
    for (int ci = 0; ci < g.cin; ci++) memcpy(wl + (size_t)ci * ldw, w + (size_t)ci * row, sizeof(float) * row);
    float *b = rand_buf(g.cout);
    float *y = malloc(sizeof(float) * g.cout * Ho * Wo), *r = malloc(sizeof(float) * g.cout * Ho * Wo);
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(extra ? dmx__conv_tr2d_ld(&ar, &g, x, H, W, wl, ldw, b, y) == 0
                : dmx__conv_tr2d(&ar, &g, x, H, W, w, b, y) == 0);
    naive_conv_tr(&g, x, H, W, w, b, r, Ho, Wo);
    double d = max_diff(y, r, (size_t)g.cout * Ho * Wo);
    CHECK_MSG(d < 1e-4, "conv_tr k(%d,%d) s(%d,%d) on %dx%d: diff %g", g.kh, g.kw, g.sh, g.sw, H, W, d);
    dmx__arena_free(&ar);
    free(x), free(w), free(wl), free(b), free(y), free(r);
}

static void check_conv_tr(dmx__conv_geom g, int H, int W) { check_conv_tr_ld(g, H, W, 0); }

/* A convolution's fused activation (dmx__conv2d_act / dmx__conv_tr2d_crop,
 * applied where each path writes its output) against the plain call
 * followed by dmx__act_apply: ReLU bit for bit (the same sums, then a
 * max), GELU within its vector form's rounding (a row's last W % VW
 * values may take the scalar twin). tr: a transposed convolution, `crop`
 * rows cropped from both ends of each output plane (against the plain
 * output's rows). */
static void check_conv_act(dmx__conv_geom g, int H, int W, int tr, int crop) {
    int Ho = tr ? (H - 1) * g.sh + g.kh : dmx__conv_out(H, g.kh, g.sh, g.ph, g.dh);
    int Wo = tr ? (W - 1) * g.sw + g.kw : dmx__conv_out(W, g.kw, g.sw, g.pw, g.dw);
    const int rows = Ho - 2 * crop;
    size_t n = (size_t)g.cout * Ho * Wo, nk = (size_t)g.cout * rows * Wo;
    float *x = rand_buf((size_t)g.cin * H * W);
    float *w = rand_buf((size_t)g.cout * g.cin * g.kh * g.kw);
    float *b = no_bias ? NULL : rand_buf(g.cout);
    float *plain = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * n);
    float *y = malloc(sizeof(float) * n);
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(tr ? dmx__conv_tr2d(&ar, &g, x, H, W, w, b, plain) == 0
             : dmx__conv2d(&ar, &g, x, H, W, w, b, plain) == 0);
    const dmx__act acts[2] = {DMX__ACT_RELU, DMX__ACT_GELU};
    for (int a = 0; a < 2; a++) {
        for (int c = 0; c < g.cout; c++) /* the rows kept */
            memcpy(ref + (size_t)c * rows * Wo, plain + ((size_t)c * Ho + crop) * Wo,
                   sizeof(float) * (size_t)rows * Wo);
        dmx__act_apply(ref, nk, acts[a]);
        for (size_t i = 0; i < n; i++) y[i] = NAN; /* every output written */
        CHECK(tr ? dmx__conv_tr2d_crop(&ar, &g, x, H, W, w, g.cout * g.kh * g.kw, b, crop,
                                       acts[a], y) == 0
                 : dmx__conv2d_act(&ar, &g, x, H, W, w, b, acts[a], y) == 0);
        double worst = 0;
        for (size_t i = 0; i < nk; i++) {
            double d = fabs((double)y[i] - ref[i]) / (1.0 + fabs(ref[i]));
            if (!(d <= worst)) worst = d;
        }
        double tol = acts[a] == DMX__ACT_RELU ? 0.0 : 2e-6;
        CHECK_MSG(worst <= tol, "conv%s %dx%d k(%d,%d) s(%d,%d) on %dx%d crop %d, act %d: diff %g",
                  tr ? "_tr" : "", g.cin, g.cout, g.kh, g.kw, g.sh, g.sw, H, W, crop, a, worst);
    }
    if (tr) /* a crop that leaves no row is refused */
        CHECK(dmx__conv_tr2d_crop(&ar, &g, x, H, W, w, g.cout * g.kh * g.kw, b, (Ho + 1) / 2,
                                  DMX__ACT_NONE, y) == -1);
    dmx__arena_free(&ar);
    free(x), free(w), free(b), free(plain), free(ref), free(y);
}

int main(void) {
    /* frequency conv (kernel along H), time conv (kernel along W), DConv-style
     * dilated rows, decoder 3x3, 1x1 fast path, and a large one spanning
     * several im2col blocks */
    check_conv((dmx__conv_geom){4, 8, 8, 1, 4, 1, 2, 0, 1, 1}, 64, 9);
    check_conv((dmx__conv_geom){2, 8, 1, 8, 1, 4, 0, 2, 1, 1}, 1, 103);
    check_conv((dmx__conv_geom){8, 3, 1, 3, 1, 1, 0, 2, 1, 2}, 5, 17);
    check_conv((dmx__conv_geom){6, 12, 3, 3, 1, 1, 1, 1, 1, 1}, 7, 11);
    check_conv((dmx__conv_geom){16, 32, 1, 1, 1, 1, 0, 0, 1, 1}, 3, 10);
    check_conv((dmx__conv_geom){40, 4, 3, 3, 1, 1, 1, 1, 1, 1}, 64, 300);
    check_conv_glu((dmx__conv_geom){6, 12, 3, 3, 1, 1, 1, 1, 1, 1}, 7, 11);
    check_conv_glu((dmx__conv_geom){16, 32, 1, 1, 1, 1, 0, 0, 1, 1}, 3, 10);
    check_conv_glu((dmx__conv_geom){24, 48, 3, 3, 1, 1, 1, 1, 1, 1}, 64, 300);
    /* 3x3 with channels enough for Winograd (winograd.h): odd sizes (a
     * cropped last tile row and column), several bands, one whole tile
     * row and a cropped one (5 and 6 rows) */
    check_conv((dmx__conv_geom){32, 64, 3, 3, 1, 1, 1, 1, 1, 1}, 63, 301);
    check_conv((dmx__conv_geom){48, 32, 3, 3, 1, 1, 1, 1, 1, 1}, 5, 17);
    check_conv((dmx__conv_geom){32, 40, 3, 3, 1, 1, 1, 1, 1, 1}, 6, 20);
    check_conv_glu((dmx__conv_geom){32, 64, 3, 3, 1, 1, 1, 1, 1, 1}, 63, 301);
    check_conv_glu((dmx__conv_geom){64, 96, 3, 3, 1, 1, 1, 1, 1, 1}, 8, 336);
    /* 1x3 along W by Winograd F(4, 3): a row not a multiple of the tile,
     * several rows, and rows long enough to be cut into column bands (the
     * time decoders' rewrite: 1 x T, channels to twice as many) */
    check_conv((dmx__conv_geom){64, 64, 1, 3, 1, 1, 0, 1, 1, 1}, 1, 1501);
    check_conv((dmx__conv_geom){72, 32, 1, 3, 1, 1, 0, 1, 1, 1}, 3, 83);
    check_conv((dmx__conv_geom){64, 128, 1, 3, 1, 1, 0, 1, 1, 1}, 1, 9001);
    check_conv((dmx__conv_geom){64, 128, 1, 3, 1, 1, 0, 1, 1, 1}, 2, 9001);
    check_conv_glu((dmx__conv_geom){64, 96, 1, 3, 1, 1, 0, 1, 1, 1}, 1, 20003);
    check_conv_glu((dmx__conv_geom){64, 64, 1, 3, 1, 1, 0, 1, 1, 1}, 2, 517);
    /* short convolutions along W with few outputs (dirconv.h): DConv
     * geometries (kernel 3, dilation 1 and 2) with outputs a multiple of
     * the tile's rows and not, rows shorter than a vector, one long row cut
     * into chunks (many inputs), padding other than "same", a wide kernel */
    check_conv((dmx__conv_geom){48, 6, 1, 3, 1, 1, 0, 1, 1, 1}, 37, 336);
    check_conv((dmx__conv_geom){48, 6, 1, 3, 1, 1, 0, 2, 1, 2}, 5, 341);
    check_conv((dmx__conv_geom){20, 7, 1, 3, 1, 1, 0, 2, 1, 2}, 3, 5);
    check_conv((dmx__conv_geom){5, 13, 1, 3, 1, 1, 0, 1, 1, 1}, 2, 70);
    check_conv((dmx__conv_geom){384, 48, 1, 3, 1, 1, 0, 2, 1, 2}, 1, 1500);
    check_conv((dmx__conv_geom){12, 24, 1, 3, 1, 1, 0, 0, 1, 1}, 4, 100);
    check_conv((dmx__conv_geom){9, 10, 1, 5, 1, 1, 0, 7, 1, 3}, 3, 50);
    check_conv((dmx__conv_geom){384, 48, 1, 3, 1, 1, 0, 2, 1, 2}, 3, 300); /* rows x chunks */
    check_conv((dmx__conv_geom){1024, 5, 1, 3, 1, 1, 0, 80, 1, 1}, 1, 100); /* padding > chunk */
    no_bias = 1;
    check_conv((dmx__conv_geom){48, 6, 1, 3, 1, 1, 0, 1, 1, 1}, 5, 100);
    check_conv((dmx__conv_geom){32, 32, 8, 1, 4, 1, 2, 0, 1, 1}, 24, 16); /* Winograd F(3, 2) */
    check_conv((dmx__conv_geom){32, 32, 3, 3, 1, 1, 1, 1, 1, 1}, 8, 16);  /* F(4x4, 3x3) */
    check_conv((dmx__conv_geom){4, 8, 8, 1, 4, 1, 2, 0, 1, 1}, 64, 9);
    no_bias = 0;
    check_conv_tr((dmx__conv_geom){8, 4, 8, 1, 4, 1, 0, 0, 1, 1}, 6, 5);
    check_conv_tr((dmx__conv_geom){8, 4, 1, 8, 1, 4, 0, 0, 1, 1}, 1, 37);
    check_conv_tr((dmx__conv_geom){64, 32, 8, 1, 4, 1, 0, 0, 1, 1}, 32, 300);
    /* kernel twice the stride along H with channels enough for Winograd
     * F(3, 2) (winograd_stride.h), forward: the encoders' padding 2, an
     * output not a multiple of the tile's three rows, stride 3 with
     * padding 1, no padding, several bands */
    check_conv((dmx__conv_geom){48, 96, 8, 1, 4, 1, 2, 0, 1, 1}, 128, 40);
    check_conv((dmx__conv_geom){32, 32, 8, 1, 4, 1, 2, 0, 1, 1}, 20, 9);
    check_conv((dmx__conv_geom){32, 48, 6, 1, 3, 1, 1, 0, 1, 1}, 30, 17);
    check_conv((dmx__conv_geom){40, 32, 8, 1, 4, 1, 0, 0, 1, 1}, 35, 12);
    check_conv((dmx__conv_geom){64, 64, 8, 1, 4, 1, 2, 0, 1, 1}, 128, 300);
    check_conv((dmx__conv_geom){32, 32, 4, 1, 2, 1, 1, 0, 1, 1}, 19, 10); /* stride 2 */
    /* and transposed (winograd_stride.h): output rows a multiple of the tile's and
     * not, a row narrower than two vectors, stride 3, several bands (the
     * 32 x 300 one above: two), weights read with a row stride */
    check_conv_tr((dmx__conv_geom){48, 24, 8, 1, 4, 1, 0, 0, 1, 1}, 8, 40);
    check_conv_tr((dmx__conv_geom){48, 24, 8, 1, 4, 1, 0, 0, 1, 1}, 5, 9);
    check_conv_tr((dmx__conv_geom){32, 16, 6, 1, 3, 1, 0, 0, 1, 1}, 7, 16);
    check_conv_tr((dmx__conv_geom){32, 16, 4, 1, 2, 1, 0, 0, 1, 1}, 10, 12); /* stride 2 */
    check_conv_tr_ld((dmx__conv_geom){40, 12, 8, 1, 4, 1, 0, 0, 1, 1}, 11, 24, 37);
    /* the fused activation on every path: Winograd F(3, 2) forward (an
     * output row count not a multiple of three, a row width not a multiple
     * of the vector) and transposed, im2col + GEMM along W (the time
     * encoders) and 1x1, then dirconv and F(4x4, 3x3) (a pass after) and
     * the transposed convolution's overlap-add (a pass after) */
    check_conv_act((dmx__conv_geom){48, 96, 8, 1, 4, 1, 2, 0, 1, 1}, 128, 40, 0, 0);
    check_conv_act((dmx__conv_geom){32, 32, 8, 1, 4, 1, 2, 0, 1, 1}, 20, 9, 0, 0);
    check_conv_act((dmx__conv_geom){48, 24, 8, 1, 4, 1, 0, 0, 1, 1}, 8, 40, 1, 0);
    check_conv_act((dmx__conv_geom){2, 48, 1, 8, 1, 4, 0, 2, 1, 1}, 1, 1003, 0, 0);
    check_conv_act((dmx__conv_geom){16, 32, 1, 1, 1, 1, 0, 0, 1, 1}, 3, 10, 0, 0);
    check_conv_act((dmx__conv_geom){48, 6, 1, 3, 1, 1, 0, 1, 1, 1}, 5, 100, 0, 0);
    check_conv_act((dmx__conv_geom){32, 32, 3, 3, 1, 1, 1, 1, 1, 1}, 8, 16, 0, 0);
    check_conv_act((dmx__conv_geom){8, 4, 1, 8, 1, 4, 0, 0, 1, 1}, 1, 37, 1, 0);
    /* the decoders' crop of the frequency padding: F(3, 2) writes only the
     * rows kept (a crop of 2 as the layers', of 5: past a tile of three
     * phase rows), the overlap-add path crops after */
    check_conv_act((dmx__conv_geom){48, 24, 8, 1, 4, 1, 0, 0, 1, 1}, 8, 40, 1, 2);
    check_conv_act((dmx__conv_geom){32, 16, 6, 1, 3, 1, 0, 0, 1, 1}, 7, 16, 1, 5);
    check_conv_act((dmx__conv_geom){8, 4, 8, 1, 4, 1, 0, 0, 1, 1}, 6, 5, 1, 2);
    /* im2col in several column blocks (a quarter of L2 each: 35000 output
     * columns of K = 16 are at least two up to a 4 MiB L2), without a bias */
    no_bias = 1;
    check_conv_act((dmx__conv_geom){2, 48, 1, 8, 1, 4, 0, 2, 1, 1}, 1, 140003, 0, 0);
    check_conv_act((dmx__conv_geom){48, 24, 8, 1, 4, 1, 0, 0, 1, 1}, 8, 40, 1, 2);
    no_bias = 0;

    /* GroupNorm per row (layout (C, rows, L)) against a direct computation */
    {
        int C = 6, R = 3, L = 50, G = 2;
        float *x = rand_buf((size_t)C * R * L), *ref = malloc(sizeof(float) * C * R * L);
        float *ga = rand_buf(C), *be = rand_buf(C);
        for (int r = 0; r < R; r++)
            for (int g = 0; g < G; g++) {
                double s = 0, s2 = 0;
                int cpg = C / G;
                for (int c = g * cpg; c < (g + 1) * cpg; c++)
                    for (int l = 0; l < L; l++) s += x[((size_t)c * R + r) * L + l];
                double mean = s / (cpg * L);
                for (int c = g * cpg; c < (g + 1) * cpg; c++)
                    for (int l = 0; l < L; l++) {
                        double d = x[((size_t)c * R + r) * L + l] - mean;
                        s2 += d * d;
                    }
                double rstd = 1 / sqrt(s2 / (cpg * L) + 1e-5);
                for (int c = g * cpg; c < (g + 1) * cpg; c++)
                    for (int l = 0; l < L; l++) {
                        size_t i = ((size_t)c * R + r) * L + l;
                        ref[i] = (float)((x[i] - mean) * rstd * ga[c] + be[c]);
                    }
            }
        float *xa = malloc(sizeof(float) * C * R * L);
        memcpy(xa, x, sizeof(float) * C * R * L);
        dmx__group_norm(x, C, R, L, G, ga, be, 1e-5f);
        CHECK_MSG(max_diff(x, ref, (size_t)C * R * L) < 1e-5, "group_norm");
        /* with the GELU in its pass: the norm's values, then GELU's */
        dmx__group_norm_act(xa, C, R, L, G, ga, be, 1e-5f, DMX__ACT_GELU);
        dmx__gelu(x, (size_t)C * R * L);
        CHECK_MSG(max_diff(xa, x, (size_t)C * R * L) < 2e-6, "group_norm_act");
        free(x), free(xa), free(ref), free(ga), free(be);
    }
    /* GELU (erf) and GLU spot values */
    {
        float v[3] = {-1.0f, 0.0f, 2.0f};
        dmx__gelu(v, 3);
        CHECK(fabsf(v[0] - (-0.15865525f)) < 1e-6f && v[1] == 0.0f && fabsf(v[2] - 1.9544997f) < 1e-6f);
        float g[4] = {1.0f, 2.0f, 0.0f, 1.0f}, o[2];
        dmx__glu(g, o, 2, 2);
        CHECK(fabsf(o[0] - 0.5f) < 1e-7f && fabsf(o[1] - 2.0f / (1.0f + expf(-1.0f))) < 1e-6f);
    }
    /* GELU (vectorised, and the scalar twin) against float64 on a dense
     * grid of [-9, 9]: within 1e-6 absolute (an ulp of the largest), with
     * AVX-512 within 1e-5 relative below zero; 0, infinities and NaN */
    {
        const size_t n = 360003; /* not a multiple of the vector width */
        float *x = malloc(sizeof(float) * n);
        REQUIRE(x);
        for (size_t i = 0; i < n; i++) x[i] = -9.0f + 18.0f * (float)i / (float)(n - 1);
        float *y = malloc(sizeof(float) * n);
        REQUIRE(y);
        memcpy(y, x, sizeof(float) * n);
        dmx__gelu(y, n);
        double abs_err = 0, rel_err = 0;
        for (size_t i = 0; i < n; i++) {
            double xd = x[i], g = 0.5 * xd * erfc(-xd / sqrt(2.0));
            const float got[2] = {y[i], dmx__gelu1(x[i])}; /* vector, scalar twin */
            for (int k = 0; k < 2; k++) abs_err = fmax(abs_err, fabs(got[k] - g));
            if (xd < 0 && g < -1e-30) rel_err = fmax(rel_err, fabs((y[i] - g) / g));
        }
        CHECK_MSG(abs_err <= 1e-6, "GELU: %g from float64", abs_err);
#if VW == 16
        /* the inline AVX-512 form keeps relative accuracy below zero */
        CHECK_MSG(rel_err <= 1e-5, "GELU below zero: %g relative", rel_err);
#endif
        /* 0, +inf, NaN, -0 and huge negatives (about 0) in the vector part
         * (the first 16) and in the scalar tail (the last 6 of 38); -inf's
         * is left open (upstream gives NaN, the limit is 0) */
        float sp[38] = {0};
        const float spec[6] = {0.0f, INFINITY, NAN, -0.0f, -1e30f, -FLT_MAX};
        for (int k = 0; k < 6; k++) sp[3 + k] = sp[32 + k] = spec[k];
        dmx__gelu(sp, 38);
        for (int at = 3; at <= 32; at += 29)
            CHECK_MSG(sp[at] == 0.0f && !signbit(sp[at]) && sp[at + 1] == INFINITY &&
                          isnan(sp[at + 2]) && sp[at + 3] == 0.0f && signbit(sp[at + 3]) &&
                          fabsf(sp[at + 4]) < 1e-30f && fabsf(sp[at + 5]) < 1e-30f,
                      "GELU(0, inf, nan, -0, -1e30, -FLT_MAX) = %g %g %g %g %g %g", sp[at],
                      sp[at + 1], sp[at + 2], sp[at + 3], sp[at + 4], sp[at + 5]);
        free(x), free(y);
    }
    /* GLU (vectorised) against double over gates from -100 to 100: both
     * signs' branches, gates whose e^-g would overflow, a scalar tail */
    {
        int C = 2;
        size_t L = 1001;
        float *x = malloc(sizeof(float) * C * L), *y = malloc(sizeof(float) * L);
        for (size_t i = 0; i < L; i++) {
            x[i] = frand() * 4.0f;
            x[L + i] = -100.0f + 200.0f * (float)i / (float)(L - 1);
        }
        dmx__glu(x, y, C, L);
        double worst = 0;
        for (size_t i = 0; i < L; i++) {
            double r = x[i] / (1.0 + exp(-(double)x[L + i]));
            double d = fabs(y[i] - r) / (fabs(r) > 1e-30 ? fabs(r) : 1e-30);
            if (!(d <= worst)) worst = d;
        }
        CHECK_MSG(worst < 1e-6, "glu: max relative error %.3e", worst);
        free(x), free(y);
    }
    /* the softmax's exponential (simd.h's v_exp2_le0 where the build has
     * FMA vectors) against double over the whole range it promises, shifted
     * by a row maximum of 3. Each value relative to the row maximum's own
     * (the row's common factor, within 3e-7 of 1, cancels in the 1 / sum):
     * within 2 x 1.3 ulp of the polynomial plus the roundings of its
     * argument, (x - 3) log2(e) formed in float with log2(e) in float
     * (|x - 3| (2^-24 + 2^-26) relative: at most 3e-8 of the row's sum);
     * below -86.6 only tiny; the row's 1 / sum; a NaN stays NaN */
    {
        int n = 20003;
        float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        for (int i = 0; i < n; i++) x[i] = 3.0f - 92.0f * (float)i / (float)(n - 1);
        memcpy(y, x, sizeof(float) * n);
        float inv;
        dmx__softmax_row_unscaled_max(y, n, 3.0f, &inv);
        CHECK_MSG(fabs(y[0] - 1.0) < 3e-7, "exp(0) = %.9g", y[0]);
        double worst = 0, sum = 0;
        for (int i = 0; i < n; i++) {
            double xs = (double)x[i] - 3.0, r = exp(xs);
            sum += r;
            if (xs < -86.6) {
                CHECK_MSG(y[i] >= 0.0f && y[i] < 3e-38f, "exp(%g) = %g", xs, y[i]);
                continue;
            }
            /* in units of the allowance */
            double d = fabs((double)y[i] / y[0] - r) / r / (1.6e-7 + fabs(xs) * (0x1p-24 + 0x1p-26));
            if (!(d <= worst)) worst = d;
        }
        CHECK_MSG(worst <= 1.0, "softmax exponential: %.3f of its error allowance", worst);
        CHECK_MSG(fabs(inv * sum * y[0] - 1.0) < 1e-5, "softmax 1/sum %g against %g", inv,
                  1.0 / (sum * y[0]));
        /* a large maximum (its rounding times log2(e) is then 1e-5 of
         * the row, common to every value) and a row that is not a whole
         * number of vectors, its last values near the maximum: the scalar
         * tail takes the same factor */
        {
            const int m = 8 * 16 + 13;
            const float big = 1000.37f;
            for (int i = 0; i < m; i++) x[i] = y[i] = big - 0.37f * (float)((i * 7) % m) / m;
            float mx = x[0];
            for (int i = 1; i < m; i++) mx = x[i] > mx ? x[i] : mx;
            dmx__softmax_row_unscaled_max(y, m, mx, &inv);
            double worst2 = 0, s2 = 0;
            int im = 0;
            for (int i = 0; i < m; i++) im = x[i] == mx ? i : im;
            for (int i = 0; i < m; i++) {
                double xs = (double)x[i] - mx, r = exp(xs);
                s2 += (double)y[i];
                double d = fabs((double)y[i] / y[im] - r) / r /
                           (1.6e-7 + fabs(xs) * (0x1p-24 + 0x1p-26));
                if (!(d <= worst2)) worst2 = d;
            }
            CHECK_MSG(worst2 <= 1.0, "softmax, maximum 1000: %.3f of the allowance", worst2);
            CHECK_MSG(fabs(inv * s2 - 1.0) < 1e-6, "softmax, maximum 1000: 1/sum %g", inv);
        }
        for (int i = 0; i < 64; i++) y[i] = (float)i / 64.0f;
        y[21] = NAN;
        dmx__softmax_row_unscaled_max(y, 64, 1.0f, &inv);
        CHECK_MSG(isnan(y[21]) && isnan(inv) && y[20] > 0.0f && y[20] <= 1.0f,
                  "a NaN score: %g, 1/sum %g", y[21], inv);
        free(x), free(y);
    }
    /* the fused DConv tail against its three steps in double: with and
     * without the affine parameters, channel strides wider than the rows */
    for (int affine = 0; affine < 2; affine++) {
        int C = 5;
        size_t n = 77, hs = 80, ys = 90;
        float *h = rand_buf(2 * C * hs), *y = rand_buf(C * ys), *ga = rand_buf(2 * C),
              *be = rand_buf(2 * C), *sc = rand_buf(C);
        double *ref = malloc(sizeof(double) * C * ys);
        float mean = 0.1f, rstd = 1.7f;
        for (int c = 0; c < C; c++)
            for (size_t i = 0; i < ys; i++) {
                ref[c * ys + i] = y[c * ys + i];
                if (i >= n) continue;
                double a = (h[c * hs + i] - (double)mean) * rstd, g = (h[(c + C) * hs + i] - (double)mean) * rstd;
                if (affine) a = a * ga[c] + be[c], g = g * ga[c + C] + be[c + C];
                ref[c * ys + i] += sc[c] * a / (1.0 + exp(-g));
            }
        dmx__norm_glu_add(h, hs, C, n, mean, rstd, affine ? ga : NULL, affine ? be : NULL, sc, y,
                          ys);
        double worst = 0;
        for (size_t i = 0; i < (size_t)C * ys; i++) {
            double d = fabs(y[i] - ref[i]);
            if (!(d <= worst)) worst = d;
        }
        CHECK_MSG(worst < 2e-6, "norm_glu_add (affine %d): max error %.3e", affine, worst);
        free(h), free(y), free(ga), free(be), free(sc), free(ref);
    }
    /* tanh (vectorised) against double tanh over a wide range, tails included */
    {
        size_t n = 1003;
        float *x = malloc(sizeof(float) * n);
        double worst = 0;
        for (size_t i = 0; i < n; i++) x[i] = -12.0f + 24.0f * (float)i / (float)(n - 1);
        float *y = malloc(sizeof(float) * n);
        memcpy(y, x, sizeof(float) * n);
        dmx__tanh(y, n);
        for (size_t i = 0; i < n; i++) {
            double d = fabs(y[i] - tanh((double)x[i]));
            worst = d > worst ? d : worst;
        }
        CHECK_MSG(worst < 5e-7, "tanh: max error %.3e", worst);
        free(x), free(y);
    }
    {
        /* dmx__sum_sq (the norms' statistics, summed in double over eight
         * vector chains): every length around the vector loops' steps,
         * against a plain double sum, and adding onto what *s, *s2 held */
        const size_t lens[] = {0,  1,  7,  8,  9,  15, 16, 17,   31,
                               32, 33, 47, 48, 63, 64, 65, 1000, 4099};
        float *x = rand_buf(4099);
        for (size_t i = 0; i < 4099; i++) x[i] += 0.25f; /* not centred on 0 */
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            size_t n = lens[k];
            double s = 1.5, s2 = 2.5, r = 1.5, r2 = 2.5;
            for (size_t i = 0; i < n; i++) r += x[i], r2 += (double)x[i] * x[i];
            dmx__sum_sq(x, n, &s, &s2);
            CHECK_MSG(fabs(s - r) <= 1e-12 * (fabs(r) + 1) && fabs(s2 - r2) <= 1e-12 * r2,
                      "sum_sq of %zu values: %.17g %.17g against %.17g %.17g", n, s, s2, r, r2);
        }
        free(x);
    }
    return dmx_test_done("test_ops");
}
