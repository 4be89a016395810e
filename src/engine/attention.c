/*
 * attention.c - fused softmax attention (see attention.h).
 *
 * Fast path, per head and sequence: the keys are packed once into panels of
 * KT keys (D x KT floats each, the head dimension outermost) so the score
 * kernel streams them with vector loads. Queries go R at a time (a strip):
 * the kernel forms the R x KT scores of one panel in registers (R * KV
 * accumulators: 8 x 3 of AVX-512's 32 registers, 6 x 2 of AVX2's 16; on
 * an Intel core 8 x 3 took 3 % less time than 8 x 2, 8 x 4 spilled) and
 * each row's running maximum as the scores leave the registers; then,
 * PV_CHUNK keys at a time, the chunk's exponentials are taken (ops.c,
 * unscaled: the row's 1 / sum is applied to the R x D output instead) and
 * a second kernel multiplies them, still in L1, into the values, R
 * rows by up to PV_NV vectors of the head dimension at a time, from panels
 * of the passes' columns packed once per head and sequence: each pass
 * streams a compact block rather than a slice of every row of the fused
 * projection (rows kilobytes apart, beyond what a core's stride prefetcher
 * follows): 5 % less attention time on AVX2 (16-column passes over a
 * 48-wide head), 20 % on an Intel core with AVX-512 (one pass). BLAS would
 * pack the whole R x Nk score block and clear its output first.
 *
 * Sums run in a different order than BLAS's, well inside the parity
 * tolerance (the golden tests measure it).
 */
#include "attention.h"

#include "ops.h"
#include "simd.h"
#include "team.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

/* Fallback: queries per block of the two-sgemm path. */
#define QBLOCK 256

#if defined(VW) && defined(V_FMA)
#define FAST 1
#if VW == 16
#define R     8 /* query rows per strip */
#define KV    3 /* vectors of keys per panel (R * KV accumulators) */
#define PV_NV 3 /* vectors of the head dimension per value-kernel pass */
#else
#define R     6
#define KV    2
#define PV_NV 2
#endif
#define KT (KV * VW) /* keys per panel */
#endif

static atomic_int fused_on = 1;

void dmx__attn_set_fused(int on) { atomic_store(&fused_on, on != 0); }

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

static int fast_ok(const dmx__attn *a) {
#ifdef FAST
    return a->D % VW == 0 && atomic_load_explicit(&fused_on, memory_order_relaxed);
#else
    (void)a;
    return 0;
#endif
}

size_t dmx__attn_scratch(const dmx__attn *a) {
    size_t n;
#ifdef FAST
    if (fast_ok(a)) {
        size_t nkp = round_up((size_t)a->Nk, KT);
        n = (size_t)a->D * nkp + (size_t)R * nkp + (size_t)R * a->D + (size_t)R * a->D;
        n += (size_t)a->D * a->Nk; /* value panels */
    } else
#endif
    {
        size_t qb = a->Nq < QBLOCK ? (size_t)a->Nq : QBLOCK;
        n = qb * (size_t)a->Nk + qb;
    }
    return round_up(n, 16); /* each head's scratch starts on a cache line */
}

#ifdef FAST
/* The rows of Q, K and V are a head's D floats in rows of all heads' (a
 * kilobyte and more apart): each is a few lines the stride prefetcher
 * does not follow, so the packing loops ask for the row PF_ROWS ahead
 * (about a memory latency of rows at a packing loop's pace), and each
 * strip for the next strip's query rows. Without it the first load of
 * each row waited on L3 or memory: 9 % of the attention's time on an
 * Intel core. */
#define PF_ROWS 16
static inline void prefetch_row(const float *r, int D) {
    for (int d = 0; d < D; d += 16) __builtin_prefetch(r + d, 0, 3);
}

/* Keys (Nk rows of D, D a multiple of VW) into panels: panel p holds keys
 * p*KT .. p*KT+KT-1 as kp[p * D * KT + d * KT + c]; keys past Nk are
 * zero. */
static void pack_keys(const float *k, int ldk, int Nk, int D, float *kp) {
    int np = (Nk + KT - 1) / KT;
    for (int p = 0; p < np; p++) {
        float *dst = kp + (size_t)p * D * KT;
        if ((p + 1) * KT <= Nk) { /* a whole panel: VW x VW blocks transposed in registers */
            for (int c = 0; c < KT; c += VW) {
                const float *src = k + (size_t)(p * KT + c) * ldk;
                for (int i = 0; i < VW; i++)
                    if (p * KT + c + i + PF_ROWS < Nk)
                        prefetch_row(src + (size_t)(i + PF_ROWS) * ldk, D);
                for (int d = 0; d < D; d += VW)
                    v_transpose(src + d, (size_t)ldk, dst + (size_t)d * KT + c, KT);
            }
            continue;
        }
        for (int c = 0; c < KT; c++) {
            int j = p * KT + c;
            if (j < Nk) {
                const float *src = k + (size_t)j * ldk;
                if (j + PF_ROWS < Nk) prefetch_row(src + (size_t)PF_ROWS * ldk, D);
                for (int d = 0; d < D; d++) dst[(size_t)d * KT + c] = src[d];
            } else {
                for (int d = 0; d < D; d++) dst[(size_t)d * KT + c] = 0.0f;
            }
        }
    }
}

/* Values (Nk rows of D) into column panels, one per value-kernel pass:
 * the pass over columns [d0, d0 + w) reads vp + d0 * Nk, row j at j * w
 * (w a multiple of VW: D is). */
static void pack_values(const float *v, int ldv, int Nk, int D, float *vp) {
    for (int d0 = 0; d0 < D;) {
        const int w = D - d0 >= PV_NV * VW ? PV_NV * VW : VW; /* as head_fast's passes */
        float *dst = vp + (size_t)d0 * Nk;
        for (int j = 0; j < Nk; j++) {
            const float *src = v + (size_t)j * ldv + d0;
            if (j + PF_ROWS < Nk) prefetch_row(src + (size_t)PF_ROWS * ldv, w);
            for (int c = 0; c < w; c += VW) V_STORE(dst + (size_t)j * w + c, V_LOAD(src + c));
        }
        d0 += w;
    }
}

/* s (R x KT, row stride lds) = qt kp: qt holds the strip's R scaled
 * queries transposed (query i's element d at qt[d * R + i]: the kernel's
 * broadcasts then sit at constant offsets from one pointer, where rows D
 * apart took a register each and spilled them), kp one key panel; when
 * mx is not NULL, mx[i] becomes
 * the elementwise maximum of itself and row i's scores (the softmax's
 * maximum, taken while the scores are in registers; the caller leaves the
 * last panel's padding keys out). */
static inline __attribute__((always_inline)) void qk_tile(const float *qt, const float *kp, int D,
                                                          float *s, size_t lds, vf *mx) {
    vf acc[R][KV];
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < KV; v++) acc[i][v] = V_ZERO();
    for (int d = 0; d < D; d++) {
        vf k[KV];
#pragma GCC unroll 4
        for (int v = 0; v < KV; v++) k[v] = V_LOAD(kp + (size_t)d * KT + v * VW);
#pragma GCC unroll 16
        for (int i = 0; i < R; i++) {
            vf b = V_SET1(qt[(size_t)d * R + i]);
#pragma GCC unroll 4
            for (int v = 0; v < KV; v++) acc[i][v] = V_FMA(b, k[v], acc[i][v]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < KV; v++) V_STORE(s + (size_t)i * lds + v * VW, acc[i][v]);
    if (mx)
#pragma GCC unroll 16
        for (int i = 0; i < R; i++)
#pragma GCC unroll 4
            for (int v = 0; v < KV; v++) mx[i] = V_MAX(mx[i], acc[i][v]);
}

/* The tile t (R rows of ldt floats, its first nv vectors) = (first ? 0 :
 * t) + s . v over nk keys: s the strip's chunk (row stride lds), v the
 * pass's value panel from the chunk's first key (row j at j * nv * VW,
 * pack_values). nv is a constant at every call site. The sum over the
 * chunk runs in registers and is then added to t in L1: a long single
 * running sum (thousands of keys) would round several times worse than
 * BLAS's blocked one. */
#define PV_CHUNK 256
static inline __attribute__((always_inline)) void pv_chunk(const float *s, size_t lds,
                                                           const float *v, int nk, float *t,
                                                           int ldt, int first, const int nv) {
    vf a[R][PV_NV];
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int c = 0; c < nv; c++) a[i][c] = V_ZERO();
    for (int j = 0; j < nk; j++) {
        const float *vr = v + (size_t)j * nv * VW;
        vf b[PV_NV];
#pragma GCC unroll 4
        for (int c = 0; c < nv; c++) b[c] = V_LOAD(vr + c * VW);
#pragma GCC unroll 16
        for (int i = 0; i < R; i++) {
            vf p = V_SET1(s[(size_t)i * lds + j]);
#pragma GCC unroll 4
            for (int c = 0; c < nv; c++) a[i][c] = V_FMA(p, b[c], a[i][c]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int c = 0; c < nv; c++) {
            float *ti = t + (size_t)i * ldt + c * VW;
            V_STORE(ti, first ? a[i][c] : V_ADD(V_LOAD(ti), a[i][c]));
        }
}

static void head_fast(const dmx__attn *a, int h, float *scratch) {
    const int D = a->D, Nk = a->Nk, Nq = a->Nq;
    const size_t nkp = round_up((size_t)Nk, KT);
    float *kp = scratch, *s = kp + (size_t)D * nkp, *qt = s + (size_t)R * nkp;
    float *t = qt + R * D; /* R x D: the value kernel's sums */
    float *vp = t + R * D;
    const size_t hd = (size_t)h * D;
    for (int sq = 0; sq < a->nseq; sq++) {
        const float *q = a->q + sq * a->seq_q + hd, *v = a->v + sq * a->seq_v + hd;
        float *o = a->out + sq * a->seq_o + hd;
        const float *g = a->gain ? a->gain + sq * a->seq_gain + h : NULL;
        pack_keys(a->k + sq * a->seq_k + hd, a->ldk, Nk, D, kp);
        pack_values(v, a->ldv, Nk, D, vp);
        for (int i = 0; i < R && i < Nq; i++) prefetch_row(q + (size_t)i * a->ldq, D);
        for (int i0 = 0; i0 < Nq; i0 += R) {
            int nr = Nq - i0 < R ? Nq - i0 : R;
            for (int i = 0; i < R; i++) {
                const float *qi = q + (size_t)(i0 + i) * a->ldq;
                for (int d = 0; d < D; d++) qt[d * R + i] = i < nr ? qi[d] * a->scale : 0.0f;
            }
            for (int i = i0 + R; i < i0 + 2 * R && i < Nq; i++) /* the next strip's */
                prefetch_row(q + (size_t)i * a->ldq, D);
            /* the row maxima over the whole panels in registers, then
             * over the real keys of a last, padded panel */
            vf mxv[R];
            for (int i = 0; i < R; i++) mxv[i] = V_SET1(-INFINITY);
            const size_t full = (size_t)Nk / KT * KT;
            for (size_t p = 0; p < full; p += KT) qk_tile(qt, kp + p * D, D, s + p, nkp, mxv);
            if (full < nkp) qk_tile(qt, kp + full * D, D, s + full, nkp, NULL);
            /* the softmax and the product with the values chunk by chunk
             * of keys: a chunk's exponentials, just written, are in L1
             * when the value kernel reads them (a pass over the whole
             * strip first would leave them in L2, read again by every
             * pass over the head dimension) */
            float mx[R], sum[R];
            for (int i = 0; i < nr; i++) {
                const float *si = s + i * nkp;
                mx[i] = v_hmax(mxv[i]);
                for (int j = (int)full; j < Nk; j++) mx[i] = si[j] > mx[i] ? si[j] : mx[i];
                sum[i] = 0.0f;
            }
            for (int j0 = 0; j0 < Nk; j0 += PV_CHUNK) {
                const int nk = Nk - j0 < PV_CHUNK ? Nk - j0 : PV_CHUNK;
                for (int i = 0; i < nr; i++)
                    sum[i] += dmx__exp_shift_sum(s + i * nkp + j0, nk, mx[i]);
                int d0 = 0;
                for (; d0 + PV_NV * VW <= D; d0 += PV_NV * VW)
                    pv_chunk(s + j0, nkp, vp + (size_t)d0 * Nk + (size_t)j0 * PV_NV * VW, nk,
                             t + d0, D, j0 == 0, PV_NV);
                for (; d0 < D; d0 += VW)
                    pv_chunk(s + j0, nkp, vp + (size_t)d0 * Nk + (size_t)j0 * VW, nk, t + d0, D,
                             j0 == 0, 1);
            }
            float *oi = o + (size_t)i0 * a->ldo;
            for (int i = 0; i < nr; i++) {
                float fi = 1.0f / sum[i];
                if (g) fi *= g[(size_t)(i0 + i) * a->ld_gain];
                const vf vfi = V_SET1(fi);
                for (int d = 0; d < D; d += VW)
                    V_STORE(oi + (size_t)i * a->ldo + d, V_MUL(V_LOAD(t + (size_t)i * D + d), vfi));
            }
        }
    }
}
#endif

/* Two sgemm per block of queries, the softmax between them. */
static void head_gemm(const dmx__attn *a, int h, float *scratch) {
    const int Nq = a->Nq, Nk = a->Nk, D = a->D;
    const int qb = Nq < QBLOCK ? Nq : QBLOCK;
    float *sc = scratch, *inv = sc + (size_t)qb * Nk;
    const size_t hd = (size_t)h * D;
    for (int sq = 0; sq < a->nseq; sq++) {
        const float *q = a->q + sq * a->seq_q + hd, *k = a->k + sq * a->seq_k + hd;
        const float *v = a->v + sq * a->seq_v + hd;
        float *o = a->out + sq * a->seq_o + hd;
        const float *g = a->gain ? a->gain + sq * a->seq_gain + h : NULL;
        for (int i0 = 0; i0 < Nq; i0 += qb) {
            int nq = Nq - i0 < qb ? Nq - i0 : qb;
            dmx__sgemm(0, 1, nq, Nk, D, a->scale, q + (size_t)i0 * a->ldq, a->ldq, k, a->ldk, 0.0f,
                       sc, Nk);
            dmx__softmax_rows_unscaled(sc, nq, Nk, inv);
            float *oi = o + (size_t)i0 * a->ldo;
            dmx__sgemm(0, 0, nq, D, Nk, 1.0f, sc, Nk, v, a->ldv, 0.0f, oi, a->ldo);
            for (int i = 0; i < nq; i++) {
                float fi = inv[i] * (g ? g[(size_t)(i0 + i) * a->ld_gain] : 1.0f);
                for (int d = 0; d < D; d++) oi[(size_t)i * a->ldo + d] *= fi;
            }
        }
    }
}

typedef struct {
    const dmx__attn *a;
    float *scratch;
    size_t per;
} run_ctx;

static void run_head(void *ctx, int h) {
    const run_ctx *c = ctx;
    float *s = c->scratch + (size_t)h * c->per;
#ifdef FAST
    if (fast_ok(c->a)) {
        head_fast(c->a, h, s);
        return;
    }
#endif
    head_gemm(c->a, h, s);
}

void dmx__attn_run(const dmx__attn *a, float *scratch) {
    if (a->heads < 1) return;
    const int fast = fast_ok(a);
    const int prof = fast && dmx__gemm_profiling();
    double t0 = prof ? dmx__seconds_now() : 0;
    run_ctx c = {a, scratch, dmx__attn_scratch(a)};
    dmx__team_for(a->heads, run_head, &c);
    if (fast) { /* the fallback's products count themselves */
        uint64_t calls = (uint64_t)a->heads * (uint64_t)a->nseq;
        dmx__flops_add(calls * 4ull * (uint64_t)a->Nq * (uint64_t)a->Nk * (uint64_t)a->D);
        if (prof)
            dmx__gemm_profile_add(DMX__ATTN_SHAPE, DMX__ATTN_SHAPE, a->Nq, a->Nk, a->D, calls,
                                  dmx__seconds_now() - t0);
    }
}
