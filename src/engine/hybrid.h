/*
 * hybrid.h - internal: what upstream's two hybrid networks (HDemucs and
 * HTDemucs, both built from demucs.hdemucs' HEncLayer and HDecLayer) share,
 * written once for hdemucs.c and htdemucs_build.c/htdemucs_forward.c:
 *   - the level geometry rule (HDemucs.__init__ and HTDemucs.__init__ build
 *     their encoder/decoder levels the same way), header-only;
 *   - a layer's bound convolution and norm, and the steps of HEncLayer /
 *     HDecLayer.forward that do not depend on the network (hybrid.c): the
 *     encoder's convolution through its GELU, the decoder's transposed
 *     convolution through its trim and GELU, the norm, the rewrite + GLU,
 *     the time layers' padding to a multiple of the stride, the injected
 *     time branch, the transposed convolution's output shape and trim.
 * The DConv branches differ (HDemucs' may hold a BLSTM and LocalState:
 * dconv.h; HTDemucs' never does) and stay with each network.
 */
#ifndef DMX_ENGINE_HYBRID_H
#define DMX_ENGINE_HYBRID_H

#include <stddef.h>

#include "arena.h"
#include "ops.h"

/* A convolution's geometry and weights (borrowed from the checkpoint). */
typedef struct dmx__conv {
    dmx__conv_geom g;
    const float *w; /* (cout, cin, kh, kw), or (cin, cout, kh, kw) when transposed */
    const float *b; /* (cout) */
} dmx__conv;

/* GroupNorm's groups and affine weights; groups 0: no norm (Identity). */
typedef struct dmx__norm {
    int groups;
    const float *w, *b; /* (channels) */
} dmx__norm;

/* x (C, L) normalised in place (nothing when n has no groups). */
void dmx__norm_image(float *x, int C, size_t L, const dmx__norm *n);
/* The same, then act, in one pass (act alone when n has no groups). */
void dmx__norm_image_act(float *x, int C, size_t L, const dmx__norm *n, dmx__act act);

/* HEncLayer's convolution through its GELU: c (cv's cout, Ho, Wo) =
 * GELU(norm(conv(x (cin, H, W)) + inject)), inject (cout, Wo) or NULL; an
 * empty layer (its forward stops there) gets the convolution alone. With
 * nothing between the convolution and the GELU (no injection, no norm:
 * every released model's layers but the injected one) the convolution
 * applies the GELU as it writes (dmx__conv2d_act). 0, or -1 when out of
 * memory. */
int dmx__enc_conv(dmx__arena *ar, const dmx__conv *cv, const dmx__norm *norm1, const float *x,
                  int H, int W, const float *inject, int empty, float *c);

/* HDecLayer's transposed convolution through its trim and GELU: z (cv's
 * cout, ho, wo) = GELU(trim(norm(conv_tr(y (cin, H, W))))), no GELU for
 * the last layer; z holds dmx__tr_shape's floats, hf..wo its shapes. With
 * no norm, a frequency layer's trim and the GELU are the transposed
 * convolution's (rows cropped as it writes them, the GELU on each row
 * kept: dmx__conv_tr2d_crop); a norm takes its statistics over the
 * untrimmed output, so then the GELU goes with the norm and the trim
 * after (both elementwise: the trim's zero padding stays 0). 0, or -1
 * when out of memory. */
int dmx__dec_conv_tr(dmx__arena *ar, const dmx__conv *cv, const dmx__norm *norm2, int freq,
                     int pad, int last, const float *y, int H, int W, int hf, int wf, int ho,
                     int wo, float *z);

/* y (cv's cout / 2, H, W) = GLU(norm(conv(x))): fused in column blocks
 * when there is no norm (every released model), else through a full buffer
 * (GroupNorm needs the whole tensor's statistics). Scratch from the arena,
 * released before returning. 0, or -1 when out of memory. */
int dmx__rewrite_glu(dmx__arena *ar, const dmx__conv *cv, const dmx__norm *n, const float *x,
                     int H, int W, float *y);

/* x (rows, W) zero-padded on the right to (rows, Wp) in arena memory, or x
 * itself when Wp == W; NULL when out of memory. */
const float *dmx__pad_cols(dmx__arena *ar, const float *x, int rows, int W, int Wp);

/* c (C, H, W) += inject (C, W) broadcast over H: the time branch injected
 * into the layer that merges the two branches. */
void dmx__inject(float *c, const float *inject, int C, int H, int W);

/* A decoder's transposed convolution on (H, W): its untrimmed output
 * (*hf, *wf) and the layer's output (*ho, *wo) after the trim (frequency
 * layers drop `pad` rows on each side; time layers keep `length` columns
 * from `pad`). Returns the floats of one buffer that holds either, per
 * channel count `chout`. */
size_t dmx__tr_shape(const dmx__conv_geom *g, int freq, int pad, int length, int chout, int H,
                     int W, int *hf, int *wf, int *ho, int *wo);

/* z (C, hf, wf), the untrimmed output, compacted in place to (C, ho, wo)
 * (shapes from dmx__tr_shape); time columns past the untrimmed output are
 * zero. */
void dmx__tr_trim(float *z, int C, int freq, int pad, int hf, int wf, int ho, int wo);

typedef struct dmx__hybrid_level {
    int freq;      /* a frequency layer (more than one bin enters it) */
    int kernel;    /* its kernel along frequency (or time, once freq is 0) */
    int stride;    /* its stride along that axis */
    int pad;       /* 1: padded (kernel - stride) / 2 on each side */
    int last_freq; /* the layer that collapses the remaining bins: it merges
                    * with the time branch */
} dmx__hybrid_level;

/* The level entered by `freqs` frequency bins. */
static inline dmx__hybrid_level dmx__hybrid_level_at(int freqs, int kernel_size, int stride,
                                                     int time_stride) {
    dmx__hybrid_level l = {freqs > 1, kernel_size, stride, 1, 0};
    if (!l.freq) {
        l.kernel = time_stride * 2;
        l.stride = time_stride;
    }
    if (l.freq && freqs <= kernel_size) { /* the last frequency layer */
        l.kernel = freqs;
        l.pad = 0;
        l.last_freq = 1;
    }
    return l;
}

/* At the merging level both branches take the larger channel count. */
static inline void dmx__hybrid_merge_channels(int *chout, int *chout_z) {
    if (*chout_z < *chout) *chout_z = *chout;
    *chout = *chout_z;
}

#endif
