/*
 * gemm.c - the single-threaded sgemm every product ends in (see gemm.h).
 *
 * Products run here, the GotoBLAS/BLIS way, on a build with FMA vectors
 * (AVX2 or AVX-512; which by default: below):
 *
 *   for each NC-column block of B, each KC-deep slice of it:
 *     pack the slice into NR-wide panels (k-major, zero past N)
 *     for each MC-row block of A: pack it into MR-row panels (k-major)
 *       for each panel pair: the MR x NR microkernel over KC
 *
 * The microkernel keeps the MR x NR tile of C in registers (AVX-512: 6 x 64,
 * 24 of the 32 vector registers, per k NRV = 4 vector loads of B and MR = 6
 * broadcasts of A; AVX2: 4 x 24, 12 of 16). A KC slice's products are added
 * into C, the first slice onto beta * C, so the sums over K are blocked as
 * OpenBLAS blocks them (KC depends on the CPU's caches, below: results
 * differ between CPUs by rounding, never between thread counts). Edge
 * tiles go through a small buffer. The pack buffers are per thread,
 * allocated once, pooled when the thread ends.
 * Either operand can come packed whole (dmx__gemm_pack): the parts of a cut
 * product share one packing of the operand they all need, where OpenBLAS
 * packs it again in every part. These kernels are the default on every
 * build with FMA vectors (but an AddressSanitizer one: below). AVX-512: on
 * a CPU that OpenBLAS drives with AVX2 kernels (one it predates, or
 * OPENBLAS_CORETYPE naming an AVX2 family) they use the full vector
 * width, and on an Intel core where OpenBLAS runs its SkylakeX kernels
 * they measured 3-7 % faster per evaluation. AVX2:
 * slower than OpenBLAS's Haswell kernels on a lone 2048^3 product, but an
 * evaluation ran 3-4 % faster with them (the shared packing and the fused
 * epilogues, which OpenBLAS has no place for; an Intel core held to AVX2).
 * Without FMA vectors OpenBLAS computes the product.
 */
#include "gemm.h"

#include "simd.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef VW
/* The epilogue's activation of one vector (gemm.h): GELU or ReLU (max with
 * 0 turns a NaN into 0, as dmx__relu's comparison does). */
static inline vf act_v(dmx__act act, vf x) {
    return act == DMX__ACT_GELU ? v_gelu(x) : V_MAX(x, V_ZERO());
}
#endif

#if defined(VW) && (VW == 16 || VW == 8) && defined(V_FMA)
#define OWN 1
/* Tile and blocks (AVX-512: measured on a Zen 5 core, against 12 x 32,
 * 8 x 48, 14 x 32 and KC 192..384: within the noise of the best, 75-85 % of
 * the FMA peak on the engine's shapes; AVX2's 16 registers: 4 x 24, 12
 * accumulators, against 6 x 16 and 8 x 8); -D overrides them for such
 * trials. */
#if VW == 8
#ifndef MR
#define MR 4 /* rows of the tile: broadcasts of A per k */
#endif
#ifndef NRV
#define NRV 3 /* vectors across the tile: loads of B per k (12 accumulators) */
#endif
#else
#ifndef MR
#define MR 6
#endif
#ifndef NRV
#define NRV 4 /* (24 accumulators) */
#endif
#endif
#ifndef KUNROLL
#define KUNROLL 1
#endif
#define NR  (NRV * VW)
#define PRAGMA_(x) _Pragma(#x)
#define PRAGMA(x)  PRAGMA_(x)
#define K_UNROLL   PRAGMA(GCC unroll KUNROLL)
/* Blocks: tuned on a Zen 5 core (L1d 48 KiB, L2 1 MiB) as KC 128 (a KC x
 * NR panel of B: AVX-512 32 KiB, two thirds of L1d; AVX2 12 KiB), MC 288
 * (an MC x KC block of A, 144 KiB, in L2) and NC 2048 (KC x NC of B, 1 MiB,
 * L2/L3). On a CPU with a smaller L1d or L2 (read once, blocks()) KC and MC
 * shrink in proportion, so the panels keep the share of the caches they
 * had where tuned; larger caches keep the tuned sizes (deeper blocks
 * measured no better there). -DKC=, -DMC=, -DNC= fix them for trials.
 * Blocks hold whole panels: an operand packed whole (dmx__gemm_pack) is
 * read block by block at panel offsets. */
#define TUNED_L1 49152L
#define TUNED_L2 1048576L
static int kc_ = 128, mc_ = 288, nc_ = 2048 / NR * NR;
#endif

static pthread_once_t choose_once = PTHREAD_ONCE_INIT;
static int own_on;
static long l2_bytes = 1L << 20;

#ifdef OWN
static int clampi(long v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : (int)v; }

static void blocks(void) {
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) /* glibc */
    dmx__gemm_blocks_for(sysconf(_SC_LEVEL1_DCACHE_SIZE), sysconf(_SC_LEVEL2_CACHE_SIZE), &kc_,
                         &mc_);
#else
    dmx__gemm_blocks_for(0, 0, &kc_, &mc_);
#endif
#ifdef KC
    kc_ = KC;
#endif
#ifdef MC
    mc_ = MC / MR * MR;
#endif
#ifdef NC
    nc_ = NC / NR * NR;
#endif
}
#endif

static void choose(void) {
#ifdef _SC_LEVEL2_CACHE_SIZE /* glibc */
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 >= 65536 && l2 <= (64L << 20)) l2_bytes = l2;
#endif
#ifdef OWN
    blocks();
    const char *env = getenv("DEMIX_GEMM");
    if (env && !strcmp(env, "openblas"))
        own_on = 0;
    else if (env && !strcmp(env, "own"))
        own_on = 1;
    else {
        /* faster per evaluation than OpenBLAS's kernels of the same
         * width, and on AVX-512 than its AVX2 kernels (see the top) */
        own_on = 1;
#ifdef __SANITIZE_ADDRESS__
        /* instrumented, these loops run 6x slower than OpenBLAS, which is
         * not: AddressSanitizer builds use OpenBLAS, and test_gemm and
         * test_team check these kernels there (DEMIX_GEMM=own) */
        own_on = 0;
#endif
    }
#endif
}

int dmx__gemm_own(void) {
    pthread_once(&choose_once, choose);
    return own_on;
}

void dmx__gemm_blocks_for(long l1, long l2, int *kc, int *mc) {
#ifdef OWN
    /* unknown sizes (0, -1, nonsense) keep the tuned blocks */
    *kc = l1 >= 8192 && l1 < TUNED_L1 ? clampi(128 * l1 / TUNED_L1 / 16 * 16, 32, 128) : 128;
    *mc = l2 >= 65536 && l2 < TUNED_L2 ? clampi(288 * l2 / TUNED_L2 / MR * MR, 4 * MR, 288) : 288;
#else
    (void)l1, (void)l2;
    *kc = *mc = 0;
#endif
}

long dmx__gemm_l2_bytes(void) {
    pthread_once(&choose_once, choose);
    return l2_bytes;
}

void dmx__gemm_blocks(int *kc, int *mc, int *nc) {
    pthread_once(&choose_once, choose);
#ifdef OWN
    *kc = kc_, *mc = mc_, *nc = nc_;
#else
    *kc = *mc = *nc = 0;
#endif
}

int dmx__gemm_own_built(void) {
#ifdef OWN
    return 1;
#else
    return 0;
#endif
}

#ifdef OWN
typedef struct bufs {
    float *a, *b, *t;
    float *s; /* an operand packed whole for the parts of a cut product */
    size_t s_cap;
    struct bufs *next; /* in the pool */
} bufs;

static pthread_key_t buf_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
/* Buffers of threads that have ended, for the next thread: the engine's
 * threads live for one batch of evaluations, and faulting fresh pages in
 * for each new thread is dear on a virtual machine. At most one set per
 * thread that ever ran at the same time. */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static bufs *pool;

static void bufs_destroy(bufs *b) {
    free(b->a);
    free(b->b);
    free(b->t);
    free(b->s);
    free(b);
}

static void bufs_release(void *p) { /* thread exit: back to the pool */
    bufs *b = p;
    pthread_mutex_lock(&pool_lock);
    b->next = pool;
    pool = b;
    pthread_mutex_unlock(&pool_lock);
}

static void key_make(void) { (void)pthread_key_create(&buf_key, bufs_release); }

static bufs *thread_bufs(void) {
    pthread_once(&key_once, key_make);
    bufs *b = pthread_getspecific(buf_key);
    if (b) return b;
    pthread_mutex_lock(&pool_lock);
    if ((b = pool)) pool = b->next;
    pthread_mutex_unlock(&pool_lock);
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) return NULL;
        b->a = aligned_alloc(64, sizeof(float) * mc_ * kc_);
        b->b = aligned_alloc(64, sizeof(float) * kc_ * nc_);
        b->t = aligned_alloc(64, sizeof(float) * (MR * NR + NR)); /* + a padded bias */
        if (!b->a || !b->b || !b->t) {
            bufs_destroy(b);
            return NULL;
        }
    }
    if (pthread_setspecific(buf_key, b) != 0) {
        bufs_destroy(b);
        return NULL;
    }
    return b;
}

#define TB VW /* the blocks transposed in registers (simd.h's v_transpose) */

/* B (k0.., j0..; kc x nc) into NR-wide panels: panel p at bp + p * kc * NR,
 * element (k, c) at k * NR + c; columns past nc are zero. */
static void pack_b(int tb, const float *B, int ldb, int k0, int kc, int j0, int nc, float *bp) {
    for (int p = 0; p < nc; p += NR) {
        float *dst = bp + (size_t)p * kc;
        int w = nc - p < NR ? nc - p : NR;
        if (!tb) {
            for (int k = 0; k < kc; k++) {
                const float *src = B + (size_t)(k0 + k) * ldb + j0 + p;
                float *d = dst + (size_t)k * NR;
                if (w == NR) {
                    for (int v = 0; v < NRV; v++) V_STORE(d + v * VW, V_LOAD(src + v * VW));
                } else {
                    int c = 0;
                    for (; c < w; c++) d[c] = src[c];
                    for (; c < NR; c++) d[c] = 0.0f;
                }
            }
        } else if (w == NR) { /* TB x TB blocks transposed in registers */
            const float *src = B + (size_t)(j0 + p) * ldb + k0;
            int k = 0;
            for (; k + TB <= kc; k += TB)
                for (int c = 0; c < NR; c += TB)
                    v_transpose(src + (size_t)c * ldb + k, (size_t)ldb, dst + (size_t)k * NR + c, NR);
            for (; k < kc; k++) {
                float *d = dst + (size_t)k * NR;
                for (int c = 0; c < NR; c++) d[c] = src[(size_t)c * ldb + k];
            }
        } else {
            for (int c = 0; c < NR; c++) {
                if (c < w) {
                    const float *src = B + (size_t)(j0 + p + c) * ldb + k0;
                    for (int k = 0; k < kc; k++) dst[(size_t)k * NR + c] = src[k];
                } else {
                    for (int k = 0; k < kc; k++) dst[(size_t)k * NR + c] = 0.0f;
                }
            }
        }
    }
}

#if VW == 16 && MR == 6
/* Six rows' next 16 elements (from k) into the panel's 96 floats at dst,
 * k-major, by shuffles instead of 96 scalar moves (a sixth of a
 * transformer product's time went to the scalar packing on an Intel
 * core): the row pairs interleaved (each (row 2q, row 2q+1) pair of one k
 * is then one 64-bit unit), then each output vector's 8 units gathered
 * from the three pair vectors of its half, two from a two-source permute
 * and the third pair by a masked one. */
static inline void pack6x16(const float *const src[6], int k, float *dst) {
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi =
        _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    /* output vector j of a half: unit t is pair s = (8j + t) % 3 of k
     * (8j + t) / 3; idx01 takes pairs 0 and 1 (pair 1's index past 8),
     * idx2 and the mask pair 2 */
    static const long long idx01[3][8] = {
        {0, 8, 0, 1, 9, 0, 2, 10}, {0, 3, 11, 0, 4, 12, 0, 5}, {13, 0, 6, 14, 0, 7, 15, 0}};
    static const long long idx2[3][8] = {
        {0, 0, 0, 0, 0, 1, 0, 0}, {2, 0, 0, 3, 0, 0, 4, 0}, {0, 5, 0, 0, 6, 0, 0, 7}};
    static const __mmask8 m2[3] = {0x24, 0x49, 0x92};
    __m512d p[3][2];
    for (int q = 0; q < 3; q++) {
        __m512 a = _mm512_loadu_ps(src[2 * q] + k), b = _mm512_loadu_ps(src[2 * q + 1] + k);
        p[q][0] = _mm512_castps_pd(_mm512_permutex2var_ps(a, lo, b));
        p[q][1] = _mm512_castps_pd(_mm512_permutex2var_ps(a, hi, b));
    }
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 3; j++) {
            __m512d v = _mm512_permutex2var_pd(p[0][h], _mm512_loadu_si512(idx01[j]), p[1][h]);
            v = _mm512_mask_permutexvar_pd(v, m2[j], _mm512_loadu_si512(idx2[j]), p[2][h]);
            _mm512_storeu_pd((double *)(dst + 16 * (3 * h + j)), v);
        }
}
#endif

#if VW == 8 && MR == 4
/* Four rows' next 8 elements (from k) into the panel's 32 floats at dst,
 * k-major: a 4 x 8 transpose in registers (pairs interleaved, then
 * quads; each vector then holds k and k + 4, which the lane permutes
 * pair up), where the scalar loop moved one float per load and store. */
static inline void pack4x8(const float *const src[4], int k, float *dst) {
    __m256 r0 = _mm256_loadu_ps(src[0] + k), r1 = _mm256_loadu_ps(src[1] + k);
    __m256 r2 = _mm256_loadu_ps(src[2] + k), r3 = _mm256_loadu_ps(src[3] + k);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u1, 0x20));
    _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
    _mm256_storeu_ps(dst + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
    _mm256_storeu_ps(dst + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
}
#endif

/* A (i0..; mc x kc from k0) into MR-row panels: panel p at ap + p * kc * MR,
 * element (i, k) at k * MR + i; rows past mc are zero. */
static void pack_a(int ta, const float *A, int lda, int i0, int mc, int k0, int kc, float *ap) {
    for (int p = 0; p < mc; p += MR) {
        float *dst = ap + (size_t)p * kc;
        int h = mc - p < MR ? mc - p : MR;
        if (!ta && h == MR) { /* MR row streams, the panel written in order */
            const float *src[MR];
            for (int i = 0; i < MR; i++) src[i] = A + (size_t)(i0 + p + i) * lda + k0;
            int k = 0;
#if VW == 16 && MR == 6
            for (; k + 16 <= kc; k += 16) pack6x16(src, k, dst + (size_t)k * MR);
#elif VW == 8 && MR == 4
            for (; k + 8 <= kc; k += 8) pack4x8(src, k, dst + (size_t)k * MR);
#endif
            for (; k < kc; k++)
#pragma GCC unroll 16
                for (int i = 0; i < MR; i++) dst[(size_t)k * MR + i] = src[i][k];
        } else if (!ta) {
            for (int i = 0; i < MR; i++) {
                if (i < h) {
                    const float *src = A + (size_t)(i0 + p + i) * lda + k0;
                    for (int k = 0; k < kc; k++) dst[(size_t)k * MR + i] = src[k];
                } else {
                    for (int k = 0; k < kc; k++) dst[(size_t)k * MR + i] = 0.0f;
                }
            }
        } else {
            for (int k = 0; k < kc; k++) {
                const float *src = A + (size_t)(k0 + k) * lda + i0 + p;
                float *d = dst + (size_t)k * MR;
                int i = 0;
                for (; i < h; i++) d[i] = src[i];
                for (; i < MR; i++) d[i] = 0.0f;
            }
        }
    }
}

/* C tile (MR x NR at c, row stride ldc) = alpha * ap^T bp + (first ? beta *
 * C : C), over kc; only rows < h and columns < w exist in C. The epilogue
 * (gemm.h): on the first slice rb (the tile's h row biases) or cb (its
 * NR column biases, padded) take beta * C's place; act, given on the last
 * slice only, runs over the stored tile while it is in L1 (a libmvec call
 * per vector would spill the accumulators if made before the stores).
 * nrv (a constant at each instantiation): the vectors of the tile
 * computed, the first nrv * VW columns of the panel (a narrow last panel,
 * w <= nrv * VW, skips the padding's multiply-adds). */
static inline __attribute__((always_inline)) void
kernel_n(int kc, const float *ap, const float *bp, float alpha, float beta, int first, float *c,
         int ldc, int h, int w, float *t, const float *rb, const float *cb, dmx__act act,
         const int nrv) {
    vf acc[MR][NRV];
    /* C's tile is read (and written) after the k loop: its lines are asked
     * for now, so they arrive while the loop runs. C is row-strided and,
     * for the transformer's wide products, megabytes: without this the
     * loads at the end missed to L3 every tile (2048^3: 106 -> 138
     * GFLOP/s, 2688 x 1152 x 384: 120 -> 147 on an Intel core). */
    if (h == MR && w == NR)
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < NRV; v++) __builtin_prefetch(c + (size_t)i * ldc + v * VW, 1, 3);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < nrv; v++) acc[i][v] = V_ZERO();
    K_UNROLL
    for (int k = 0; k < kc; k++) {
        vf b[NRV];
#pragma GCC unroll 4
        for (int v = 0; v < nrv; v++) b[v] = V_LOAD(bp + (size_t)k * NR + v * VW);
        const float *a = ap + (size_t)k * MR;
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            vf x = V_SET1(a[i]);
#pragma GCC unroll 4
            for (int v = 0; v < nrv; v++) acc[i][v] = V_FMA(x, b[v], acc[i][v]);
        }
    }
    const vf va = V_SET1(alpha), vb = V_SET1(beta);
    const int full = h == MR && w == NR && nrv == NRV;
    float *dst = full ? c : t;
    const int ld = full ? ldc : NR;
    if (!full) /* the existing part of C into the buffer */
        for (int i = 0; i < h; i++) memcpy(t + i * NR, c + (size_t)i * ldc, sizeof(float) * w);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (!full && i >= h) break;
        float *r = dst + (size_t)i * ld;
#pragma GCC unroll 4
        for (int v = 0; v < nrv; v++) {
            vf x = V_MUL(acc[i][v], va);
            if (!first)
                x = V_ADD(x, V_LOAD(r + v * VW));
            else if (rb)
                x = V_ADD(x, V_SET1(rb[i]));
            else if (cb)
                x = V_ADD(x, V_LOAD(cb + v * VW));
            else if (beta != 0.0f)
                x = V_FMA(vb, V_LOAD(r + v * VW), x);
            V_STORE(r + v * VW, x);
        }
    }
    if (act != DMX__ACT_NONE)
        for (int i = 0; i < (full ? MR : h); i++) {
            float *r = dst + (size_t)i * ld;
            for (int v = 0; v < nrv; v++) V_STORE(r + v * VW, act_v(act, V_LOAD(r + v * VW)));
        }
    if (!full)
        for (int i = 0; i < h; i++) memcpy(c + (size_t)i * ldc, t + i * NR, sizeof(float) * w);
}

static void kernel(int kc, const float *ap, const float *bp, float alpha, float beta, int first,
                   float *c, int ldc, int h, int w, float *t, const float *rb, const float *cb,
                   dmx__act act) {
    switch ((w + VW - 1) / VW) {
    case 1: kernel_n(kc, ap, bp, alpha, beta, first, c, ldc, h, w, t, rb, cb, act, 1); break;
#if NRV > 2
    case 2: kernel_n(kc, ap, bp, alpha, beta, first, c, ldc, h, w, t, rb, cb, act, 2); break;
#endif
#if NRV > 3
    case 3: kernel_n(kc, ap, bp, alpha, beta, first, c, ldc, h, w, t, rb, cb, act, 3); break;
#endif
    default: kernel_n(kc, ap, bp, alpha, beta, first, c, ldc, h, w, t, rb, cb, act, NRV); break;
    }
}

/* An operand packed whole (dmx__gemm_pack): the MR-row (A) or NR-column (B)
 * panels of every KC slice, slice k0 at k0 * panels * width. */
static size_t panels(int n, int width) { return (size_t)(n + width - 1) / width; }

/* pa / pb: op(A) / op(B) packed whole (dmx__gemm_pack), or NULL to pack
 * here. */
static int own_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *pa, const float *B, int ldb, const float *pb, float beta,
                     float *C, int ldc, const dmx__gemm_epi *epi) {
    bufs *bf = thread_bufs();
    if (!bf) return -1;
    const float *rbias = epi ? epi->row_bias : NULL, *cbias = epi ? epi->col_bias : NULL;
    const dmx__act act = epi ? epi->act : DMX__ACT_NONE;
    float *cpad = bf->t + MR * NR; /* an edge tile's column biases, padded */
    const int kcb = kc_, mcb = mc_, ncb = nc_;
    for (int j0 = 0; j0 < N; j0 += ncb) {
        int nc = N - j0 < ncb ? N - j0 : ncb;
        for (int k0 = 0; k0 < K; k0 += kcb) {
            int kc = K - k0 < kcb ? K - k0 : kcb;
            const int first = k0 == 0;
            const dmx__act a = k0 + kc >= K ? act : DMX__ACT_NONE;
            const float *bb = pb ? pb + (size_t)k0 * panels(N, NR) * NR + (size_t)j0 * kc : bf->b;
            if (!pb) pack_b(tb, B, ldb, k0, kc, j0, nc, bf->b);
            for (int i0 = 0; i0 < M; i0 += mcb) {
                int mc = M - i0 < mcb ? M - i0 : mcb;
                const float *ab =
                    pa ? pa + (size_t)k0 * panels(M, MR) * MR + (size_t)i0 * kc : bf->a;
                if (!pa) pack_a(ta, A, lda, i0, mc, k0, kc, bf->a);
                for (int jr = 0; jr < nc; jr += NR) {
                    const int w = nc - jr < NR ? nc - jr : NR;
                    const float *cb = first && cbias ? cbias + j0 + jr : NULL;
                    if (cb && w < NR) {
                        memcpy(cpad, cb, sizeof(float) * (size_t)w);
                        memset(cpad + w, 0, sizeof(float) * (size_t)(NR - w));
                        cb = cpad;
                    }
                    for (int ir = 0; ir < mc; ir += MR)
                        kernel(kc, ab + (size_t)ir * kc, bb + (size_t)jr * kc, alpha, beta, first,
                               C + (size_t)(i0 + ir) * ldc + j0 + jr, ldc,
                               mc - ir < MR ? mc - ir : MR, w, bf->t,
                               first && rbias ? rbias + i0 + ir : NULL, cb, a);
                }
            }
        }
    }
    return 0;
}
#endif

/* The epilogue around a product computed without it (OpenBLAS's, or one
 * with nothing to multiply): before, C = the bias, and the product is to
 * be added onto it (the beta returned: 1, or beta without a bias); after,
 * the activation over C (simd.h's vector form, its scalar twin on a row's
 * last N % VW columns). */
static float epi_before(const dmx__gemm_epi *e, int M, int N, float *C, int ldc, float beta) {
    if (!e || (!e->row_bias && !e->col_bias)) return beta;
    for (int i = 0; i < M; i++) {
        float *r = C + (size_t)i * ldc;
        if (e->row_bias)
            for (int j = 0; j < N; j++) r[j] = e->row_bias[i];
        else
            memcpy(r, e->col_bias, sizeof(float) * (size_t)N);
    }
    return 1.0f;
}

static void epi_after(const dmx__gemm_epi *e, int M, int N, float *C, int ldc) {
    if (!e || e->act == DMX__ACT_NONE) return;
    for (int i = 0; i < M; i++) {
        float *r = C + (size_t)i * ldc;
        int j = 0;
#ifdef VW
        for (; j + VW <= N; j += VW) V_STORE(r + j, act_v(e->act, V_LOAD(r + j)));
#endif
        for (; j < N; j++) r[j] = e->act == DMX__ACT_GELU ? dmx__gelu1(r[j]) : r[j] > 0 ? r[j] : 0.0f;
    }
}

size_t dmx__gemm_pack_floats(int side, int n, int K) {
#ifdef OWN
    if (!dmx__gemm_own() || n <= 0 || K <= 0) return 0;
    const int width = side == DMX__GEMM_A ? MR : NR;
    return panels(n, width) * width * (size_t)K;
#else
    (void)side, (void)n, (void)K;
    return 0;
#endif
}

void dmx__gemm_pack_into(int side, int t, int n, int K, const float *X, int ld, float *dst) {
#ifdef OWN
    pthread_once(&choose_once, choose); /* KC, as the products will slice */
    const int width = side == DMX__GEMM_A ? MR : NR, kcb = kc_;
    for (int k0 = 0; k0 < K; k0 += kcb) {
        int kc = K - k0 < kcb ? K - k0 : kcb;
        float *d = dst + (size_t)k0 * panels(n, width) * width;
        if (side == DMX__GEMM_A)
            pack_a(t, X, ld, 0, n, k0, kc, d);
        else
            pack_b(t, X, ld, k0, kc, 0, n, d);
    }
#else
    (void)side, (void)t, (void)n, (void)K, (void)X, (void)ld, (void)dst;
#endif
}

const float *dmx__gemm_pack(int side, int t, int n, int K, const float *X, int ld) {
    const size_t need = dmx__gemm_pack_floats(side, n, K);
    if (!need) return NULL;
#ifdef OWN
    bufs *bf = thread_bufs();
    if (!bf) return NULL;
    if (need > bf->s_cap) { /* grown by half at least: few re-allocations */
        size_t cap = need > bf->s_cap + bf->s_cap / 2 ? need : bf->s_cap + bf->s_cap / 2;
        float *p = aligned_alloc(64, (cap * sizeof(float) + 63) / 64 * 64);
        if (!p) return NULL;
        free(bf->s);
        bf->s = p;
        bf->s_cap = cap;
    }
    dmx__gemm_pack_into(side, t, n, K, X, ld, bf->s);
    return bf->s;
#else
    (void)t, (void)X, (void)ld;
    return NULL;
#endif
}

int dmx__gemm_row_block(size_t row_bytes) {
    pthread_once(&choose_once, choose);
    const int mr =
#ifdef OWN
        own_on ? MR :
#endif
               16;
    size_t rows = (size_t)l2_bytes / 2 / (row_bytes ? row_bytes : 1);
    if (rows > 1024) rows = 1024;
    rows = rows / (size_t)mr * (size_t)mr;
    return rows < (size_t)mr ? mr : (int)rows;
}

void dmx__gemm_packed(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *pa, const float *B, int ldb, const float *pb, float beta,
                      float *C, int ldc, const dmx__gemm_epi *epi) {
    if (M <= 0 || N <= 0) return;
#ifdef OWN
    if (dmx__gemm_own() && K > 0 && alpha != 0.0f &&
        own_sgemm(ta, tb, M, N, K, alpha, A, lda, pa, B, ldb, pb, beta, C, ldc, epi) == 0)
        return;
#endif
    (void)pa, (void)pb;
    beta = epi_before(epi, M, N, C, ldc, beta);
    if (K == 0 || alpha == 0.0f) { /* C = beta * C (BLAS: A and B unread; no
                                    * cblas call, which rejects lda < K = 0) */
        if (beta != 1.0f)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    float *x = C + (size_t)i * ldc + j;
                    *x = beta == 0.0f ? 0.0f : beta * *x;
                }
        epi_after(epi, M, N, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, B, ldb, beta, C, ldc);
    epi_after(epi, M, N, C, ldc);
}

void dmx__gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    dmx__gemm_packed(ta, tb, M, N, K, alpha, A, lda, NULL, B, ldb, NULL, beta, C, ldc, NULL);
}
