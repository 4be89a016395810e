/*
 * wiener.h - internal: turning estimated magnitude spectrograms into complex
 * ones, as HDemucs._mask and HTDemucs._mask do for amplitude (cac=False)
 * models (both call it identically), and their `_magnitude` input.
 *
 * iters >= 0: openunmix.filtering.wiener exactly as HDemucs._wiener calls it:
 * windows of 300 STFT frames, each filtered on its own: the sources get the
 * mixture's phase (open-unmix's own atan2, float32 pi = 2·asin(1)), an
 * optional residual source (mixture − Σ sources), then `iters` EM
 * iterations (scale_factor 10, eps 1e-10, 1x1 or 2x2 spatial covariances);
 * the residual is dropped again. open-unmix's atan2 adds 1 in place to the
 * real part of every all-zero mixture bin; the residual and the EM see that
 * modified mixture, and so do they here.
 * iters < 0: upstream's plain masking z / (1e-8 + |z|) · m.
 */
#ifndef DMX_ENGINE_WIENER_H
#define DMX_ENGINE_WIENER_H

#include "arena.h"
#include "demix/status.h"

#define DMX__WIENER_WINDOW 300 /* frames per wiener() call (HDemucs._wiener) */

/* The amplitude models' input (upstream's `_magnitude` with cac=False,
 * z.abs()): spec (C, 2, F·T in `plane`) as dmx__spec writes it, mag (C, plane)
 * receives |re + i·im| per bin. */
void dmx__wiener_magnitude(const float *spec, int C, size_t plane, float *mag);

/* mag (S, C, F, T) magnitudes; mix (C, 2, F, T): per channel the real plane
 * then the imaginary plane (dmx__spec's layout); out (S, C, 2, F, T), the
 * same layout per source, ready for dmx__ispec with S·C channels. C must be
 * 1 or 2 when iters > 0 (as open-unmix). Scratch from `ar` (EM only).
 * Returns DMX_OK, DMX_ERR_INVALID_ARG (bad sizes) or DMX_ERR_NOMEM. */
dmx_status dmx__wiener(dmx__arena *ar, const float *mag, const float *mix, int S, int C, int F,
                       int T, int iters, int residual, float *out);

#endif
