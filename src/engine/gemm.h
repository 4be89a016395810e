/*
 * gemm.h - internal: one single-threaded sgemm, row-major, the BLAS
 * contract (C = alpha op(A) op(B) + beta C; with beta = 0, C is only
 * written). Every product of the engine ends here (ops.c's dmx__sgemm,
 * team.c's parts of a cut product).
 *
 * gemm.c's own kernels compute it on a build with AVX2 or AVX-512 FMA
 * vectors (OpenBLAS without them); not by default in an AddressSanitizer
 * build: instrumented they are slower than OpenBLAS. DEMIX_GEMM=openblas
 * or =own forces one (benchmarks, tests). The own kernels' pack buffers are per thread and go
 * to a pool when the thread ends, for the next one. Leaf module.
 */
#ifndef DMX_ENGINE_GEMM_H
#define DMX_ENGINE_GEMM_H

#include <stddef.h>

void dmx__gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* The parts of a cut product (team.c) share one operand: packed once, in
 * the own kernels' layout, instead of by every part. dmx__gemm_pack packs
 * op(A) (side DMX__GEMM_A: n = M rows, transposed when t) or op(B) (side
 * DMX__GEMM_B: n = N columns) of depth K whole, into a buffer of the
 * calling thread's that stays valid until its next dmx__gemm_pack; NULL
 * when the own kernels are off (or out of memory): compute unpacked then.
 * dmx__gemm_packed is dmx__gemm given op(A) or op(B) packed (pa / pb, the
 * other NULL or both NULL): the same results bit for bit, with the whole
 * packed operand (no row or column offset into it), and an epilogue. */
enum { DMX__GEMM_A, DMX__GEMM_B };
const float *dmx__gemm_pack(int side, int t, int n, int K, const float *X, int ld);
/* The same packing into the caller's memory, for an operand the caller
 * keeps packed across products (a feed-forward block's two weights, for
 * all its row blocks): dmx__gemm_pack_floats is the floats it takes, 0
 * when the own kernels are off (or n or K is 0): compute unpacked then;
 * dmx__gemm_pack_into fills dst with that many. */
size_t dmx__gemm_pack_floats(int side, int n, int K);
void dmx__gemm_pack_into(int side, int t, int n, int K, const float *X, int ld, float *dst);
/* Rows of a block of products whose C rows take row_bytes each, so that
 * the block's C fills about half of L2 (where the next product of the
 * block reads it): whole MR-row panels of the own kernels, at least one,
 * at most 1024 rows. */
int dmx__gemm_row_block(size_t row_bytes);

/* What a product does to its result on the way out (epi NULL: nothing):
 * C = act(alpha op(A) op(B) + bias), a bias of one value per row of C
 * (row_bias, M values) or per column (col_bias, N values) taking beta * C's
 * place. The own kernels apply it to each tile while it is in L1 (the bias
 * with the first KC slice, the activation after the last): no pass that
 * writes the bias into C first, none that reads C again to activate it.
 * Around OpenBLAS those passes run before and after the product. The bias
 * is rounded in alike either way (one addition onto the first slice's
 * sums); the activation is simd.h's vector form (around OpenBLAS its
 * scalar twin on a row's last N % VW columns). */
typedef enum { DMX__ACT_NONE, DMX__ACT_GELU, DMX__ACT_RELU } dmx__act;
typedef struct dmx__gemm_epi {
    const float *row_bias, *col_bias; /* at most one of them */
    dmx__act act;
} dmx__gemm_epi;

void dmx__gemm_packed(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *pa, const float *B, int ldb, const float *pb, float beta,
                      float *C, int ldc, const dmx__gemm_epi *epi);

/* 1 where gemm.c's own kernels compute the products (decided once). */
int dmx__gemm_own(void);
/* The own kernels' blocks (depth KC, rows of A MC, columns of B NC),
 * chosen once from the CPU's L1d and L2 sizes; zeros where the build has no
 * own kernels. The same for every thread of the process, so a product's
 * sums are blocked alike whoever computes it. */
void dmx__gemm_blocks(int *kc, int *mc, int *nc);
/* The rule behind them: KC and MC for an L1d of l1 and an L2 of l2 bytes
 * (sizes <= 0 or implausible: unknown). */
void dmx__gemm_blocks_for(long l1, long l2, int *kc, int *mc);
/* The L2 size read at start (1 MiB where the system does not say, or says
 * something implausible): what the engine's blocked memory passes size
 * their scratch by. */
long dmx__gemm_l2_bytes(void);
/* 1 where this build has the own kernels at all (FMA vectors of 8 or 16
 * floats), whether or not they were chosen. */
int dmx__gemm_own_built(void);

#endif
