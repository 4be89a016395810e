/*
 * ops.h - internal: the numeric kernels HTDemucs is built from.
 *
 * Tensors are plain float arrays in PyTorch's layout with batch 1:
 *   images (C, H, W) — for the frequency branch H = frequency, W = time;
 *   sequences (C, T) are images with H = 1;
 *   token matrices (N, C) row-major for the transformer.
 * Convolutions are im2col + GEMM over blocks of output columns (a quarter
 * of L2 each), so the im2col scratch stays bounded however large the image,
 * or Winograd / direct kernels where they apply. Scratch comes from the
 * caller's arena; nothing here calls malloc.
 */
#ifndef DMX_ENGINE_OPS_H
#define DMX_ENGINE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "gemm.h"

/* Geometry of a 2D convolution over (C, H, W). 1D convolutions use H = 1,
 * kh = 1; "frequency" convolutions use kw = 1. */
typedef struct dmx__conv_geom {
    int cin, cout;
    int kh, kw; /* kernel */
    int sh, sw; /* stride */
    int ph, pw; /* zero padding on both sides */
    int dh, dw; /* dilation */
} dmx__conv_geom;

/* Output size of a convolution along one axis. */
static inline int dmx__conv_out(int in, int k, int s, int p, int d) {
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* y (cout, Ho, Wo) = conv(x (cin, H, W), w (cout, cin, kh, kw)) + b (cout) (b may be NULL).
 * Returns 0, or -1 if the arena cannot provide scratch. */
int dmx__conv2d(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                const float *w, const float *b, float *y);
/* The same followed by act over y: applied where the convolution writes
 * each output row on the im2col path (the product's epilogue) and the
 * strided Winograd one (its output transform), rather than in a pass of
 * its own over the whole output; a pass after on the direct and the 2D
 * Winograd paths. */
int dmx__conv2d_act(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                    const float *w, const float *b, dmx__act act, float *y);

/* y (cout/2, Ho, Wo) = GLU over channels of conv(x) + b, computed in blocks of
 * columns so the cout-channel result is never materialised whole. (Only
 * valid when no normalisation sits between the convolution and the GLU.) */
int dmx__conv2d_glu(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                    const float *w, const float *b, float *y);

/* Transposed convolution without padding: y (cout, Ho, Wo) with
 * Ho = (H-1)*sh + kh, Wo = (W-1)*sw + kw, from x (cin, H, W) and
 * w (cin, cout, kh, kw) (PyTorch ConvTranspose layout), plus bias. */
int dmx__conv_tr2d(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                   const float *w, const float *b, float *y);
/* Same with the weight's rows `ldw` floats apart (>= cout*kh*kw): a slice
 * of a wider layer's output channels, w and b pointing at its first one. */
int dmx__conv_tr2d_ld(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                      const float *w, int ldw, const float *b, float *y);
/* dmx__conv_tr2d_ld keeping rows [crop, Ho - crop) of each output
 * channel, then act: y (cout, Ho - 2 crop, Wo), though y must hold the
 * untrimmed (cout, Ho, Wo); -1 also for a crop that leaves no row. Where the Winograd output transform computes
 * the output (winograd_stride.h) the rows cropped away are never written
 * and act is applied as each row is (as dmx__conv2d_act's); elsewhere the
 * crop and act are passes after. */
int dmx__conv_tr2d_crop(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                        const float *w, int ldw, const float *b, int crop, dmx__act act,
                        float *y);

/* GroupNorm over x (C, L) in place: `groups` groups of C/groups channels,
 * statistics over (C/groups, L), biased variance; then per-channel affine
 * (gamma/beta may be NULL). `rows` > 1 applies it independently to each of
 * `rows` slices (C, L) that are interleaved as x[c, r, l] (layout (C, rows, L)),
 * which is how upstream normalises each frequency row in DConv. */
void dmx__group_norm(float *x, int C, int rows, int L, int groups, const float *gamma,
                     const float *beta, float eps);
/* The same, act applied to each value as it is normalised (one pass where
 * a norm then an activation took two). */
void dmx__group_norm_act(float *x, int C, int rows, int L, int groups, const float *gamma,
                         const float *beta, float eps, dmx__act act);

/* LayerNorm over the last dim of y (N, C) = LN(x (N, C)); x == y allowed. */
void dmx__layer_norm(const float *x, float *y, int N, int C, const float *gamma, const float *beta,
                     float eps);

/* Statistics in double, vectorised (lanes of doubles, so the order of the
 * sums differs from a plain loop only far below float precision):
 * *s += sum p[i] and *s2 += sum p[i]^2 over n floats; dmx__sum_sqdev
 * returns sum (p[i] - mean)^2. */
void dmx__sum_sq(const float *p, size_t n, double *s, double *s2);
double dmx__sum_sqdev(const float *p, size_t n, double mean);
/* torch's x.mean() and x.std() (unbiased) of n floats, in double: the sum,
 * then the squares about the mean (the models' input normalisation). */
void dmx__mean_std(const float *x, size_t n, float *mean, float *std);

/* GroupNorm's statistics, the one rule every norm here uses: from the sums
 * s and s2 over cnt values, *mean = s / cnt and *rstd = 1 / sqrt(var + eps)
 * with the biased variance s2 / cnt - mean^2 clamped at 0 (in double; the
 * activations are O(1), so the one-pass variance keeps ~1e-12). */
void dmx__norm_stats(double s, double s2, double cnt, double eps, float *mean, float *rstd);

/* Exact (erf) GELU in place. */
void dmx__gelu(float *x, size_t n);
void dmx__relu(float *x, size_t n);
/* act in place: dmx__gelu, dmx__relu, or nothing. */
void dmx__act_apply(float *x, size_t n, dmx__act act);
/* tanh in place (libmvec's vector tanhf where available: a few ulp). */
void dmx__tanh(float *x, size_t n);

/* GLU over channels: y (C/2, L) = x[:C/2] * sigmoid(x[C/2:]) for x (C, L). */
void dmx__glu(const float *x, float *y, int C, size_t L);
/* The end of a DConv layer in one pass: for c < C and i < n,
 * y[c * ystride + i] += scale[c] * GLU of the normalised pair
 * a = (h[c * hstride + i] - mean) * rstd * gamma[c] + beta[c] and
 * g likewise from channel c + C (gamma/beta may be NULL: 1 and 0) — what
 * dmx__group_norm's affine step, dmx__glu and the LayerScale residual add
 * compute in three passes, the same arithmetic up to a few ulp. */
void dmx__norm_glu_add(const float *h, size_t hstride, int C, size_t n, float mean, float rstd,
                       const float *gamma, const float *beta, const float *scale, float *y,
                       size_t ystride);
/* y (C, L) += b[c] per channel; no-op when b is NULL. */
void dmx__add_bias(float *y, const float *b, int C, size_t L);

/* Linear: y (N, out) = x (N, in) @ w (out, in)^T + b (b may be NULL);
 * dmx__linear_act then applies act, in the product's epilogue (gemm.h). */
void dmx__linear(const float *x, int N, int in, const float *w, const float *b, int out, float *y);
void dmx__linear_act(const float *x, int N, int in, const float *w, const float *b, int out,
                     float *y, dmx__act act);

/* Softmax of each of `rows` rows of length n, in place. */
void dmx__softmax_rows(float *x, int rows, int n);
/* The same without its last pass: each row becomes exp(x - max) (times a
 * factor within |max| 2^-23 of 1, the same across the row, which its 1 /
 * sum cancels) and inv[r] = 1 / its sum. Attention scales the (much
 * narrower) product of these rows with the values by inv instead of the
 * rows themselves. */
void dmx__softmax_rows_unscaled(float *x, int rows, int n, float *inv);
/* The same for one row whose maximum the caller already knows (attention
 * takes it while forming the scores): one pass instead of two. */
void dmx__softmax_row_unscaled_max(float *row, int n, float mx, float *inv);
/* That row's pass over a piece of it: row[j] = exp(row[j] - mx) for j < n,
 * returning their sum (dmx__softmax_row_unscaled_max's inv is 1 / it). A
 * row cut into pieces of multiples of 16 floats (the last excepted) gets
 * each value bit for bit as from one pass over the whole row. */
float dmx__exp_shift_sum(float *row, int n, float mx);

/* y[i] += a[i] for n elements. */
void dmx__add(float *y, const float *a, size_t n);

/* C = alpha * op(A) op(B) + beta * C, row-major (ta/tb: transpose A/B);
 * counts the FLOPs for dmx__flop_count(). */
void dmx__sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);
/* dmx__sgemm with gemm.h's epilogue (a bias per row or column, then an
 * activation) done while each tile of C is in cache; epi NULL: none. */
void dmx__sgemm_epi(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc,
                    const dmx__gemm_epi *epi);
/* C (M, N; leading dimension ldc) = op(A) op(B) + bias[i] on row i (bias
 * may be NULL), the bias in the product's epilogue (added onto the first
 * KC slice's sums, gemm.h), without a pass of its own over C. */
void dmx__sgemm_rowbias(int ta, int tb, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, const float *bias, float *C, int ldc);

/* FLOPs of every dmx__sgemm (and fused kernel that adds its own) since the
 * process started. */
uint64_t dmx__flop_count(void);
void dmx__flops_add(uint64_t flops);
/* Monotonic seconds. */
double dmx__seconds_now(void);

/* The shape profile, for benchmarks: between start and stop every
 * dmx__sgemm is timed (wall time of the call, helpers included) and summed
 * per shape. Stop copies up to `max` shapes, in first-call order, into
 * `out` and returns their number; dmx__gemm_seconds is the time summed
 * over every profiled product so far. */
typedef struct {
    int ta, tb, M, N, K;
    unsigned long long calls;
    double seconds;
} dmx__gemm_stat;
/* Fused attention (attention.c) is profiled as its own shape: ta = tb =
 * DMX__ATTN_SHAPE, M queries, N keys, K the head dimension, 4 M N K FLOPs a
 * call (both products). */
#define DMX__ATTN_SHAPE (-1)
/* Direct short convolutions (dirconv.c) likewise: ta = tb =
 * DMX__DIRCONV_SHAPE, M output channels, N output columns, K input
 * channels x taps, 2 M N K FLOPs a call. */
#define DMX__DIRCONV_SHAPE (-2)
/* Feed-forward blocks (ffn.c): ta = DMX__FFN_SHAPE, tb the output width,
 * M tokens, N the hidden width, K the input width, 2 M N (K + tb) FLOPs a
 * call (both products). */
#define DMX__FFN_SHAPE (-3)
void dmx__gemm_profile_start(void);
/* Whether the profile runs; adds `calls` calls of a shape taking `dt` s. */
int dmx__gemm_profiling(void);
void dmx__gemm_profile_add(int ta, int tb, int M, int N, int K, unsigned long long calls,
                           double dt);
int dmx__gemm_profile_stop(dmx__gemm_stat *out, int max);
double dmx__gemm_seconds(void);

#endif
