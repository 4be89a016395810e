/*
 * resample.h - internal: julius.resample_frac (adefossez/julius), the
 * windowed-sinc resampler upstream's time-domain Demucs uses for its x2
 * up- and down-sampling.
 *
 * For old_sr/new_sr reduced by their gcd, julius builds new_sr phase kernels
 * of 2*width + old_sr taps, width = ceil(zeros * old_sr / sr),
 * sr = min(old_sr, new_sr) * rolloff:
 *   t = clamp((-i/new_sr + k/old_sr) * sr, -zeros, zeros) * pi,
 *   kernel_i[k] = sinc(t) * cos(t / zeros / 2)^2, normalised to sum 1,
 * all in float32 as julius computes them; the signal is replicate-padded by
 * (width, width + old_sr), convolved with stride old_sr, the phases
 * interleaved, and the output cut to floor(new_sr * L / old_sr) samples.
 */
#ifndef DMX_ENGINE_RESAMPLE_H
#define DMX_ENGINE_RESAMPLE_H

#include <stdint.h>

#include "arena.h"
#include "demix/status.h"

/* Output length of resampling L samples: floor(new_sr * L / old_sr) after
 * reducing the rates. */
int64_t dmx__resample_frac_len(int64_t L, int old_sr, int new_sr);

/* y (rows, out_len) = resample_frac(x (rows, L), old_sr, new_sr, zeros,
 * rolloff) (julius' defaults: zeros 24, rolloff 0.945). Rates reduced by
 * their gcd must be at most 64. Scratch (the kernels) from `ar`. Returns
 * DMX_OK, DMX_ERR_INVALID_ARG for bad rates, DMX_ERR_NOMEM. */
dmx_status dmx__resample_frac(dmx__arena *ar, const float *x, int rows, int L, int old_sr,
                              int new_sr, int zeros, double rolloff, float *y);

#endif
