/*
 * htdemucs.h - internal: the HTDemucs (Demucs v4) network, one family behind
 * the engine's network interface (net.h: dmx__htdemucs_vt). The rest of the
 * engine goes through that interface; this header is for the family's own
 * modules (htdemucs_build.c, htdemucs_forward.c, transformer.c).
 *
 * dmx__htdemucs_build() derives every layer's geometry from the checkpoint's
 * constructor kwargs exactly as upstream's HTDemucs.__init__ does, then binds
 * and shape-checks every state tensor (a missing, mis-shaped or unexpected
 * tensor is a DMX_ERR_MODEL naming it). The built network is read-only;
 * dmx__htdemucs_forward() runs one segment with scratch from a caller-owned
 * arena, so any number of threads can run the same network at once.
 */
#ifndef DMX_ENGINE_HTDEMUCS_H
#define DMX_ENGINE_HTDEMUCS_H

#include <stdint.h>

#include "arena.h"
#include "ckpt.h"
#include "hybrid.h"
#include "net.h"
#include "ops.h"
#include "stft.h"

#define DMX__MAX_DEPTH 8

typedef struct dmx__dconv_layer {
    dmx__conv conv1;    /* channels -> hidden, kernel 3, dilation 2^d */
    dmx__norm norm1;    /* GroupNorm(1, hidden) */
    dmx__conv conv2;    /* hidden -> 2*channels, 1x1 */
    dmx__norm norm2;    /* GroupNorm(1, 2*channels) */
    const float *scale; /* (channels) LayerScale */
} dmx__dconv_layer;

typedef struct dmx__dconv {
    int depth, channels, hidden;
    dmx__dconv_layer layers[4];
} dmx__dconv;

/* One encoder (HEncLayer) or decoder (HDecLayer) layer of either branch. */
typedef struct dmx__hlayer {
    int freq;  /* convolves along frequency (H) instead of time (W) */
    int empty; /* only the (transposed) convolution */
    int last;  /* decoder: outermost layer, no final GELU */
    int kernel, stride, pad;
    int chin, chout;
    dmx__conv conv; /* conv (encoder) or conv_tr (decoder) */
    dmx__norm norm1, norm2;
    int has_rewrite;
    dmx__conv rewrite;
    int has_dconv;
    dmx__dconv dconv;
} dmx__hlayer;

typedef struct dmx__tlayer {
    int cross;
    const float *in_w, *in_b;       /* (3*dim, dim), (3*dim) */
    const float *out_w, *out_b;     /* (dim, dim), (dim) */
    const float *l1_w, *l1_b;       /* (hidden, dim) */
    const float *l2_w, *l2_b;       /* (dim, hidden) */
    dmx__norm n1, n2, n3, norm_out; /* groups 0 => LayerNorm when weights set */
    const float *g1, *g2;           /* LayerScale (dim) or NULL */
} dmx__tlayer;

typedef struct dmx__xformer {
    int dim, heads, hidden, n_layers, cross_first;
    int norm_first, gelu, group_norm; /* group_norm: norms 1/2/3 are GroupNorm(g) */
    int emb_cape, cape_mean_normalize;
    int emb_scaled;       /* t_emb='scaled': learned positions (ScaledEmbedding) */
    const float *pos_emb; /* (pos_emb_rows, dim) stored embedding, used * 3 (boost) */
    int pos_emb_rows;     /* t_max_positions */
    float max_period, weight_pos_embed;
    int norm_in; /* 0 none, 1 LayerNorm, 2 GroupNorm */
    dmx__norm norm_in_x, norm_in_t;
    dmx__tlayer *lx, *lt; /* (n_layers) each */
} dmx__xformer;

typedef struct dmx__htdemucs {
    int n_sources;
    const char *sources[DMX__MAX_SOURCES]; /* owned by ckpt */
    int audio_channels, samplerate;
    int64_t seg_num, seg_den; /* segment as a fraction of seconds */
    double segment;           /* seconds */
    int training_length;      /* int(segment * samplerate) */
    int use_train_segment;
    int cac;             /* complex as channels; 0: magnitudes in, masks out */
    int wiener_iters;    /* cac=0: < 0 plain masking, >= 0 Wiener EM iterations */
    int wiener_residual; /* cac=0: Wiener filtering with a residual source */
    int nfft, hop, depth;
    int n_enc, n_tenc;
    dmx__hlayer enc[DMX__MAX_DEPTH], tenc[DMX__MAX_DEPTH];
    dmx__hlayer dec[DMX__MAX_DEPTH], tdec[DMX__MAX_DEPTH]; /* in execution order */
    const float *freq_emb; /* (freq_emb_rows, freq_emb_dim) or NULL */
    int freq_emb_rows, freq_emb_dim;
    float freq_emb_scale, emb_scale;
    int bottom_channels, transformer_channels;
    dmx__conv up, down, up_t, down_t;
    int has_xformer;
    dmx__xformer xf;
    dmx__stft *stft;
    int64_t n_params;
    dmx__ckpt *ck; /* owns all weights */
} dmx__htdemucs;

/* Builds the network from a loaded checkpoint, taking ownership of `ck`
 * (freed with the network, or on failure). */
dmx_status dmx__htdemucs_build(dmx__ckpt *ck, dmx__htdemucs **out);
void dmx__htdemucs_free(dmx__htdemucs *m);

/* Runs the network on mix (audio_channels, len), len <= training_length (shorter
 * inputs are zero-padded to the training length and trimmed back, as
 * upstream). Writes out (n_sources, audio_channels, len). Returns DMX_OK or
 * DMX_ERR_NOMEM. */
dmx_status dmx__htdemucs_forward(const dmx__htdemucs *m, dmx__arena *ar, const float *mix, int len,
                                 float *out, dmx__tap_fn tap, void *tap_user);

/* Cross-transformer (transformer.c): x (dim, F, T1) and xt (dim, T2), both
 * updated in place. Returns DMX_OK or DMX_ERR_NOMEM. */
dmx_status dmx__xformer_forward(const dmx__xformer *xf, dmx__arena *ar, float *x, int F, int T1,
                                float *xt, int T2);

#endif
