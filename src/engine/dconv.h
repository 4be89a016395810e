/*
 * dconv.h - internal: upstream Demucs' DConv residual branch
 * (demucs.demucs.DConv), shared by the time-domain Demucs and HDemucs.
 *
 * Layer d of depth |depth| (dilation 2^d when depth > 0, else 1; padding
 * dilation * (kernel / 2)):
 *   conv(C -> hidden = int(C / compress), kernel) -> GroupNorm(1) [norm]
 *   -> GELU [gelu] or ReLU -> BLSTM(hidden, 2 layers, max_steps 200, skip)
 *   [lstm] -> LocalState(hidden, heads, ndecay) [attn] -> 1x1 conv to 2C
 *   -> GroupNorm(1) [norm] -> GLU -> LayerScale,  x += branch.
 * State names follow upstream's nn.Sequential indices: PREFIX.layers.d.{0,1,
 * 3,4,...}; absent modules shift the later indices as upstream's inserts do.
 */
#ifndef DMX_ENGINE_DCONV_H
#define DMX_ENGINE_DCONV_H

#include "arena.h"
#include "bind.h"
#include "ckpt.h"
#include "localstate.h"
#include "lstm.h"
#include "net.h"

#define DMX__DCONV_MAX_DEPTH 8

/* Upstream's DConv arguments. `init` only initialises LayerScale (unused at
 * inference); `dilate` is overridden by the sign of `depth`, as upstream
 * does. Defaults (upstream's): compress 4, depth 2, norm 1, attn 0, heads 4,
 * ndecay 4, lstm 0, gelu 1, kernel 3, dilate 1 — see dmx__dconvx_opts_default. */
typedef struct dmx__dconvx_opts {
    int depth;
    double compress;
    double init;
    int norm, attn, heads, ndecay, lstm, gelu, kernel, dilate;
} dmx__dconvx_opts;

typedef struct dmx__dconvx_layer {
    const float *conv1_w, *conv1_b; /* (hidden, C, kernel), (hidden) */
    const float *norm1_w, *norm1_b; /* (hidden) or NULL without norm */
    int has_lstm, has_attn;
    dmx__blstm lstm;
    dmx__localstate attn;
    const float *conv2_w, *conv2_b; /* (2C, hidden, 1), (2C) */
    const float *norm2_w, *norm2_b; /* (2C) or NULL */
    const float *scale;             /* (C) */
    int dilation;
} dmx__dconvx_layer;

typedef struct dmx__dconvx {
    int channels, hidden, depth, kernel, norm, gelu;
    dmx__dconvx_layer layers[DMX__DCONV_MAX_DEPTH];
    int64_t n_params; /* values bound */
} dmx__dconvx;

dmx__dconvx_opts dmx__dconvx_opts_default(void);

/* Binds PREFIX.layers.* (e.g. prefix "encoder.4.dconv") for `channels`
 * channels. DMX_ERR_MODEL naming a missing or mis-shaped tensor or a bad
 * option. The weights stay owned by `ck`. */
dmx_status dmx__dconvx_bind(dmx__ckpt *ck, const char *prefix, int channels,
                            const dmx__dconvx_opts *o, dmx__dconvx *out);
/* Same through a binder (collect or bind pass, see bind.h); errors stick in
 * b->st. */
void dmx__dconvx_bind_b(dmx__binder *b, const char *prefix, int channels, const dmx__dconvx_opts *o,
                        dmx__dconvx *out);

/* x (B, C, T) contiguous, updated in place: x += DConv(x) for each batch
 * item. Scratch from `ar`. DMX_OK or DMX_ERR_NOMEM. */
dmx_status dmx__dconvx_forward(const dmx__dconvx *d, dmx__arena *ar, float *x, int B, int C, int T);

/* Same, tapping (for B = 1) each layer's BLSTM output as
 * "<name>_dconv<d>_blstm" and LocalState output as "<name>_dconv<d>_localstate"
 * (both (hidden, 1, T), residuals included). tap may be NULL. */
dmx_status dmx__dconvx_forward_tap(const dmx__dconvx *d, dmx__arena *ar, float *x, int B, int C,
                                   int T, dmx__tap_fn tap, void *tap_user, const char *name);

/* The 2C-channel end of one DConv layer, shared by this file and HTDemucs's
 * per-frequency-row DConv: on y (C, rows, T), each of the `rows` rows an
 * independent sequence,
 *   y += scale * GLU(GroupNorm(1)(w h + b))     (GroupNorm only when nw set)
 * with h (hidden, rows, T), w (2C, hidden), b (2C), nw/nb (2C) or NULL,
 * scale (C). The 2C channels never exist for the whole image: a block of
 * rows at a time, or, for rows longer than the scratch budget, in column
 * blocks and two passes (the row's statistics first, recomputing the cheap
 * 1x1 product). Scratch from `ar`. DMX_OK or DMX_ERR_NOMEM. */
dmx_status dmx__dconv_glu_half(dmx__arena *ar, const float *h, int hidden, float *y, int C,
                               int rows, int T, const float *w, const float *b, const float *nw,
                               const float *nb, const float *scale);

#endif
