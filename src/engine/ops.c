/*
 * ops.c - numeric kernels: im2col/GEMM convolutions, norms, activations.
 * See ops.h for layouts. Statistics are accumulated in double so results sit
 * well inside the parity tolerance whatever the tensor size.
 */
#include "ops.h"

#include "dirconv.h"
#include "gemm.h"
#include "team.h"
#include "winograd.h"
#include "winograd_stride.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "simd.h"

/* Every matrix product goes through here so benchmarks can report the
 * FLOP rate actually achieved (one relaxed atomic add per call). */
static _Atomic uint64_t g_flops;

uint64_t dmx__flop_count(void) { return atomic_load_explicit(&g_flops, memory_order_relaxed); }

/* The shape profile (benchmarks only): off, one relaxed load per product. */
#define PROF_MAX 1024
static _Atomic int g_prof;
static pthread_mutex_t prof_lock = PTHREAD_MUTEX_INITIALIZER;
static dmx__gemm_stat prof_v[PROF_MAX];
static int prof_n;
static double prof_seconds;

static double mono_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

double dmx__seconds_now(void) { return mono_now(); }

void dmx__flops_add(uint64_t flops) {
    atomic_fetch_add_explicit(&g_flops, flops, memory_order_relaxed);
}

int dmx__gemm_profiling(void) { return atomic_load_explicit(&g_prof, memory_order_relaxed); }

void dmx__gemm_profile_add(int ta, int tb, int M, int N, int K, unsigned long long calls,
                           double dt) {
    pthread_mutex_lock(&prof_lock);
    prof_seconds += dt;
    int i = 0;
    while (i < prof_n && !(prof_v[i].ta == ta && prof_v[i].tb == tb && prof_v[i].M == M &&
                           prof_v[i].N == N && prof_v[i].K == K))
        i++;
    if (i == prof_n && prof_n < PROF_MAX) prof_v[prof_n++] = (dmx__gemm_stat){ta, tb, M, N, K, 0, 0};
    if (i < prof_n) prof_v[i].calls += calls, prof_v[i].seconds += dt;
    pthread_mutex_unlock(&prof_lock);
}

void dmx__gemm_profile_start(void) {
    pthread_mutex_lock(&prof_lock);
    prof_n = 0;
    prof_seconds = 0;
    pthread_mutex_unlock(&prof_lock);
    atomic_store(&g_prof, 1);
}

int dmx__gemm_profile_stop(dmx__gemm_stat *out, int max) {
    atomic_store(&g_prof, 0);
    pthread_mutex_lock(&prof_lock);
    int n = prof_n < max ? prof_n : max;
    memcpy(out, prof_v, (size_t)n * sizeof *out);
    pthread_mutex_unlock(&prof_lock);
    return n;
}

double dmx__gemm_seconds(void) {
    pthread_mutex_lock(&prof_lock);
    double s = prof_seconds;
    pthread_mutex_unlock(&prof_lock);
    return s;
}

void dmx__sgemm_epi(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc,
                    const dmx__gemm_epi *epi) {
    atomic_fetch_add_explicit(&g_flops, 2ull * (uint64_t)M * N * K, memory_order_relaxed);
    const int prof = atomic_load_explicit(&g_prof, memory_order_relaxed);
    double t0 = prof ? mono_now() : 0;
    if (!dmx__team_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, epi))
        dmx__gemm_packed(ta, tb, M, N, K, alpha, A, lda, NULL, B, ldb, NULL, beta, C, ldc, epi);
    if (prof) dmx__gemm_profile_add(ta, tb, M, N, K, 1, mono_now() - t0);
}

void dmx__sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
    dmx__sgemm_epi(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void dmx__sgemm_rowbias(int ta, int tb, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, const float *bias, float *C, int ldc) {
    const dmx__gemm_epi e = {.row_bias = bias};
    dmx__sgemm_epi(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc, bias ? &e : NULL);
}

/* Columns of an im2col block of `rows` rows: the block takes a quarter of
 * L2, so the product that reads it finds it there (8 MiB blocks went out
 * to L3: the time encoders and decoders took 4 % longer on an Intel core
 * with 2 MiB of L2), at least 256 columns. */
static int col_block(size_t rows, size_t total) {
    const size_t budget = (size_t)dmx__gemm_l2_bytes() / 4 / sizeof(float);
    size_t nb = budget / (rows ? rows : 1);
    if (nb < 256) nb = 256;
    nb = nb / 64 * 64;
    if (nb > total) nb = total;
    return (int)nb;
}

/* Copies row `src` (length W) sampled at wi0 + t*sw for t < cnt into dst,
 * with zeros outside [0, W). */
static void gather_row(float *dst, const float *src, int W, long wi0, int sw, int cnt) {
    if (sw == 1) {
        long lo = wi0 < 0 ? -wi0 : 0; /* first t inside */
        long hi = W - wi0;            /* first t past the end */
        if (lo > cnt) lo = cnt;
        if (hi > cnt) hi = cnt;
        if (hi < lo) hi = lo;
        if (lo > 0) memset(dst, 0, (size_t)lo * sizeof(float));
        if (hi > lo) memcpy(dst + lo, src + wi0 + lo, (size_t)(hi - lo) * sizeof(float));
        if (cnt > hi) memset(dst + hi, 0, (size_t)(cnt - hi) * sizeof(float));
        return;
    }
    for (int t = 0; t < cnt; t++) {
        long wi = wi0 + (long)t * sw;
        dst[t] = (wi >= 0 && wi < W) ? src[wi] : 0.0f;
    }
}

static void im2col_block(const dmx__conv_geom *g, const float *x, int H, int W, int Wo, long j0,
                         int nb, float *col) {
    for (int ci = 0; ci < g->cin; ci++) {
        for (int ki = 0; ki < g->kh; ki++) {
            for (int kj = 0; kj < g->kw; kj++) {
                float *dst = col + (size_t)((ci * g->kh + ki) * g->kw + kj) * nb;
                long j = j0;
                int n = 0;
                while (n < nb) {
                    int ho = (int)(j / Wo), wo = (int)(j % Wo);
                    int cnt = Wo - wo;
                    if (cnt > nb - n) cnt = nb - n;
                    int hi = ho * g->sh + ki * g->dh - g->ph;
                    if (hi < 0 || hi >= H) {
                        memset(dst + n, 0, (size_t)cnt * sizeof(float));
                    } else {
                        const float *src = x + ((size_t)ci * H + hi) * W;
                        gather_row(dst + n, src, W, (long)wo * g->sw + (long)kj * g->dw - g->pw,
                                   g->sw, cnt);
                    }
                    n += cnt;
                    j += cnt;
                }
            }
        }
    }
}

void dmx__add_bias(float *y, const float *b, int C, size_t L) {
    if (!b) return;
    for (int c = 0; c < C; c++) {
        float bc = b[c];
        float *r = y + (size_t)c * L;
        for (size_t i = 0; i < L; i++) r[i] += bc;
    }
}

static int is_1x1(const dmx__conv_geom *g) {
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* Output columns [j0, j0 + n) of act(conv(x) + b) (b may be NULL) into dst
 * (cout rows, leading dimension ld); col is im2col scratch of K x n floats
 * (unused for 1x1 convolutions, which multiply the input directly). The
 * bias and act are the product's epilogue. */
static void conv_columns(const dmx__conv_geom *g, const float *x, int H, int W, int Wo,
                         size_t total, size_t j0, int n, const float *w, const float *b,
                         dmx__act act, float *col, float *dst, int ld) {
    int K = g->cin * g->kh * g->kw;
    const dmx__gemm_epi e = {.row_bias = b, .act = act};
    const dmx__gemm_epi *ep = b || act != DMX__ACT_NONE ? &e : NULL;
    if (is_1x1(g)) {
        dmx__sgemm_epi(0, 0, g->cout, n, K, 1.0f, w, K, x + j0, (int)total, 0.0f, dst, ld, ep);
    } else {
        im2col_block(g, x, H, W, Wo, (long)j0, n, col);
        dmx__sgemm_epi(0, 0, g->cout, n, K, 1.0f, w, K, col, n, 0.0f, dst, ld, ep);
    }
}

/* conv(x) + b by Winograd (winograd.h), band by band straight into y
 * (glu 0), or its GLU into y's cout/2 channels (glu 1: the output
 * transform applies it). */
static int conv_wino(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                     const float *w, const float *b, float *y, int glu) {
    size_t total = (size_t)H * W;
    int rows, cols;
    dmx__wino_bands(g, H, W, &rows, &cols);
    dmx__arena_mark m = dmx__arena_save(ar);
    float *U = dmx__wino_weights(ar, g, w);
    if (!U) return dmx__arena_restore(ar, m), -1;
    for (int r0 = 0; r0 < H; r0 += rows) {
        int r1 = r0 + rows < H ? r0 + rows : H;
        for (int c0 = 0; c0 < W; c0 += cols) {
            int c1 = c0 + cols < W ? c0 + cols : W;
            if (dmx__wino_band(ar, g, U, x, H, W, b, r0, r1, c0, c1, glu, y + (size_t)r0 * W + c0,
                               total, (size_t)W))
                return dmx__arena_restore(ar, m), -1;
        }
    }
    dmx__arena_restore(ar, m);
    return 0;
}

int dmx__conv2d(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                const float *w, const float *b, float *y) {
    return dmx__conv2d_act(ar, g, x, H, W, w, b, DMX__ACT_NONE, y);
}

int dmx__conv2d_act(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                    const float *w, const float *b, dmx__act act, float *y) {
    int Ho = dmx__conv_out(H, g->kh, g->sh, g->ph, g->dh);
    int Wo = dmx__conv_out(W, g->kw, g->sw, g->pw, g->dw);
    size_t total = (size_t)Ho * Wo;
    /* dirconv first: a 1x3 convolution to at most 48 outputs (the DConv's
     * first) runs faster directly than by Winograd's F(4, 3). Neither it
     * nor winograd.c's 2D transform takes act (no model asks them for
     * one): a pass after. */
    if (dmx__dirconv_use(g, H, W) || dmx__wino_use(g, H, W)) {
        int rc = dmx__dirconv_use(g, H, W) ? dmx__dirconv(ar, g, x, H, W, w, b, y)
                                           : conv_wino(ar, g, x, H, W, w, b, y, 0);
        if (rc == 0) dmx__act_apply(y, (size_t)g->cout * total, act);
        return rc;
    }
    if (dmx__wino_conv_s_use(g, H, W)) return dmx__wino_conv_s(ar, g, x, H, W, w, b, act, y);
    int K = g->cin * g->kh * g->kw;
    /* a 1x1 convolution is one GEMM on the whole input */
    int nb = is_1x1(g) ? (int)total : col_block((size_t)K, total);
    dmx__arena_mark m = dmx__arena_save(ar);
    float *col = is_1x1(g) ? NULL : dmx__arena_floats(ar, (size_t)K * nb);
    if (!is_1x1(g) && !col) return -1;
    for (size_t j0 = 0; j0 < total; j0 += nb) {
        int n = (int)((total - j0) < (size_t)nb ? (total - j0) : (size_t)nb);
        conv_columns(g, x, H, W, Wo, total, j0, n, w, b, act, col, y + j0, (int)total);
    }
    dmx__arena_restore(ar, m);
    return 0;
}

static void glu_pair(const float *a, const float *g, float *y, size_t n);

int dmx__conv2d_glu(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                    const float *w, const float *b, float *y) {
    if (dmx__wino_use(g, H, W)) return conv_wino(ar, g, x, H, W, w, b, y, 1);
    int Ho = dmx__conv_out(H, g->kh, g->sh, g->ph, g->dh);
    int Wo = dmx__conv_out(W, g->kw, g->sw, g->pw, g->dw);
    size_t total = (size_t)Ho * Wo;
    int K = g->cin * g->kh * g->kw, half = g->cout / 2;
    /* blocks of columns small enough that im2col + the 2C-channel result
     * stay in cache-friendly scratch */
    int nb = col_block((size_t)K + g->cout, total);
    dmx__arena_mark m = dmx__arena_save(ar);
    float *col = is_1x1(g) ? NULL : dmx__arena_floats(ar, (size_t)K * nb);
    float *tmp = dmx__arena_floats(ar, (size_t)g->cout * nb);
    if ((!is_1x1(g) && !col) || !tmp) return -1;
    for (size_t j0 = 0; j0 < total; j0 += nb) {
        int n = (int)((total - j0) < (size_t)nb ? (total - j0) : (size_t)nb);
        conv_columns(g, x, H, W, Wo, total, j0, n, w, b, DMX__ACT_NONE, col, tmp, n);
        for (int c = 0; c < half; c++) /* each output row straight from its pair */
            glu_pair(tmp + (size_t)c * n, tmp + (size_t)(c + half) * n, y + (size_t)c * total + j0,
                     (size_t)n);
    }
    dmx__arena_restore(ar, m);
    return 0;
}

int dmx__conv_tr2d(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                   const float *w, const float *b, float *y) {
    return dmx__conv_tr2d_ld(ar, g, x, H, W, w, g->cout * g->kh * g->kw, b, y);
}

int dmx__conv_tr2d_crop(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                        const float *w, int ldw, const float *b, int crop, dmx__act act,
                        float *y) {
    const int Ho = (H - 1) * g->sh + g->kh, Wo = (W - 1) * g->sw + g->kw, rows = Ho - 2 * crop;
    if (crop < 0 || rows < 1) return -1; /* no caller asks: a guard */
    if (dmx__wino_tr_use(g, H, W)) return dmx__wino_tr(ar, g, x, H, W, w, ldw, b, crop, act, y);
    /* the overlap-add completes an output only at its end: the whole
     * output, then the crop and the activation in passes after */
    int rc = dmx__conv_tr2d_ld(ar, g, x, H, W, w, ldw, b, y);
    if (rc) return rc;
    if (crop) /* destinations never pass their sources: forward */
        for (int c = 0; c < g->cout; c++)
            memmove(y + (size_t)c * rows * Wo, y + ((size_t)c * Ho + crop) * Wo,
                    sizeof(float) * (size_t)rows * Wo);
    dmx__act_apply(y, (size_t)g->cout * rows * Wo, act);
    return 0;
}

int dmx__conv_tr2d_ld(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                      const float *w, int ldw, const float *b, float *y) {
    if (dmx__wino_tr_use(g, H, W))
        return dmx__wino_tr(ar, g, x, H, W, w, ldw, b, 0, DMX__ACT_NONE, y);
    int Ho = (H - 1) * g->sh + g->kh;
    int Wo = (W - 1) * g->sw + g->kw;
    size_t in_total = (size_t)H * W, out_total = (size_t)Ho * Wo;
    int R = g->cout * g->kh * g->kw;
    /* y starts as the bias (zeros without one); the columns add onto it */
    for (int co = 0; co < g->cout; co++) {
        float *yc = y + (size_t)co * out_total, bc = b ? b[co] : 0.0f;
        for (size_t i = 0; i < out_total; i++) yc[i] = bc;
    }
    int nb = col_block((size_t)R, in_total);
    dmx__arena_mark m = dmx__arena_save(ar);
    float *col = dmx__arena_floats(ar, (size_t)R * nb);
    if (!col) return -1;
    for (size_t j0 = 0; j0 < in_total; j0 += nb) {
        int n = (int)((in_total - j0) < (size_t)nb ? (in_total - j0) : (size_t)nb);
        /* col (R, n) = w^T (R, cin) @ x[:, j0:j0+n] */
        dmx__sgemm(1, 0, R, n, g->cin, 1.0f, w, ldw, x + j0, (int)in_total, 0.0f, col, n);
        for (int co = 0; co < g->cout; co++) {
            for (int ki = 0; ki < g->kh; ki++) {
                for (int kj = 0; kj < g->kw; kj++) {
                    const float *src = col + (size_t)((co * g->kh + ki) * g->kw + kj) * n;
                    float *yc = y + (size_t)co * out_total;
                    long j = (long)j0;
                    int t = 0;
                    while (t < n) {
                        int h = (int)(j / W), wi = (int)(j % W);
                        int cnt = W - wi;
                        if (cnt > n - t) cnt = n - t;
                        float *row = yc + (size_t)(h * g->sh + ki) * Wo + kj;
                        if (g->sw == 1) {
                            for (int q = 0; q < cnt; q++) row[wi + q] += src[t + q];
                        } else {
                            for (int q = 0; q < cnt; q++)
                                row[(size_t)(wi + q) * g->sw] += src[t + q];
                        }
                        t += cnt;
                        j += cnt;
                    }
                }
            }
        }
    }
    dmx__arena_restore(ar, m);
    return 0;
}

void dmx__sum_sq(const float *p, size_t n, double *s, double *s2) {
    /* eight chains of double sums (four of values, four of squares): with
     * fewer, each vector waits on the latency of the previous add */
    size_t i = 0;
    double a = 0, a2 = 0;
#if defined(__AVX512F__)
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2v = s0, s3 = s0, q0 = s0, q1 = s0, q2 = s0,
            q3 = s0;
    for (; i + 32 <= n; i += 32) {
        __m512 v = _mm512_loadu_ps(p + i), w = _mm512_loadu_ps(p + i + 16);
        __m512d l0 = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d h0 =
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        __m512d l1 = _mm512_cvtps_pd(_mm512_castps512_ps256(w));
        __m512d h1 =
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w), 1)));
        s0 = _mm512_add_pd(s0, l0), s1 = _mm512_add_pd(s1, h0);
        s2v = _mm512_add_pd(s2v, l1), s3 = _mm512_add_pd(s3, h1);
        q0 = _mm512_fmadd_pd(l0, l0, q0), q1 = _mm512_fmadd_pd(h0, h0, q1);
        q2 = _mm512_fmadd_pd(l1, l1, q2), q3 = _mm512_fmadd_pd(h1, h1, q3);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(p + i);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi =
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        s0 = _mm512_add_pd(s0, lo), s1 = _mm512_add_pd(s1, hi);
        q0 = _mm512_fmadd_pd(lo, lo, q0), q1 = _mm512_fmadd_pd(hi, hi, q1);
    }
    a = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2v, s3)));
    a2 = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(q0, q1), _mm512_add_pd(q2, q3)));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2v = s0, s3 = s0, q0 = s0, q1 = s0, q2 = s0,
            q3 = s0;
    for (; i + 16 <= n; i += 16) {
        __m256 v = _mm256_loadu_ps(p + i), w = _mm256_loadu_ps(p + i + 8);
        __m256d l0 = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d h0 = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        __m256d l1 = _mm256_cvtps_pd(_mm256_castps256_ps128(w));
        __m256d h1 = _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1));
        s0 = _mm256_add_pd(s0, l0), s1 = _mm256_add_pd(s1, h0);
        s2v = _mm256_add_pd(s2v, l1), s3 = _mm256_add_pd(s3, h1);
        q0 = _mm256_fmadd_pd(l0, l0, q0), q1 = _mm256_fmadd_pd(h0, h0, q1);
        q2 = _mm256_fmadd_pd(l1, l1, q2), q3 = _mm256_fmadd_pd(h1, h1, q3);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(p + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_add_pd(s0, lo), s1 = _mm256_add_pd(s1, hi);
        q0 = _mm256_fmadd_pd(lo, lo, q0), q1 = _mm256_fmadd_pd(hi, hi, q1);
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2v, s3)));
    a = (t[0] + t[1]) + (t[2] + t[3]);
    _mm256_storeu_pd(t, _mm256_add_pd(_mm256_add_pd(q0, q1), _mm256_add_pd(q2, q3)));
    a2 = (t[0] + t[1]) + (t[2] + t[3]);
#endif
    for (; i < n; i++) {
        double v = p[i];
        a += v;
        a2 += v * v;
    }
    *s += a;
    *s2 += a2;
}

double dmx__sum_sqdev(const float *p, size_t n, double mean) {
    size_t i = 0;
    double a = 0;
#if defined(__AVX512F__)
    __m512d m = _mm512_set1_pd(mean), q0 = _mm512_setzero_pd(), q1 = q0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(p + i);
        __m512d lo = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), m);
        __m512d hi = _mm512_sub_pd(
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))), m);
        q0 = _mm512_fmadd_pd(lo, lo, q0), q1 = _mm512_fmadd_pd(hi, hi, q1);
    }
    a = _mm512_reduce_add_pd(_mm512_add_pd(q0, q1));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256d m = _mm256_set1_pd(mean), q0 = _mm256_setzero_pd(), q1 = q0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(p + i);
        __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), m);
        __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), m);
        q0 = _mm256_fmadd_pd(lo, lo, q0), q1 = _mm256_fmadd_pd(hi, hi, q1);
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(q0, q1));
    a = (t[0] + t[1]) + (t[2] + t[3]);
#endif
    for (; i < n; i++) {
        double d = p[i] - mean;
        a += d * d;
    }
    return a;
}

void dmx__mean_std(const float *x, size_t n, float *mean, float *std) {
    double s = 0, s2 = 0;
    dmx__sum_sq(x, n, &s, &s2);
    const double mu = n ? s / (double)n : 0.0;
    *mean = (float)mu;
    *std = (float)sqrt(dmx__sum_sqdev(x, n, mu) / (double)(n > 1 ? n - 1 : 1));
}

void dmx__norm_stats(double s, double s2, double cnt, double eps, float *mean, float *rstd) {
    double mu = s / cnt, var = s2 / cnt - mu * mu;
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt((var > 0 ? var : 0) + eps));
}

void dmx__group_norm(float *x, int C, int rows, int L, int groups, const float *gamma,
                     const float *beta, float eps) {
    dmx__group_norm_act(x, C, rows, L, groups, gamma, beta, eps, DMX__ACT_NONE);
}

void dmx__group_norm_act(float *x, int C, int rows, int L, int groups, const float *gamma,
                         const float *beta, float eps, dmx__act act) {
    int cpg = C / groups;
    size_t rstride = (size_t)L;        /* between rows */
    size_t cstride = (size_t)rows * L; /* between channels */
    for (int r = 0; r < rows; r++) {
        for (int g = 0; g < groups; g++) {
            double s = 0, s2 = 0;
            for (int c = g * cpg; c < (g + 1) * cpg; c++)
                dmx__sum_sq(x + c * cstride + r * rstride, (size_t)L, &s, &s2);
            float fmean, rstd;
            dmx__norm_stats(s, s2, (double)cpg * L, eps, &fmean, &rstd);
            for (int c = g * cpg; c < (g + 1) * cpg; c++) {
                float *p = x + c * cstride + r * rstride;
                float ga = gamma ? gamma[c] : 1.0f, be = beta ? beta[c] : 0.0f;
                float sc = rstd * ga;
                for (int l = 0; l < L; l++) p[l] = (p[l] - fmean) * sc + be;
                dmx__act_apply(p, (size_t)L, act); /* while the row is in L1 */
            }
        }
    }
}

void dmx__layer_norm(const float *x, float *y, int N, int C, const float *gamma, const float *beta,
                     float eps) {
    for (int i = 0; i < N; i++) {
        const float *p = x + (size_t)i * C;
        float *q = y + (size_t)i * C;
        double s = 0, s2 = 0;
        dmx__sum_sq(p, (size_t)C, &s, &s2);
        double mean = s / C;
        double v = dmx__sum_sqdev(p, (size_t)C, mean);
        float rstd = (float)(1.0 / sqrt(v / C + eps));
        float fm = (float)mean;
        for (int c = 0; c < C; c++) {
            float t = (p[c] - fm) * rstd;
            q[c] = gamma ? t * gamma[c] + beta[c] : t;
        }
    }
}

void dmx__gelu(float *x, size_t n) {
    size_t i = 0;
#ifdef VW
    for (; i + VW <= n; i += VW) V_STORE(x + i, v_gelu(V_LOAD(x + i)));
#endif
    for (; i < n; i++) x[i] = dmx__gelu1(x[i]);
}

void dmx__tanh(float *x, size_t n) {
    size_t i = 0;
#ifdef VW
    for (; i + VW <= n; i += VW) V_STORE(x + i, V_TANH(V_LOAD(x + i)));
#endif
    for (; i < n; i++) x[i] = tanhf(x[i]);
}

void dmx__relu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0.0f;
}

void dmx__act_apply(float *x, size_t n, dmx__act act) {
    if (act == DMX__ACT_GELU)
        dmx__gelu(x, n);
    else if (act == DMX__ACT_RELU)
        dmx__relu(x, n);
}

#ifdef V_EXP_INLINE
/* a * sigmoid(g): 1 / (1 + e) for g >= 0, e / (1 + e) below, e = e^-|g|,
 * the inline exponential of a non-positive argument (no overflow) */
static inline vf v_glu(vf a, vf g) {
    const vf one = V_SET1(1.0f), zero = V_ZERO();
    vf e = v_exp_le0(V_SUB(zero, V_MAX(g, V_SUB(zero, g))));
    return V_DIV(V_MUL(a, v_select_ge0(g, one, e)), V_ADD(one, e));
}
#endif

/* y[i] = a[i] * sigmoid(g[i]) for i < n (y may be a) */
static void glu_pair(const float *a, const float *g, float *y, size_t n) {
    size_t i = 0;
#if defined(V_EXP_INLINE)
    for (; i + VW <= n; i += VW) V_STORE(y + i, v_glu(V_LOAD(a + i), V_LOAD(g + i)));
#elif defined(VW)
    const vf one = V_SET1(1.0f), zero = V_SET1(0.0f);
    for (; i + VW <= n; i += VW) {
        vf e = V_EXP(V_SUB(zero, V_LOAD(g + i)));
        V_STORE(y + i, V_DIV(V_LOAD(a + i), V_ADD(one, e)));
    }
#endif
    for (; i < n; i++) y[i] = a[i] * (1.0f / (1.0f + expf(-g[i])));
}

void dmx__glu(const float *x, float *y, int C, size_t L) {
    size_t n = (size_t)(C / 2) * L;
    glu_pair(x, x + n, y, n);
}

void dmx__norm_glu_add(const float *h, size_t hstride, int C, size_t n, float mean, float rstd,
                       const float *gamma, const float *beta, const float *scale, float *y,
                       size_t ystride) {
    for (int c = 0; c < C; c++) {
        const float *ha = h + (size_t)c * hstride, *hg = ha + (size_t)C * hstride;
        float *yc = y + (size_t)c * ystride;
        const float sa = rstd * (gamma ? gamma[c] : 1.0f), ba = beta ? beta[c] : 0.0f;
        const float sg = rstd * (gamma ? gamma[c + C] : 1.0f), bg = beta ? beta[c + C] : 0.0f;
        const float sc = scale[c];
        size_t i = 0;
#if defined(V_EXP_INLINE)
        const vf vm = V_SET1(mean), vsa = V_SET1(sa), vba = V_SET1(ba), vsg = V_SET1(sg),
                 vbg = V_SET1(bg), vsc = V_SET1(sc);
        for (; i + VW <= n; i += VW) {
            vf a = V_FMA(V_SUB(V_LOAD(ha + i), vm), vsa, vba);
            vf g = V_FMA(V_SUB(V_LOAD(hg + i), vm), vsg, vbg);
            V_STORE(yc + i, V_FMA(vsc, v_glu(a, g), V_LOAD(yc + i)));
        }
#endif
        for (; i < n; i++) {
            float a = (ha[i] - mean) * sa + ba, g = (hg[i] - mean) * sg + bg;
            yc[i] += sc * (a * (1.0f / (1.0f + expf(-g))));
        }
    }
}

void dmx__linear_act(const float *x, int N, int in, const float *w, const float *b, int out,
                     float *y, dmx__act act) {
    const dmx__gemm_epi e = {.col_bias = b, .act = act};
    dmx__sgemm_epi(0, 1, N, out, in, 1.0f, x, in, w, in, 0.0f, y, out,
                   b || act != DMX__ACT_NONE ? &e : NULL);
}

void dmx__linear(const float *x, int N, int in, const float *w, const float *b, int out, float *y) {
    dmx__linear_act(x, N, in, w, b, out, y, DMX__ACT_NONE);
}

void dmx__add(float *y, const float *a, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += a[i];
}

void dmx__softmax_rows(float *x, int rows, int n) {
    for (int r = 0; r < rows; r++) {
        float inv, *row = x + (size_t)r * n;
        dmx__softmax_rows_unscaled(row, 1, n, &inv);
        for (int j = 0; j < n; j++) row[j] *= inv;
    }
}

void dmx__softmax_row_unscaled_max(float *row, int n, float mx, float *inv) {
    *inv = 1.0f / dmx__exp_shift_sum(row, n, mx);
}

float dmx__exp_shift_sum(float *row, int n, float mx) {
    int j = 0;
    float sum = 0.0f;
#ifdef V_EXP_INLINE
    /* e^(x - mx) = 2^(x log2 e - mx log2 e): the rounding of mx log2 e
     * scales the whole row alike (the scalar tail too) and cancels in its
     * 1 / sum */
    const float l2e = 1.44269504088896341f, off = -mx * l2e;
    const vf vl2e = V_SET1(l2e), voff = V_SET1(off);
    vf vs = V_ZERO();
    for (; j + VW <= n; j += VW) {
        vf e = v_exp2_le0(V_FMA(V_LOAD(row + j), vl2e, voff));
        V_STORE(row + j, e);
        vs = V_ADD(vs, e);
    }
    sum = v_hsum(vs);
    for (; j < n; j++) {
        row[j] = exp2f(fmaf(row[j], l2e, off));
        sum += row[j];
    }
#else
#ifdef VW
    vf vmx = V_SET1(mx), vs = V_ZERO();
    for (; j + VW <= n; j += VW) {
        vf e = V_EXP(V_SUB(V_LOAD(row + j), vmx));
        V_STORE(row + j, e);
        vs = V_ADD(vs, e);
    }
    sum = v_hsum(vs);
#endif
    for (; j < n; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
    }
#endif
    return sum;
}

void dmx__softmax_rows_unscaled(float *x, int rows, int n, float *inv) {
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * n;
        int j = 0;
        float mx = -INFINITY;
#ifdef VW
        if (n >= VW) {
            vf vm = V_LOAD(row);
            for (j = VW; j + VW <= n; j += VW) vm = V_MAX(vm, V_LOAD(row + j));
            mx = v_hmax(vm);
        }
#endif
        for (; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        dmx__softmax_row_unscaled_max(row, n, mx, &inv[r]);
    }
}
