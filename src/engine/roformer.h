/*
 * roformer.h - internal: BS-RoFormer and Mel-Band RoFormer (MSST's
 * models/bs_roformer), inference only, as dmx__net_vt families.
 *
 * A network is built from an MSST config (roformer_config.h) and a bare
 * state-dict checkpoint (dmx__ckpt_load_state_dict); it takes ownership of
 * the checkpoint and binds every tensor by its state-dict name, shape-checked
 * against the config (a missing, misshapen or unexpected tensor is
 * DMX_ERR_MODEL naming it, as torch's strict load_state_dict refuses them).
 * After the build the network is read-only: any number of threads may run
 * dmx__roformer_forward at once, each with its own arena.
 *
 * Band layouts (roformer_bands.c): the rows of the stacked spectrogram
 * (row = bin * channels + channel) each band reads. BS-RoFormer: consecutive
 * runs of freqs_per_bands bins. Mel-Band: librosa's Slaney mel filter bank,
 * entries [0][0] and [-1][-1] forced to 1, a band holding the bins where its
 * filter is > 0 (bands overlap; masks are averaged over the bands holding a
 * bin).
 */
#ifndef DMX_ENGINE_ROFORMER_H
#define DMX_ENGINE_ROFORMER_H

#include <stdint.h>

#include "arena.h"
#include "ckpt.h"
#include "net.h"
#include "roformer_config.h"

typedef struct dmx__rf_bands {
    int n_bands;
    int *off;     /* (n_bands + 1): band b holds bins bins[off[b] .. off[b+1]) */
    int *bins;    /* ascending within a band */
    int *per_bin; /* (n_fft/2 + 1): number of bands holding each bin (>= 1) */
} dmx__rf_bands;

/* Band layout for a config; DMX_ERR_MODEL when a bin is in no band. */
dmx_status dmx__rf_bands_make(const dmx__rf_config *cfg, dmx__rf_bands *b);
void dmx__rf_bands_free(dmx__rf_bands *b);

/* librosa.filters.mel(sr, n_fft, n_mels) > 0 (Slaney scale and norm, fmin 0,
 * fmax sr/2), computed in double as librosa does, as a (n_mels, n_fft/2+1)
 * 0/1 matrix (malloc'd), before the reference's edge fixes. */
unsigned char *dmx__rf_mel_support(int sr, int n_fft, int n_mels);

typedef struct dmx__roformer dmx__roformer;

/* Builds the network; takes ownership of `ck` (also on failure). `cfg` is
 * copied. */
dmx_status dmx__roformer_build(const dmx__rf_config *cfg, dmx__ckpt *ck, dmx__roformer **out);
/* Loads `config_path` (YAML) and `ckpt_path` (.ckpt) and builds. */
dmx_status dmx__roformer_load(const char *config_path, const char *ckpt_path, dmx__roformer **out);
void dmx__roformer_free(dmx__roformer *n);
const dmx__rf_config *dmx__roformer_config(const dmx__roformer *n);

/* Samples the forward pass returns for `len` input samples: len for
 * BS-RoFormer (istft length = input length) and for Mel-Band with
 * match_input_audio_length, else hop * (len / hop) (istft without a length). */
int64_t dmx__roformer_out_len(const dmx__roformer *n, int64_t len);

/* One forward pass, model(mix[None]): mix (channels, len) -> out (stems,
 * channels, len). Samples past dmx__roformer_out_len are set to 0 (the
 * reference returns a shorter signal there). len must exceed n_fft / 2
 * (torch.stft's reflect padding), else DMX_ERR_BAD_INPUT. Scratch comes
 * from `ar`. `tap` (may be NULL) sees "stft" (channels, bins, frames x 2),
 * "band_split", "layer{i}_time", "layer{i}_freq", "final_norm" and "mask0"
 * in the reference's layouts (see the golden README). */
dmx_status dmx__roformer_forward(const dmx__roformer *n, dmx__arena *ar, const float *mix, int len,
                                 float *out, dmx__tap_fn tap, void *tap_user);

/* The network tables, registered in net.c under MSST's class names. Their
 * `build` from a checkpoint alone fails with DMX_ERR_UNSUPPORTED (a RoFormer
 * needs its YAML config); dmx__roformer_net_load builds a dmx__net from the
 * config and the checkpoint. Note: the desc's segment is MSST's chunk_size;
 * whole tracks must go through roformer_demix.h (MSST's chunking), not
 * apply.c's Demucs chunking. */
extern const dmx__net_vt dmx__bs_roformer_vt;
extern const dmx__net_vt dmx__mel_band_roformer_vt;
dmx_status dmx__roformer_net_load(const char *config_path, const char *ckpt_path, dmx__net **out);

#endif
