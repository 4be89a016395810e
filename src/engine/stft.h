/*
 * stft.h - internal: HTDemucs' spectrogram front end and back end.
 *
 * dmx__spec reproduces HTDemucs._spec (upstream spec.py + htdemucs.py): reflect
 * padding so that frames = ceil(len / hop), torch.stft(center=True,
 * reflect, normalized, periodic Hann) and the crop of 2 frames on each side
 * and of the Nyquist bin. dmx__ispec reproduces HTDemucs._ispec.
 * FFTs run through FFTW (single precision); plans are made once per size and
 * shared read-only, execution uses the new-array interface so threads can
 * share a plan.
 */
#ifndef DMX_ENGINE_STFT_H
#define DMX_ENGINE_STFT_H

#include <stddef.h>

#include "arena.h"

typedef struct dmx__stft dmx__stft; /* plans + window for one nfft; read-only */

dmx__stft *dmx__stft_new(int nfft);
void dmx__stft_free(dmx__stft *s);

/* Frames produced for `len` samples: ceil(len / hop). */
int dmx__spec_frames(const dmx__stft *s, int len);

/* Index i reflected into [0, n) as torch's "reflect" padding does (the
 * edge sample is not repeated). */
long dmx__reflect(long i, long n);

/* x (channels, len) -> z (channels, 2, nfft/2, frames): for each channel the
 * real parts then the imaginary parts, each (nfft/2 bins, frames), which is
 * exactly the complex-as-channels layout HTDemucs feeds its encoder. */
int dmx__spec(const dmx__stft *s, dmx__arena *ar, const float *x, int channels, int len, float *z);

/* z (channels, 2, nfft/2, frames) (same layout) -> x (channels, len). */
int dmx__ispec(const dmx__stft *s, dmx__arena *ar, const float *z, int channels, int frames,
               int len, float *x);

/* HDemucs' variants: zero_pad / old = 1 reproduce `hybrid_old=True` (zero
 * padding before the STFT instead of reflection; an iSTFT of
 * hop·ceil(len/hop) samples whose first `len` are kept, instead of one
 * 3·hop longer cropped at 1.5·hop). With 0 they are dmx__spec/dmx__ispec. */
int dmx__spec_ex(const dmx__stft *s, dmx__arena *ar, const float *x, int channels, int len,
                 int zero_pad, float *z);
int dmx__ispec_ex(const dmx__stft *s, dmx__arena *ar, const float *z, int channels, int frames,
                  int len, int old, float *x);

#endif
