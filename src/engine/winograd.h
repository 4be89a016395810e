/*
 * winograd.h - internal: 3x3 convolutions (stride 1, padding 1, no
 * dilation) by Winograd's F(4x4, 3x3) algorithm, and 1x3 ones along W
 * (padding 1 along W) by F(4, 3): 6 products per 4 outputs instead of 12.
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
 * a 3x3 kernel with padding 1, or a 1x3 one (along W) with padding (0, 1);
 * stride 1, no dilation, and enough channels for the transforms to be
 * small next to the products. */
int dmx__wino_use(const dmx__conv_geom *g, int H, int W);

/* The transformed kernels, (positions, cout, cin) with 36 positions (3x3)
 * or 6 (1x3), into the arena (released with the caller's mark). NULL when
 * out of memory. */
float *dmx__wino_weights(dmx__arena *ar, const dmx__conv_geom *g, const float *w);

/* The band size: *rows output rows (a multiple of the tile's height, 4 or
 * 1) by *cols columns (a multiple of 4; the whole width rounded up, except
 * for a 1D row too long for the scratch budget, cut into equal parts) so
 * a band's transformed input and products fit the scratch budget. */
void dmx__wino_bands(const dmx__conv_geom *g, int H, int W, int *rows, int *cols);

/* Output rows [oh0, oh1) and columns [ow0, ow1) (oh0 and ow0 multiples of
 * the tile's sides; oh1, ow1 may pass H, W: cropped) of conv(x (cin, H,
 * W)) + b (b may be NULL) into dst: channel co's row oh at dst + co * ld
 * + (oh - oh0) * ldr, column ow at (ow - ow0). With glu, dst receives
 * cout / 2 channels, GLU of the convolution's (dmx__glu: channel co times
 * the sigmoid of channel co + cout / 2). U: dmx__wino_weights.
 * Scratch from the arena (released before returning). Returns 0, or -1
 * when out of memory. */
int dmx__wino_band(dmx__arena *ar, const dmx__conv_geom *g, const float *U, const float *x, int H,
                   int W, const float *b, int oh0, int oh1, int ow0, int ow1, int glu, float *dst,
                   size_t ld, size_t ldr);

#endif
