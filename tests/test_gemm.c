/*
 * test_gemm.c - gemm.c's products (its own kernels where the build has
 * them: DEMIX_GEMM=own, also under AddressSanitizer) against a float64
 * reference:
 *   - every transpose combination on shapes past each block size (M > MC,
 *     N > NC, K > KC, the last shape from the blocks this CPU's caches
 *     chose) and off every tile edge, leading dimensions wider
 *     than the rows, alpha and beta other than 1 and 0;
 *   - beta = 0 writes C without reading it (C starts as NaN), K = 0 and
 *     alpha = 0 give beta * C, nothing outside C is touched;
 *   - an operand packed whole once (dmx__gemm_pack, what the parts of a cut
 *     product share) gives the same C bit for bit, either side;
 *   - the epilogue (a bias per row or per column of C in beta's place, then
 *     GELU or ReLU) on the same shapes and transposes, packed ahead or not,
 *     and through ops.c's cut products (each part given its share of the
 *     bias): against the float64 reference, C never read under a bias;
 *   - DEMIX_GEMM=openblas (a second ctest run) keeps OpenBLAS, and then
 *     nothing is packed ahead (the epilogue then runs around OpenBLAS).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "ops.h"
#include "testutil.h"

typedef struct shape {
    int M, N, K;
    float alpha, beta;
} shape;

static shape shapes[] = {
    {1, 1, 1, 1.0f, 0.0f},        {7, 65, 129, 1.0f, 0.0f},    {300, 70, 300, 0.5f, 0.25f},
    {13, 2100, 40, 1.0f, 1.0f},   {290, 130, 5, 2.0f, 0.0f},   {6, 64, 128, 1.0f, 0.0f},
    {61, 4200, 33, 1.0f, -1.0f},  {5, 7, 0, 1.0f, 0.5f},       {9, 11, 13, 0.0f, 2.0f},
    /* last panels two and three vectors wide (gemm.c kernel_n) */
    {50, 84, 70, 1.0f, 0.5f},     {12, 104, 300, 1.0f, 0.0f},  {7, 88, 20, 1.0f, 0.0f},
    {0, 0, 0, 1.0f, 0.5f}, /* past this CPU's blocks: set in main */
};
#define NS  (int)(sizeof shapes / sizeof shapes[0])
#define PAD 3

static float frand(unsigned *st) {
    *st = *st * 1664525u + 1013904223u;
    return (float)((*st >> 8) & 0xffff) / 65536.0f - 0.5f;
}


/* C from the same product with op(A), then op(B), packed whole ahead
 * (dmx__gemm_pack): bit for bit the same (nothing packed without the own
 * kernels, or with K = 0). */
static void check_packed_same(const char *what, int ta, int tb, const shape *s, float beta,
                              const float *A, int lda, const float *B, int ldb, const float *C0,
                              const float *C, int ldc, const dmx__gemm_epi *e) {
    const size_t nc = (size_t)s->M * ldc;
    for (int side = DMX__GEMM_A; side <= DMX__GEMM_B; side++) {
        float *Cp = malloc(sizeof(float) * nc);
        REQUIRE(Cp);
        memcpy(Cp, C0, sizeof(float) * nc);
        const float *pk = side == DMX__GEMM_A ? dmx__gemm_pack(side, ta, s->M, s->K, A, lda)
                                              : dmx__gemm_pack(side, tb, s->N, s->K, B, ldb);
        CHECK_MSG(!pk == (!dmx__gemm_own() || s->K == 0),
                  "%s M %d N %d K %d: packed %s with own kernels %d", what, s->M, s->N, s->K,
                  pk ? "ahead" : "nothing", dmx__gemm_own());
        dmx__gemm_packed(ta, tb, s->M, s->N, s->K, s->alpha, A, lda,
                         side == DMX__GEMM_A ? pk : NULL, B, ldb, side == DMX__GEMM_B ? pk : NULL,
                         beta, Cp, ldc, e);
        CHECK_MSG(memcmp(Cp, C, sizeof(float) * nc) == 0,
                  "%s M %d N %d K %d ta %d tb %d: %s packed ahead differs", what, s->M, s->N,
                  s->K, ta, tb, side == DMX__GEMM_A ? "A" : "B");
        free(Cp);
    }
}

static double act_ref(dmx__act act, double r) {
    if (act == DMX__ACT_GELU) return 0.5 * r * (1.0 + erf(r / sqrt(2.0)));
    if (act == DMX__ACT_RELU) return r > 0 ? r : 0;
    return r;
}

/* C (M x N, ldc; from C0) against act(alpha op(A) op(B) + bias or beta C0)
 * in float64; the padding past N untouched, nothing non-finite. */
static void check_epi(const char *what, int ta, int tb, const shape *s, const float *A, int lda,
                      const float *B, int ldb, const float *C0, const float *C, int ldc,
                      const dmx__gemm_epi *e) {
    double err = 0, mx = 0;
    int pad_ok = 1, finite = 1;
    for (int i = 0; i < s->M; i++)
        for (int j = 0; j < ldc; j++) {
            size_t k = (size_t)i * ldc + j;
            if (j >= s->N) {
                pad_ok &= memcmp(&C[k], &C0[k], sizeof(float)) == 0;
                continue;
            }
            double r = 0;
            for (int p = 0; p < s->K; p++)
                r += (double)(ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]) *
                     (tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j]);
            r *= s->alpha;
            if (e->row_bias)
                r += e->row_bias[i];
            else if (e->col_bias)
                r += e->col_bias[j];
            else if (s->beta != 0.0f)
                r += (double)s->beta * C0[k];
            r = act_ref(e->act, r);
            finite &= isfinite(C[k]);
            err = fmax(err, fabs(r - C[k]));
            mx = fmax(mx, fabs(r));
        }
    CHECK_MSG(pad_ok, "%s M %d N %d K %d ta %d tb %d: wrote outside C", what, s->M, s->N, s->K, ta,
              tb);
    CHECK_MSG(finite, "%s M %d N %d K %d ta %d tb %d: C read under a bias or beta = 0", what, s->M,
              s->N, s->K, ta, tb);
    CHECK_MSG(err <= 2e-6 * (mx > 1 ? mx : 1) * (s->K > 64 ? sqrt(s->K / 64.0) : 1),
              "%s M %d N %d K %d ta %d tb %d bias %s act %d: error %g (max %g)", what, s->M, s->N,
              s->K, ta, tb, e->row_bias ? "row" : e->col_bias ? "column" : "none", (int)e->act,
              err, mx);
}

/* One shape with an epilogue: direct, packed ahead (either side), cut. */
#define NEV 5
static void epi_case(int si, int tr, int ev, const shape *sp) {
    const shape s = *sp;
    const int ta = tr & 1, tb = tr >> 1;
    int ar = ta ? s.K : s.M, ac = ta ? s.M : s.K, br = tb ? s.N : s.K, bc = tb ? s.K : s.N;
    int lda = ac + PAD, ldb = bc + PAD, ldc = s.N + PAD;
    unsigned seed = 7u + (unsigned)(si * 16 + tr * 4 + ev);
    size_t na = (size_t)(ar ? ar : 1) * lda, nb = (size_t)(br ? br : 1) * ldb,
           nc = (size_t)s.M * ldc;
    float *A = malloc(sizeof(float) * na), *B = malloc(sizeof(float) * nb);
    float *C = malloc(sizeof(float) * nc), *C0 = malloc(sizeof(float) * nc);
    float *rb = malloc(sizeof(float) * (size_t)(s.M + 1)), *cb = malloc(sizeof(float) * (size_t)(s.N + 1));
    REQUIRE(A && B && C && C0 && rb && cb);
    for (size_t i = 0; i < na; i++) A[i] = frand(&seed);
    for (size_t i = 0; i < nb; i++) B[i] = frand(&seed);
    for (int i = 0; i < s.M; i++) rb[i] = 4.0f * frand(&seed);
    for (int j = 0; j < s.N; j++) cb[j] = 4.0f * frand(&seed);
    /* ev: row bias + GELU, column bias, column bias + ReLU, GELU alone,
     * row bias + ReLU */
    static const struct {
        int bias;
        dmx__act act;
    } evs[NEV] = {{1, DMX__ACT_GELU},
                  {2, DMX__ACT_NONE},
                  {2, DMX__ACT_RELU},
                  {0, DMX__ACT_GELU},
                  {1, DMX__ACT_RELU}};
    const dmx__gemm_epi e = {evs[ev].bias == 1 ? rb : NULL, evs[ev].bias == 2 ? cb : NULL,
                             evs[ev].act};
    /* C must not be read: NaN there (a huge value under ReLU, whose max
     * would turn a NaN into 0) */
    const int unread = evs[ev].bias || s.beta == 0.0f;
    const float poison = evs[ev].act == DMX__ACT_RELU ? 1e30f : NAN;
    for (size_t i = 0; i < nc; i++) C0[i] = unread && i % ldc < (size_t)s.N ? poison : frand(&seed);
    shape sb = s;
    if (evs[ev].bias) sb.beta = 0.0f; /* the bias takes beta's place */
    memcpy(C, C0, sizeof(float) * nc);
    dmx__gemm_packed(ta, tb, s.M, s.N, s.K, s.alpha, A, lda, NULL, B, ldb, NULL, sb.beta, C, ldc,
                     &e);
    check_epi("epilogue", ta, tb, &sb, A, lda, B, ldb, C0, C, ldc, &e);
    check_packed_same("epilogue", ta, tb, &s, sb.beta, A, lda, B, ldb, C0, C, ldc, &e);
    /* ops.c's entry: a product this large is cut into parts (team.c) */
    memcpy(C, C0, sizeof(float) * nc);
    dmx__sgemm_epi(ta, tb, s.M, s.N, s.K, s.alpha, A, lda, B, ldb, sb.beta, C, ldc, &e);
    check_epi("cut epilogue", ta, tb, &sb, A, lda, B, ldb, C0, C, ldc, &e);
    free(A), free(B), free(C), free(C0), free(rb), free(cb);
}

int main(void) {
    /* before the first product (read once); ctest also runs this test with
     * DEMIX_GEMM=openblas, which must keep OpenBLAS */
    const char *forced = getenv("DEMIX_GEMM");
    if (!forced) setenv("DEMIX_GEMM", "own", 1);
    if (forced && !strcmp(forced, "openblas"))
        CHECK_MSG(!dmx__gemm_own(), "DEMIX_GEMM=openblas did not keep OpenBLAS");
    /* A build for FMA vectors must have the own kernels, and asking for
     * them must get them: the compiler's target, not simd.h, says which
     * builds these are, so a build that silently lost them fails here. */
#if defined(__FMA__) && (defined(__AVX2__) || defined(__AVX512F__))
    CHECK_MSG(dmx__gemm_own_built(), "an FMA build without gemm.c's own kernels");
    if (!forced || !strcmp(forced, "own"))
        CHECK_MSG(dmx__gemm_own(), "DEMIX_GEMM=own did not choose the own kernels");
#endif
    printf("own kernels: %s\n", dmx__gemm_own() ? "yes" : "no (OpenBLAS checked)");
    int kc, mc, nc;
    dmx__gemm_blocks(&kc, &mc, &nc);
    /* the L2 size the engine's scratch blocks follow: this system's, or
     * 1 MiB, always a plausible one */
    const long l2 = dmx__gemm_l2_bytes();
    CHECK_MSG(l2 >= 65536 && l2 <= (64L << 20), "L2 %ld bytes", l2);
    printf("L2: %ld KiB\n", l2 / 1024);
    if (dmx__gemm_own_built()) {
        CHECK_MSG(kc >= 16 && mc >= 4 && nc >= 16, "blocks KC %d MC %d NC %d", kc, mc, nc);
        printf("blocks: KC %d MC %d NC %d\n", kc, mc, nc);
        shapes[NS - 1].M = mc + 5, shapes[NS - 1].N = nc + 3, shapes[NS - 1].K = kc + 9;
        /* the rule: tuned sizes on the tuning core's caches, larger or
         * unknown ones; in proportion on smaller ones (32 KiB L1d:
         * Skylake-X, Zen 1-4; 512 KiB L2: Zen 1-3) */
        static const struct {
            long l1, l2;
            int kc, mc;
        } rule[] = {{49152, 1048576, 128, 288}, {65536, 2097152, 128, 288}, {0, -1, 128, 288},
                    {32768, 1048576, 80, 288},  {32768, 524288, 80, 144}};
        for (size_t i = 0; i < sizeof rule / sizeof rule[0]; i++) {
            int k, m;
            dmx__gemm_blocks_for(rule[i].l1, rule[i].l2, &k, &m);
            CHECK_MSG(k == rule[i].kc && m == rule[i].mc,
                      "L1d %ld L2 %ld: KC %d MC %d, expected %d %d", rule[i].l1, rule[i].l2, k, m,
                      rule[i].kc, rule[i].mc);
        }
    } else {
        shapes[NS - 1].M = 3, shapes[NS - 1].N = 5, shapes[NS - 1].K = 7;
    }
    for (int si = 0; si < NS; si++)
        for (int tr = 0; tr < 4; tr++) {
            const shape s = shapes[si];
            const int ta = tr & 1, tb = tr >> 1;
            int ar = ta ? s.K : s.M, ac = ta ? s.M : s.K, br = tb ? s.N : s.K, bc = tb ? s.K : s.N;
            int lda = ac + PAD, ldb = bc + PAD, ldc = s.N + PAD;
            unsigned seed = 99u + (unsigned)(si * 4 + tr);
            size_t na = (size_t)(ar ? ar : 1) * lda, nb = (size_t)(br ? br : 1) * ldb,
                   nc = (size_t)s.M * ldc;
            float *A = malloc(sizeof(float) * na), *B = malloc(sizeof(float) * nb);
            float *C = malloc(sizeof(float) * nc), *C0 = malloc(sizeof(float) * nc);
            REQUIRE(A && B && C && C0);
            for (size_t i = 0; i < na; i++) A[i] = frand(&seed);
            for (size_t i = 0; i < nb; i++) B[i] = frand(&seed);
            for (size_t i = 0; i < nc; i++)
                C0[i] = (s.beta == 0.0f && i % ldc < (size_t)s.N) ? NAN : frand(&seed);
            memcpy(C, C0, sizeof(float) * nc);
            dmx__gemm(ta, tb, s.M, s.N, s.K, s.alpha, A, lda, B, ldb, s.beta, C, ldc);
            check_packed_same("plain", ta, tb, &s, s.beta, A, lda, B, ldb, C0, C, ldc, NULL);
            double err = 0, mx = 0;
            int pad_ok = 1, finite = 1;
            for (int i = 0; i < s.M; i++)
                for (int j = 0; j < ldc; j++) {
                    size_t k = (size_t)i * ldc + j;
                    if (j >= s.N) {
                        pad_ok &= memcmp(&C[k], &C0[k], sizeof(float)) == 0;
                        continue;
                    }
                    double r = 0;
                    for (int p = 0; p < s.K; p++)
                        r += (double)(ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]) *
                             (tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j]);
                    r = s.alpha * r + (s.beta == 0.0f ? 0.0 : (double)s.beta * C0[k]);
                    finite &= isfinite(C[k]);
                    err = fmax(err, fabs(r - C[k]));
                    mx = fmax(mx, fabs(r));
                }
            CHECK_MSG(pad_ok, "M %d N %d K %d ta %d tb %d: wrote outside C", s.M, s.N, s.K, ta, tb);
            CHECK_MSG(finite, "M %d N %d K %d ta %d tb %d: C read with beta = 0", s.M, s.N, s.K, ta,
                      tb);
            CHECK_MSG(err <= 2e-6 * (mx > 1 ? mx : 1) * (s.K > 64 ? sqrt(s.K / 64.0) : 1),
                      "M %d N %d K %d ta %d tb %d: error %g (max %g)", s.M, s.N, s.K, ta, tb, err,
                      mx);
            free(A), free(B), free(C), free(C0);
        }
    for (int si = 0; si < NS; si++)
        for (int tr = 0; tr < 4; tr++) epi_case(si, tr, (si + tr) % NEV, &shapes[si]);
    /* cut along M (row biases split) and along N (column biases split) */
    static const shape cut[] = {{1030, 260, 40, 1.0f, 0.0f}, {70, 1500, 50, 0.5f, 0.0f}};
    for (int ci = 0; ci < 2; ci++)
        for (int ev = 0; ev < NEV; ev++) epi_case(NS + ci, ev % 4, ev, &cut[ci]);
    return dmx_test_done("test_gemm");
}
