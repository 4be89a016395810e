/*
 * ffn.h - internal: a feed-forward block, y = act(x W1^T + b1) W2^T + b2,
 * computed a block of rows at a time.
 *
 * Computed as two products the hidden activation (N x hid: 16 MB for
 * HTDemucs' 2688 frequency tokens) goes out to memory and comes back:
 * the first product writes it slice by slice over its depth, the second
 * reads it whole. Here a block of rows (its hidden part about half of L2,
 * gemm.h's dmx__gemm_row_block) goes through both products while that
 * part is in cache, the two weights packed once for every block.
 * HTDemucs' cross-transformer uses it (RoFormer's feed-forward adds its
 * second product onto the residual in the product itself, beta 1: not
 * this form).
 *
 * Bit for bit the pair dmx__linear_act then dmx__linear: the own kernels
 * compute each element of a block as of the whole (gemm.h). Without them
 * (OpenBLAS builds and runs) it is that pair. Blocks run as parts on the
 * calling thread's team. Leaf module (gemm.c, team.c, ops.c for the
 * fallback and the FLOP count).
 */
#ifndef DMX_ENGINE_FFN_H
#define DMX_ENGINE_FFN_H

#include "arena.h"
#include "gemm.h"

/* y (N, out) = act(x (N, in) W1^T + b1) W2^T + b2, W1 (hid, in), W2
 * (out, hid) row-major (torch's Linear weights); b1, b2 may be NULL; y may
 * be x when in == out (each block reads its rows of x before writing the
 * same rows of y).
 * Scratch from the arena, released before returning. Returns 0, or -1
 * when out of memory. */
int dmx__ffn(dmx__arena *ar, const float *x, int N, int in, const float *w1, const float *b1,
             int hid, dmx__act act, const float *w2, const float *b2, int out, float *y);

#endif
