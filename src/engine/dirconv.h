/*
 * dirconv.h - internal: short 1-D convolutions with few output channels,
 * computed directly (no im2col, no GEMM).
 *
 * A DConv branch's first convolution (kernel 3, dilation 1 or 2, C inputs,
 * C/8 outputs) is a matrix product with a very short side: 6 x 14528 x 144
 * for HTDemucs's widest layer, where a BLAS packs the long operand for a
 * single row panel and reaches a third of its peak, after im2col has copied
 * the input three times. Here each output tile (a few output channels by a
 * few vectors of time steps) is summed in registers straight from the input
 * rows, over input channels and kernel taps; the input is copied once, a
 * chunk of columns at a time, into a zero-padded scratch so no load needs a
 * bounds check.
 *
 * Each output element is one running sum over (input channel, tap) in that
 * order whatever the chunking or the threads, so results do not depend on
 * the thread count. Used by ops.c's dmx__conv2d when dmx__dirconv_use says
 * so. Leaf module.
 */
#ifndef DMX_ENGINE_DIRCONV_H
#define DMX_ENGINE_DIRCONV_H

#include "arena.h"
#include "ops.h"

/* Whether a convolution of this geometry on (cin, H, W) runs here: kernel
 * along W only (kh 1), stride 1, no padding along H, a vector build with
 * fused multiply-add, and few enough output channels that a GEMM would run
 * far below its peak. */
int dmx__dirconv_use(const dmx__conv_geom *g, int H, int W);

/* y (cout, H, Wo) = conv(x (cin, H, W), w (cout, cin, 1, kw)) + b (b may be
 * NULL), Wo = dmx__conv_out(W, kw, 1, pw, dw). Inputs of more than one
 * unit (image row, chunk of columns) are cut into parts for the calling
 * thread's team (team.h). Scratch from the arena
 * (released before returning). Returns 0, or -1 when out of memory. */
int dmx__dirconv(dmx__arena *ar, const dmx__conv_geom *g, const float *x, int H, int W,
                 const float *w, const float *b, float *y);

#endif
