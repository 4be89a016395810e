/*
 * attention.h - internal: softmax attention, fused (scores, softmax and the
 * product with the values in one pass over a strip of queries).
 *
 * out_i = gain_i * sum_j softmax_j(scale * q_i . k_j) v_j for each query
 * row i of each sequence: HTDemucs' multi-head attention (transformer.c)
 * and RoFormer's (roformer.c, with its per-head gates as `gain`).
 *
 * Where the build has AVX-512 or AVX2 with FMA and the head dimension is a
 * multiple of the vector width, the scores of a strip of a few queries are
 * formed by a register-tiled kernel against keys packed once per head, kept
 * in cache through the softmax, and multiplied into the values there: no
 * BLAS packing of the score matrix, no pass over it in memory. Elsewhere
 * the same result comes from two sgemm per block of queries.
 *
 * Leaf module (ops.c for the fallback products and the FLOP count, team.c
 * to share heads among a team's threads).
 */
#ifndef DMX_ENGINE_ATTENTION_H
#define DMX_ENGINE_ATTENTION_H

#include <stddef.h>

/* `heads` heads over `nseq` independent sequences. Row r of sequence s of
 * the queries of head h is q + s * seq_q + r * ldq + h * D (D floats: the
 * heads side by side in a row, as a fused projection lays them out);
 * likewise k, v and out; the optional gain (NULL for none) of that row is
 * gain[s * seq_gain + r * ld_gain + h]. */
typedef struct {
    int heads, nseq, Nq, Nk, D;
    float scale;
    const float *q, *k, *v;
    int ldq, ldk, ldv;
    size_t seq_q, seq_k, seq_v;
    float *out;
    int ldo;
    size_t seq_o;
    const float *gain;
    int ld_gain;
    size_t seq_gain;
} dmx__attn;

/* Scratch floats of one head. */
size_t dmx__attn_scratch(const dmx__attn *a);

/* Computes every head, side by side on the calling thread's team if it has
 * one; `scratch` holds heads * dmx__attn_scratch(a) floats. The result
 * does not depend on the thread count. */
void dmx__attn_run(const dmx__attn *a, float *scratch);

/* Tests: 0 makes every call take the two-sgemm path (1 restores). */
void dmx__attn_set_fused(int on);

#endif
