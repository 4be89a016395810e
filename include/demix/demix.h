/*
 * demix.h - the demix engine: load Demucs checkpoints and bags, and
 * BS-/Mel-Band RoFormers from MSST configs, and separate audio into stems on
 * the CPU.
 *
 * Objects and ownership
 *   dmx_model    A loaded model or bag of models. Read-only after
 *                dmx_model_load() returns, so one model can serve any number
 *                of threads at once. Free with dmx_model_free().
 *   dmx_session  One job's scratch memory (sized once for a segment) and
 *                thread settings. Use a session from one thread at a time;
 *                create one per concurrent job. Free with dmx_session_free().
 * Whoever calls a _new/_load function owns the result and calls the matching
 * _free; every _free accepts NULL.
 *
 * Audio layout
 *   Input:  planar float, `channels` pointers of `n_samples` each, at the
 *           model's sample rate, with channels == dmx_model_channels() (the
 *           audio module converts mono/multichannel/other rates beforehand).
 *   Output: planar float, sources x channels pointers of `n_samples` each,
 *           pointer index = source * channels + channel, in the order of
 *           dmx_model_source_name().
 *
 * Errors: every fallible call returns a dmx_status (see status.h) and sets a
 * detail message readable with dmx_last_error(). The library never prints and
 * never exits; diagnostics go to the log callback installed with dmx_log_set().
 */
#ifndef DEMIX_DEMIX_H
#define DEMIX_DEMIX_H

#include <stdatomic.h>
#include <stdint.h>

#include "demix/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DMX_VERSION_STRING "0.1.0"

typedef struct dmx_model dmx_model;
typedef struct dmx_session dmx_session;

/* ---- logging --------------------------------------------------------------- */

typedef enum dmx_log_level {
    DMX_LOG_DEBUG = 0,
    DMX_LOG_INFO = 1,
    DMX_LOG_WARN = 2,
    DMX_LOG_ERROR = 3
} dmx_log_level;

/* Installs the log sink for the whole library (NULL: discard, the default).
 * The callback may be called from any thread that runs demix code. */
typedef void (*dmx_log_fn)(void *user, dmx_log_level level, const char *msg);
void dmx_log_set(dmx_log_fn fn, void *user);

/* ---- models ----------------------------------------------------------------- */

/* Loads a single upstream checkpoint (`.th`) or an upstream bag (`.yaml`,
 * whose `models:` names are resolved next to the YAML file as `NAME.th` or
 * `NAME-<checksum>.th`). On success *out receives a new model; on failure
 * *out = NULL and the status says why (DMX_ERR_IO, DMX_ERR_CORRUPT,
 * DMX_ERR_UNSUPPORTED, DMX_ERR_MODEL, DMX_ERR_NOMEM). */
dmx_status dmx_model_load(const char *path, dmx_model **out);
/* A `.yaml` that is an MSST config (repo.h's rule: a `model:` section) is
 * loaded as dmx_model_load_config(path, NAME.ckpt beside it). */

/* Loads a BS-RoFormer or Mel-Band RoFormer from an MSST (ZFTurbo's
 * Music-Source-Separation-Training) YAML config and its checkpoint (a state
 * dict, `{'state_dict': ...}` or an MSST training checkpoint). The model has
 * one member; its sources are the config's instruments (training.
 * target_instrument, else training.instruments), its segment the config's
 * chunk_size. Its streams and dmx_separate() run MSST's whole-track chunking
 * (chunk_size, inference.num_overlap, batch size 1) instead of upstream
 * Demucs' apply_model: the options shifts, seed, overlap, segment, split,
 * transition_power and normalize do not apply and are ignored (no
 * normalisation: dmx_stream_analyze accepts and ignores its input), and
 * progress counts output frames (total = the song's frames). Ownership and
 * statuses as dmx_model_load (DMX_ERR_UNSUPPORTED for config options demix
 * does not implement). */
dmx_status dmx_model_load_config(const char *config_path, const char *ckpt_path, dmx_model **out);
void dmx_model_free(dmx_model *m);

/* Number of sources (stems) the model outputs, e.g. 4 or 6. */
int32_t dmx_model_n_sources(const dmx_model *m);
/* Name of source i ("drums", "bass", ...), owned by the model; NULL if i is
 * out of range. */
const char *dmx_model_source_name(const dmx_model *m, int32_t i);
/* Index of the source called `name`, or -1. */
int32_t dmx_model_source_index(const dmx_model *m, const char *name);
int32_t dmx_model_samplerate(const dmx_model *m);
int32_t dmx_model_channels(const dmx_model *m);
/* Training segment length in seconds (39/5 = 7.8 for the htdemucs family);
 * for a bag, the smallest segment of its members. */
double dmx_model_segment(const dmx_model *m);
/* The longest `segment` a run may ask for (upstream's max_allowed_segment):
 * the smallest segment of the members whose segment is fixed (HTDemucs), or
 * INFINITY when no member's is. */
double dmx_model_max_segment(const dmx_model *m);
/* 1 for a single model, the member count for a bag. */
int32_t dmx_model_n_members(const dmx_model *m);
/* Total parameter count over all members. */
int64_t dmx_model_n_params(const dmx_model *m);

/* ---- separation ------------------------------------------------------------- */

/* Progress: called after each model evaluation of one segment, when its
 * result is added in (on the thread that called separate/feed/finish, so
 * with several threads possibly a little after the evaluation ended, or
 * within dmx_stream_finish); `done` goes from 1 to `total` (segments x
 * shifts x bag members). Return 0 to go on, non-zero to cancel (the run
 * then returns DMX_ERR_CANCELLED). */
typedef int (*dmx_progress_fn)(void *user, int64_t done, int64_t total);

typedef struct dmx_separate_opts {
    int32_t shifts; /* random time shifts averaged (upstream `shifts`); 0 = none */
    uint64_t seed;  /* seed for the shift offsets (reproducible) */
    double overlap; /* segment overlap fraction, [0, 1); default 0.25 */
    double segment; /* seconds per segment; 0 = the model's own */
    int32_t split;  /* 1: split into overlapping segments (default); 0: whole input at once */
    double transition_power;  /* exponent of the triangular cross-fade weights; default 1 */
    int32_t normalize;        /* 1: upstream separator pipeline (normalise by the mono
                                reference's mean/std, separate, de-normalise); default 1 */
    int32_t n_threads;        /* compute threads for this run; 0 = dmx_cpu_count() */
    dmx_progress_fn progress; /* may be NULL */
    void *progress_user;
    atomic_int *cancel; /* optional: set to non-zero from any thread to cancel */
} dmx_separate_opts;

/* Fills `o` with upstream's defaults (shifts 0, overlap 0.25, split, power 1,
 * normalize 1, seed 0, all cores). */
void dmx_separate_opts_init(dmx_separate_opts *o);

/* ---- threads ----------------------------------------------------------------
 * A run computes with `n_threads` threads: that many segment evaluations side
 * by side, each single-threaded, each starting as soon as a thread is free
 * (a thread with none left helps the others' matrix products). With more
 * than one, they are the run's own threads and the calling thread only
 * feeds them, adds up results and writes (decoding and encoding, in the
 * CLI and the service: light beside the evaluations, which it overlaps).
 * The engine sets OpenBLAS to one thread once
 * per process (OpenBLAS 0.3.21's thread count is process-wide, so a per-run
 * setting would change other runs' threads) and never changes it again.
 *
 * The one rule that divides the machine between runs going on at once (the
 * CLI's -j tracks, the service's workers): of `cpus` CPUs, `threads` compute
 * threads in all are used (0: all CPUs; never more than `cpus`); at most
 * that many runs go at once, and each gets an equal share, so
 * jobs x threads_per_job <= threads <= cpus. */
typedef struct dmx_thread_plan {
    int32_t jobs;            /* runs at once: min(jobs asked, threads), at least 1 */
    int32_t threads_per_job; /* n_threads of each run, at least 1 */
} dmx_thread_plan;
dmx_thread_plan dmx_threads_divide(int32_t cpus, int32_t jobs, int32_t threads);
/* CPUs this process may run on (its affinity mask), at least 1. */
int32_t dmx_cpu_count(void);

/* ---- BLAS kernels -------------------------------------------------------------
 * The OpenBLAS kernel family in use ("Haswell", "SkylakeX", "Cooperlake",
 * ...): OpenBLAS picks it from the CPU as it loads, unless OPENBLAS_CORETYPE
 * names one. AVX2 kernels on an AVX-512 CPU run matrix products at about
 * half the speed the CPU has. */
const char *dmx_blas_core(void);

/* Creates a session for `m` (which must outlive it). */
dmx_status dmx_session_new(const dmx_model *m, dmx_session **out);
void dmx_session_free(dmx_session *s);
/* The model a session runs. */
const dmx_model *dmx_session_model(const dmx_session *s);

/* Separates `n_samples` samples of planar audio `in` (channels pointers) into
 * `out` (sources x channels pointers, each with room for n_samples floats, owned
 * by the caller). `opts` may be NULL for defaults. Returns DMX_OK,
 * DMX_ERR_INVALID_ARG, DMX_ERR_CANCELLED or DMX_ERR_NOMEM. */
dmx_status dmx_separate(dmx_session *s, const float *const *in, int64_t n_samples,
                        float *const *out, const dmx_separate_opts *opts);

/* ---- streaming separation -------------------------------------------------- */

/* Streaming: memory stays bounded (about one segment of input and output per
 * bag member and shift) however long the song. Usage:
 *   dmx_stream_new(session, opts, write, user, &st);
 *   if (opts->normalize) feed the whole song to dmx_stream_analyze (pass 1:
 *       upstream's normalisation needs the song's mean and std first);
 *   dmx_stream_start(st, total_frames);
 *   feed the song again, in chunks of any size, to dmx_stream_feed (pass 2);
 *   dmx_stream_finish(st);  dmx_stream_free(st);
 * `write` receives the stems in order as soon as they are final: sources x
 * channels planar pointers (index source * channels + channel) of `frames`
 * samples, valid during the call only. It runs in the thread that called
 * feed/finish; a non-OK return aborts the stream with that status. The output
 * is bit-identical to dmx_separate() with the same options. */
typedef struct dmx_stream dmx_stream;
typedef dmx_status (*dmx_write_fn)(void *user, const float *const *stems, int64_t frames);

/* Creates a stream on session `s` (one stream per session at a time). `opts`
 * is copied (NULL: defaults). */
dmx_status dmx_stream_new(dmx_session *s, const dmx_separate_opts *opts, dmx_write_fn write,
                          void *user, dmx_stream **out);
/* 1 when the model's streams need neither pass 1 nor the song's length up
 * front: the RoFormers (MSST's demix() does not normalise, and its chunk
 * plan is settled as the audio arrives). Their streams accept
 * dmx_stream_start(st, DMX_FRAMES_UNKNOWN), so a file is decoded once; the
 * length is then whatever was fed before dmx_stream_finish, and the output
 * is the same bits as with the length given. */
int dmx_model_single_pass(const dmx_model *m);
#define DMX_FRAMES_UNKNOWN (-1)
/* For a stream of unknown length: the progress callback's `total` until the
 * end (e.g. a decoder's duration hint; <= 0: 0, unknown). Only progress
 * uses it; a short hint is raised to what was written. A no-op for any
 * other stream. */
dmx_status dmx_stream_expect(dmx_stream *st, int64_t frames);
/* Pass 1 (only when opts->normalize): planar input, channels pointers. */
dmx_status dmx_stream_analyze(dmx_stream *st, const float *const *in, int64_t frames);
/* Ends pass 1 and announces the song's length (must equal the frames
 * analysed when normalising; DMX_FRAMES_UNKNOWN when dmx_model_single_pass). */
dmx_status dmx_stream_start(dmx_stream *st, int64_t total_frames);
/* Pass 2: the same audio again, in order. Starts every evaluation its input
 * allows and writes every sample final so far. With more than one thread
 * the evaluations run on the stream's own threads and feed returns while
 * they run (decoding the next block overlaps them; a feed waits only when
 * the input window is full), so `write` may lag the input by a few
 * segments. */
dmx_status dmx_stream_feed(dmx_stream *st, const float *const *in, int64_t frames);
/* After the last feed: runs what is left, waits for every evaluation and
 * writes the rest. */
dmx_status dmx_stream_finish(dmx_stream *st);
/* Frees the stream (waiting for evaluations still running, if it was
 * abandoned before dmx_stream_finish). */
void dmx_stream_free(dmx_stream *st);

#ifdef __cplusplus
}
#endif
#endif
