/*
 * pipeline.h - separate an audio file into stem files, streamed: what
 * `demix separate` does per track and what the service does per job.
 *
 * decode pass 1 (upstream's normalisation statistics) -> decode pass 2 ->
 * dmx_stream (engine) -> two-stem derivation -> clip mode -> encoders.
 * Memory does not grow with the song; `--clip-mode rescale` needs each
 * stem's peak before its first sample is written, so in that mode the stems
 * are spilled as raw float32 beside their outputs and encoded in a third
 * pass. Every output is written as "<path>.part" and renamed only when all
 * of them are complete; on any failure nothing is left behind.
 */
#ifndef DEMIX_PIPELINE_H
#define DEMIX_PIPELINE_H

#include <stdint.h>

#include "demix/audio.h"
#include "demix/demix.h"
#include "demix/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --two-stems complement: the sum of the other stems (upstream's "add",
 * named no_STEM), the mix minus STEM ("minus", named minus_STEM), or none. */
typedef enum dmx_other_method {
    DMX_OTHER_ADD = 0,
    DMX_OTHER_MINUS = 1,
    DMX_OTHER_NONE = 2
} dmx_other_method;

/* Upstream's prevent_clip: rescale divides a stem by max(1.01 * peak, 1);
 * clamp limits it to [-0.99, 0.99]; none writes it as is. */
typedef enum dmx_clip_mode {
    DMX_CLIP_RESCALE = 0,
    DMX_CLIP_CLAMP = 1,
    DMX_CLIP_NONE = 2
} dmx_clip_mode;

#define DMX_MAX_STEM_NAME 96

/* The output stems for model `m`: every source, or with `two_stems` the
 * source and (unless DMX_OTHER_NONE) its complement. Fills names[i] (up to
 * `cap`, each DMX_MAX_STEM_NAME bytes) and returns the count, or -1 when
 * `two_stems` is not a source of the model. */
int32_t dmx_file_stems(const dmx_model *m, const char *two_stems, dmx_other_method om,
                       char (*names)[DMX_MAX_STEM_NAME], int32_t cap);

typedef struct dmx_file_job {
    const char *input;     /* audio file to separate (any format FFmpeg reads) */
    const char *two_stems; /* NULL: all sources */
    dmx_other_method other_method;
    dmx_clip_mode clip_mode;
    dmx_audio_format format;    /* output format */
    const char *const *outputs; /* one path per output stem, in dmx_file_stems order;
                                      their directories must exist */
    int32_t n_outputs;
    int64_t max_frames; /* 0: any length; else longer input (frames at the model
                                      rate) fails with DMX_ERR_BAD_INPUT as soon as decoding
                                      passes it, before any separation work */
} dmx_file_job;

/* Separates job->input with session `s` (whose model decides rate and
 * channels) and writes the outputs. `opts` as for dmx_separate (its
 * normalize field is ignored: files always get upstream's normalisation).
 * *frames_out (may be NULL) receives the decoded length. Returns DMX_OK, or
 * DMX_ERR_IO/DMX_ERR_DECODE (input), DMX_ERR_BAD_INPUT (longer than
 * job->max_frames), DMX_ERR_ENCODE/DMX_ERR_IO (outputs),
 * DMX_ERR_CANCELLED, DMX_ERR_NOMEM, DMX_ERR_INVALID_ARG, with
 * dmx_last_error() saying which file and why. */
dmx_status dmx_separate_file(dmx_session *s, const dmx_file_job *job, const dmx_separate_opts *opts,
                             int64_t *frames_out);

#ifdef __cplusplus
}
#endif
#endif
