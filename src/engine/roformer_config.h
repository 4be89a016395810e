/*
 * roformer_config.h - internal: an MSST model config (YAML) for BS-RoFormer
 * and Mel-Band RoFormer.
 *
 * MSST (ZFTurbo/Music-Source-Separation-Training) loads its YAML with
 * PyYAML's FullLoader and passes the `model:` mapping as the constructor's
 * keyword arguments; `audio:` gives the chunk size, `inference:` the overlap
 * and batch size, `training:` the stem names. This reader applies the
 * constructors' defaults for absent keys, checks every key's type and range,
 * and fails with DMX_ERR_MODEL naming the key (and its line) otherwise.
 * Keys that change the computation in ways demix does not implement
 * (`use_pope: true`, `sage_attention: true`) are DMX_ERR_UNSUPPORTED.
 * Training-only keys (dropouts, multi-resolution loss, flash_attn,
 * use_torch_checkpoint) are read for type only.
 */
#ifndef DMX_ENGINE_ROFORMER_CONFIG_H
#define DMX_ENGINE_ROFORMER_CONFIG_H

#include <stdint.h>

#include "demix/status.h"
#include "yamltree.h"

#define DMX__RF_MAX_BANDS 1024
#define DMX__RF_MAX_STEMS 16

typedef enum dmx__rf_kind { DMX__RF_BS = 1, DMX__RF_MEL = 2 } dmx__rf_kind;

typedef struct dmx__rf_config {
    dmx__rf_kind kind; /* freqs_per_bands -> BS, num_bands -> Mel-Band */
    int dim, depth, stereo, num_stems;
    int time_depth, freq_depth, linear_depth;
    int n_bands;                            /* BS: len(freqs_per_bands); Mel: num_bands */
    int freqs_per_bands[DMX__RF_MAX_BANDS]; /* BS only */
    int dim_head, heads, dim_freqs_in, sample_rate;
    int n_fft, hop, win_length, normalized;
    int zero_dc, mask_estimator_depth, mlp_expansion_factor, skip_connection;
    int match_input_audio_length; /* Mel-Band only */
    /* whole-track inference (MSST demix) */
    int64_t chunk_size; /* inference.chunk_size, else audio.chunk_size */
    int num_overlap, batch_size;
    int audio_sample_rate; /* audio.sample_rate (44100 when absent) */
    int n_stem_names;
    char stems[DMX__RF_MAX_STEMS][64]; /* training.target_instrument, else training.instruments */
} dmx__rf_config;

/* Reads a parsed config. `what` names the file in messages. */
dmx_status dmx__rf_config_read(const dmx__ynode *root, const char *what, dmx__rf_config *cfg);
/* Loads and reads a YAML file. */
dmx_status dmx__rf_config_load(const char *path, dmx__rf_config *cfg);

#endif
