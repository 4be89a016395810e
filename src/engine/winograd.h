/*
 * winograd.h - internal: 3x3 convolutions (stride 1, padding 1, no
 * dilation) by Winograd's F(4x4, 3x3) algorithm.
 *
 * Each 4x4 block of outputs is computed from its 6x6 input patch with 36
 * products per input/output channel pair instead of 144: the patch and the
 * kernel are transformed (B^T d B, G g G^T), the 36 transformed positions
 * are 36 matrix products (cout x cin) x (cin x tiles), and the output
 * transform (A^T m A) folds them back. 4x fewer multiply-adds than im2col +
 * GEMM (F(2x2, 3x3), which winograd.c still builds with WM 2: 2.25x). The
 * interpolation points 0, 1, -1, 1/2, -2 keep the rounding error near 4e-6
 * of a layer's output peak on a few hundred channels (F(2x2): 6e-7; the
 * usual 0, +-1, +-2: 1.3e-5), far inside the 1e-4 parity budget of a
 * model's output (the golden tests of the models that use it measure it;
 * test_ops bounds a layer at 1e-5 of its peak).
 *
 * Used by ops.c's convolutions when the geometry and the channel counts
 * make it pay (dmx__wino_use). Leaf module.
 */
#ifndef DMX_ENGINE_WINOGRAD_H
#define DMX_ENGINE_WINOGRAD_H

#include "arena.h"
#include "ops.h"

/* Whether a convolution of this geometry on (cin, H, W) runs by Winograd:
 * 3x3, stride 1, padding 1, dilation 1, and enough channels for the
 * transforms to be small next to the products. */
int dmx__wino_use(const dmx__conv_geom *g, int H, int W);

/* The 16 transformed kernels, (16, cout, cin), into the arena (released
 * with the caller's mark). NULL when out of memory. */
float *dmx__wino_weights(dmx__arena *ar, const dmx__conv_geom *g, const float *w);

/* How many output rows one band should hold (a multiple of the tile side,
 * 4) so the band's transformed input and products fit the scratch budget. */
int dmx__wino_band_rows(const dmx__conv_geom *g, int H, int W);

/* Output rows [oh0, oh1) (oh0 a multiple of the tile side) of conv(x (cin,
 * H, W)) + b (b may be NULL) into dst: channel co's rows at dst + co * ld, each W wide, row
 * oh at (oh - oh0) * W. U: dmx__wino_weights. Scratch from the arena
 * (released before returning). Returns 0, or -1 when out of memory. */
int dmx__wino_band(dmx__arena *ar, const dmx__conv_geom *g, const float *U, const float *x, int H,
                   int W, const float *b, int oh0, int oh1, float *dst, size_t ld);

#endif
