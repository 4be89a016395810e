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
 *   - DEMIX_GEMM=openblas (a second ctest run) keeps OpenBLAS, and then
 *     nothing is packed ahead.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
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
            for (int side = DMX__GEMM_A; side <= DMX__GEMM_B; side++) {
                float *Cp = malloc(sizeof(float) * nc);
                REQUIRE(Cp);
                memcpy(Cp, C0, sizeof(float) * nc);
                const float *pk = side == DMX__GEMM_A ? dmx__gemm_pack(side, ta, s.M, s.K, A, lda)
                                                      : dmx__gemm_pack(side, tb, s.N, s.K, B, ldb);
                CHECK_MSG(!pk == (!dmx__gemm_own() || s.K == 0),
                          "M %d N %d K %d: packed %s with own kernels %d", s.M, s.N, s.K,
                          pk ? "ahead" : "nothing", dmx__gemm_own());
                dmx__gemm_packed(ta, tb, s.M, s.N, s.K, s.alpha, A, lda,
                                 side == DMX__GEMM_A ? pk : NULL, B, ldb,
                                 side == DMX__GEMM_B ? pk : NULL, s.beta, Cp, ldc);
                CHECK_MSG(memcmp(Cp, C, sizeof(float) * nc) == 0,
                          "M %d N %d K %d ta %d tb %d: %s packed ahead differs", s.M, s.N, s.K, ta,
                          tb, side == DMX__GEMM_A ? "A" : "B");
                free(Cp);
            }
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
    return dmx_test_done("test_gemm");
}
