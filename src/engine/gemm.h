/*
 * gemm.h - internal: one single-threaded sgemm, row-major, the BLAS
 * contract (C = alpha op(A) op(B) + beta C; with beta = 0, C is only
 * written). Every product of the engine ends here (ops.c's dmx__sgemm,
 * team.c's parts of a cut product).
 *
 * OpenBLAS computes it, except on an AVX-512 build whose OpenBLAS runs
 * AVX2 kernels: then gemm.c's own AVX-512 kernels do, about 1.6x as fast
 * (not by default in an AddressSanitizer build: instrumented they are
 * slower than OpenBLAS). DEMIX_GEMM=openblas or =own forces one
 * (benchmarks, tests). Leaf module.
 */
#ifndef DMX_ENGINE_GEMM_H
#define DMX_ENGINE_GEMM_H

void dmx__gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* 1 where gemm.c's own kernels compute the products (decided once). */
int dmx__gemm_own(void);

#endif
