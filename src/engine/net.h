/*
 * net.h - internal: the seam between the engine and its networks.
 *
 * Every network family (HTDemucs, HDemucs v3, time-domain Demucs, later the
 * RoFormers) is one table of functions, a dmx__net_vt, registered in net.c
 * under the checkpoint class name(s) it builds. Loading a checkpoint looks
 * its `klass` up in that table (dmx__net_build); everything above the network
 * — apply.c (segments, shifts, bags), model.c (public API) — sees only a
 * dmx__net: a built, read-only network plus its description.
 *
 * A family module implements, for its own private struct:
 *   build     the checkpoint -> network: hyper-parameters from kwargs exactly
 *             as upstream's __init__, every tensor bound and shape-checked.
 *             Takes ownership of the checkpoint (also on failure).
 *   describe  fills a dmx__net_desc once after build.
 *   forward   one segment: mix (audio_channels, len) -> out (n_sources,
 *             audio_channels, len), scratch from the caller's arena only, so
 *             any number of threads can run one network at once.
 *   free      frees the network and the checkpoint it owns.
 */
#ifndef DMX_ENGINE_NET_H
#define DMX_ENGINE_NET_H

#include <stdint.h>

#include "arena.h"
#include "ckpt.h"

#define DMX__MAX_SOURCES 16

/* Optional activation tap for layer tests: called with a layer name
 * ("encoder0", "tdecoder2", "crosstransformer", ...) and the tensor
 * (c, h, w). */
typedef void (*dmx__tap_fn)(void *user, const char *name, const float *data, int c, int h, int w);

/* What apply.c and model.c need to know about a built network. */
typedef struct dmx__net_desc {
    const char *klass; /* checkpoint class name, e.g. "HTDemucs" */
    int n_sources;
    const char *sources[DMX__MAX_SOURCES]; /* owned by the network's checkpoint */
    int audio_channels, samplerate;
    int64_t seg_num, seg_den;   /* training segment in seconds, as an exact fraction
                                 * (seg_den = 0: given as a float, see `segment`) */
    double segment;             /* seconds */
    int64_t training_length;    /* upstream's int(segment * samplerate) */
    int use_train_segment;      /* HTDemucs: chunks are padded to the training length */
    int fixed_segment;          /* upstream's isinstance(model, HTDemucs) rules, 1 for
                                 * HTDemucs: a bag's larger `segment:` does not raise
                                 * this member's; a user segment may not exceed it
                                 * (max_allowed_segment); with a user segment the
                                 * model length is int(segment * samplerate)
                                 * instead of valid_length(chunk) */
    int rand_draws_per_forward; /* Python random draws upstream makes per forward pass */
    int64_t n_params;
} dmx__net_desc;

typedef struct dmx__net_vt {
    const char *name; /* family name for messages: "htdemucs", "hdemucs", "demucs" */
    dmx_status (*build)(dmx__ckpt *ck, void **out);
    void (*free)(void *net);
    void (*describe)(const void *net, dmx__net_desc *d);
    /* Upstream's model.valid_length(length): the input length the model
     * wants for a chunk of `length` samples (apply.c pads the chunk to it
     * with neighbouring samples, upstream's TensorChunk.padded). */
    int64_t (*valid_length)(const void *net, int64_t length);
    dmx_status (*forward)(const void *net, dmx__arena *ar, const float *mix, int len, float *out,
                          dmx__tap_fn tap, void *tap_user);
} dmx__net_vt;

typedef struct dmx__net {
    const dmx__net_vt *vt;
    void *impl;
    dmx__net_desc desc;
} dmx__net;

/* Builds the network for the checkpoint's class, taking ownership of `ck`
 * (also on failure). An unknown class is DMX_ERR_UNSUPPORTED naming it. */
dmx_status dmx__net_build(dmx__ckpt *ck, dmx__net **out);
void dmx__net_free(dmx__net *n);
int64_t dmx__net_valid_length(const dmx__net *n, int64_t length);
dmx_status dmx__net_forward(const dmx__net *n, dmx__arena *ar, const float *mix, int len,
                            float *out, dmx__tap_fn tap, void *tap_user);

/* Upstream's int(segment * samplerate), the one rule for a segment's length
 * in samples: exact integer arithmetic for a Fraction (den > 0: num/den
 * seconds), else the double product truncated toward zero as Python's int()
 * does on a float (int(5.6 * 44100) = 246959). -1 when out of range. */
int64_t dmx__segment_length(int64_t num, int64_t den, double seconds, int samplerate);

/* The families (each in its own module). */
extern const dmx__net_vt dmx__htdemucs_vt;
extern const dmx__net_vt dmx__demucs_vt;  /* demucs.c: demucs.demucs.Demucs (time domain) */
extern const dmx__net_vt dmx__hdemucs_vt; /* hdemucs.c: demucs.hdemucs.HDemucs (v3 hybrid) */

#endif
