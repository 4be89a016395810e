/*
 * winograd_stride.h - internal: convolutions and transposed convolutions
 * whose kernel along H is twice their stride (kernel 2S x 1, stride S x 1:
 * the frequency encoders and decoders of the hybrid Demucs models, 8 x 1
 * by 4) by Winograd's F(3, 2).
 *
 * Split by phase, each is a sum of two-tap filters along H:
 *   convolution:  y[n] = sum_p w[p] x[S n + p - ph] + w[p + S] x[S (n + 1) + p - ph]
 *                 (the S input phases become S times the input channels);
 *   transposed:   y[S m + p] = w[p] x[m] + w[p + S] x[m - 1]
 *                 (S output phases from one input).
 * F(3, 2) computes three consecutive outputs of a two-tap filter from four
 * inputs with 4 multiplies where a direct sum takes 6: the products become
 * 4 matrix products per three output rows (two thirds of im2col + GEMM's
 * multiply-adds), between an input transform and an output transform that
 * writes each output row once (the transposed one needs no overlap-add and
 * no bias pass). Interpolation points 0, 1, -1: the transforms only add,
 * subtract and halve, so the rounding stays that of the sums (the golden
 * tests of the models that use it measure it).
 *
 * Used by ops.c's dmx__conv2d_act and dmx__conv_tr2d_ld / _crop when the
 * _use functions say so. Leaf module.
 */
#ifndef DMX_ENGINE_WINOGRAD_STRIDE_H
#define DMX_ENGINE_WINOGRAD_STRIDE_H

#include "arena.h"
#include "ops.h"

/* Whether a convolution of this geometry on (cin, H, W) runs by
 * dmx__wino_conv_s: kernel (2 sh) x 1, stride sh x 1 (sh >= 2), any
 * padding along H and none along W, no dilation, channels enough for the
 * transforms to be small next to the products, rows wide enough to be the
 * vector dimension. */
int dmx__wino_conv_s_use(const dmx__conv_geom *g, int H, int W);

/* y (cout, Ho, W) = act(conv(x (cin, H, W)) + b) (b may be NULL), w (cout, cin,
 * kh, 1) as PyTorch's Conv2d weight. Scratch from the arena (released
 * before returning). Returns 0, or -1 when out of memory. */
int dmx__wino_conv_s(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                     const float *w, const float *b, dmx__act act, float *y);

/* Whether a transposed convolution of this geometry on (cin, H, W) runs by
 * dmx__wino_tr: as above, with no padding (the caller crops or trims). */
int dmx__wino_tr_use(const dmx__conv_geom *g, int H, int W);

/* y (cout, (H + 1) sh - 2 crop, W) = rows [crop, (H + 1) sh - crop) of
 * conv_tr(x (cin, H, W)) + b, then act (b may be NULL; crop 0: the whole
 * untrimmed output; the rows cropped away are never written), w (cin rows
 * of ldw floats, each (cout, kh)) as PyTorch's ConvTranspose2d weight.
 * Scratch from the arena (released before returning). Returns 0, or -1
 * when out of memory. */
int dmx__wino_tr(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                 const float *w, int ldw, const float *b, int crop, dmx__act act, float *y);

#endif
