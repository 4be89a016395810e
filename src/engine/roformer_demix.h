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
#include "roformer.h"

typedef struct dmx__rf_plan {
    int64_t len;       /* input samples per channel */
    int64_t chunk, step, fade, border;
    int padded;        /* 1: reflect-padded by border at both ends */
    int64_t plen;      /* padded length */
    int64_t n_chunks;
} dmx__rf_plan;

/* The chunk layout for `len` samples with the config's chunk_size and
 * num_overlap. DMX_ERR_BAD_INPUT when len < 1. */
dmx_status dmx__rf_plan_make(const dmx__rf_config *cfg, int64_t len, dmx__rf_plan *p);

/* The window chunk k is weighted with: w (chunk) floats. */
void dmx__rf_plan_window(const dmx__rf_plan *p, int64_t k, float *w);

/* Whole track: mix (channels, len) -> out (stems, channels, len), planar.
 * Memory: the padded mix, the weighted sums (stems x channels x padded
 * length) and one forward pass's arena. */
dmx_status dmx__rf_demix(const dmx__roformer *n, const float *mix, int64_t len, float *out);

#endif
