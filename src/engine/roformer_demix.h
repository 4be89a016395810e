/*
 * roformer_demix.h - internal: MSST's whole-track inference
 * (utils/model_utils.py demix(), "generic" mode) for a RoFormer, with
 * batch_size 1.
 *
 * C = chunk size, step = C / num_overlap, fade = C / 10, border = C - step.
 * A track longer than 2 * border is reflect-padded by border at both ends.
 * Chunks start at 0, step, 2 step, ... below the padded length; a chunk
 * shorter than C is padded at its end to C by reflection when longer than
 * C / 2, else with zeros. Each output is weighted by a window of ones with
 * linear fades (torch.linspace, float32) of `fade` samples at both ends —
 * except no fade-in on the first chunk, else no fade-out on the last one —
 * and the weighted sum is divided by the summed weights (0 where they are 0).
 *
 * MSST applies its window per batch (chosen from the batch's last chunk), so
 * with its YAML batch sizes (> 1) chunks inside the last batch lose their
 * fade-out too: its results depend on the batch size. demix reproduces
 * batch_size = 1, the only choice that does not.
 */
#ifndef DMX_ENGINE_ROFORMER_DEMIX_H
#define DMX_ENGINE_ROFORMER_DEMIX_H

#include <stdint.h>

#include "arena.h"
#include "demix/demix.h"
#include "roformer.h"

typedef struct dmx__rf_plan {
    int64_t len; /* input samples per channel */
    int64_t chunk, step, fade, border;
    int padded;   /* 1: reflect-padded by border at both ends */
    int64_t plen; /* padded length */
    int64_t n_chunks;
} dmx__rf_plan;

/* The chunk layout for `len` samples with the config's chunk_size and
 * num_overlap. DMX_ERR_BAD_INPUT when len < 1. */
dmx_status dmx__rf_plan_make(const dmx__rf_config *cfg, int64_t len, dmx__rf_plan *p);

/* The window chunk k is weighted with: w (chunk) floats. */
void dmx__rf_plan_window(const dmx__rf_plan *p, int64_t k, float *w);

/* Streaming form (what the pipeline uses): the track's length is known up
 * front, or total_len < 0: unknown until dmx__rf_stream_finish (the padding
 * depends on it: nothing runs before more than 2 border samples arrived,
 * and the chunks that reach the end run at finish; the output is the same
 * bits), the audio arrives in pieces of any size,
 * and `write` (demix.h's dmx_write_fn: stems x channels planar pointers)
 * receives every sample as soon as no later chunk can change it, in order.
 * Memory is bounded by the chunk size whatever the track length: about
 * 2 chunks of input history, one chunk of weighted sums per stem and channel,
 * and, per worker, one chunk in and out and one forward pass's arena.
 * n_threads workers run up to n_threads chunks at once (one BLAS thread
 * each: the engine's process-wide setting, threads.c); accumulation stays
 * in chunk order, so the output does not
 * depend on n_threads and is bit-identical to dmx__rf_demix. A stream is
 * used from one thread at a time; the network may be shared. */
typedef struct dmx__rf_stream dmx__rf_stream;
dmx_status dmx__rf_stream_new(const dmx__roformer *n, int64_t total_len, int n_threads,
                              dmx_write_fn write, void *user, dmx__rf_stream **out);
/* in: channels planar pointers of `frames` samples. DMX_ERR_INVALID_ARG
 * past a known total_len. A `write` error aborts the stream with its status. */
dmx_status dmx__rf_stream_feed(dmx__rf_stream *st, const float *const *in, int64_t frames);
/* After exactly total_len samples (or any number >= 1 when it was unknown):
 * runs the remaining chunks and writes the rest. */
dmx_status dmx__rf_stream_finish(dmx__rf_stream *st);
void dmx__rf_stream_free(dmx__rf_stream *st);
/* Floats the stream holds besides the arena (for tests: flat in length). */
size_t dmx__rf_stream_footprint(const dmx__rf_stream *st);

/* Whole track: mix (channels, len) -> out (stems, channels, len), planar,
 * through the stream above. */
dmx_status dmx__rf_demix(const dmx__roformer *n, const float *mix, int64_t len, int n_threads,
                         float *out);

#endif
