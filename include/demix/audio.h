/*
 * audio.h - demix audio I/O: decode any file FFmpeg can read into planar
 * float at a chosen rate and channel count, and encode planar float to
 * WAV (s16/s24/f32), FLAC (s16/s24) or MP3. This module (library target
 * demix_audio) is the only part of demix that uses FFmpeg's libav*.
 *
 * Objects and ownership
 *   dmx_decoder  A streaming reader of one file. Created by dmx_decoder_open(),
 *                freed by dmx_decoder_close() (accepts NULL). Use from one
 *                thread at a time; independent decoders may run concurrently.
 *   dmx_encoder  A streaming writer of one file. Created by dmx_encoder_open(),
 *                ended by exactly one of dmx_encoder_close() (finalise and
 *                publish) or dmx_encoder_abort() (discard); both free it.
 * Strings returned by functions here are static or owned by the object they
 * came from (valid until it is freed); never free them.
 *
 * Audio layout: planar float32, one pointer per channel. Nominal range
 * [-1, 1]; integer PCM maps as FFmpeg does (s16 v -> v/32768, s24 v -> v/2^23).
 *
 * Paths are plain local file names (no URLs or protocols); nested resources
 * (playlists, concat lists, ...) are refused, so decoding an untrusted upload
 * reads that one file only.
 *
 * Errors: every fallible call returns a dmx_status and sets a one-line detail
 * readable with dmx_last_error() (status.h). Nothing here prints or exits;
 * FFmpeg's own log messages go to the demix log callback (dmx_log_set).
 */
#ifndef DEMIX_AUDIO_H
#define DEMIX_AUDIO_H

#include <stdint.h>

#include "demix/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Upper bound on channels a decoder may be asked for or an encoder may write. */
#define DMX_AUDIO_MAX_CHANNELS 8

/* ---- decoding ------------------------------------------------------------- */

typedef struct dmx_decoder dmx_decoder;

/* Opens `path` and prepares to decode its first audio stream that FFmpeg
 * can decode (in a video file too; video is ignored) to `target_rate` Hz and `target_channels`
 * channels. 0 for either keeps the source's own rate / channel count.
 *
 * Rate: if the source rate equals the target rate, samples pass through
 * untouched (a float32 WAV decodes to exactly its stored floats; integer PCM
 * is scaled by an exact power of two). Otherwise libswresample converts with
 * its default windowed-sinc filter (what upstream Demucs gets from `ffmpeg
 * -ar`).
 * Channels, as upstream Demucs's convert_audio_channels():
 *   same count      -> unchanged;
 *   target 1        -> mean of all source channels;
 *   source 1        -> the mono signal copied to every target channel;
 *   source > target -> the first `target_channels` channels (no downmix);
 *   otherwise       -> DMX_ERR_UNSUPPORTED.
 * The file is checked here: open decodes the first audio, so a file without
 * decodable audio fails now rather than on the first read.
 *
 * On success *out receives a new decoder (free with dmx_decoder_close). On
 * failure *out = NULL and: DMX_ERR_INVALID_ARG (NULL/empty path, bad target),
 * DMX_ERR_IO (missing, unreadable, a directory), DMX_ERR_DECODE (empty, not
 * audio, corrupt, no audio stream, "no audio" frames), DMX_ERR_UNSUPPORTED
 * (channel case above), DMX_ERR_NOMEM. */
dmx_status dmx_decoder_open(const char *path, int32_t target_rate, int32_t target_channels,
                            dmx_decoder **out);

/* Reads up to `max_frames` frames into planar_out[0..channels-1], each a
 * caller-owned buffer with room for max_frames floats. *got receives the
 * number of frames written; 0 (with DMX_OK) means end of stream. Decode
 * errors in the middle of a file are skipped (as the ffmpeg CLI does) and
 * logged; a read error of the file itself returns DMX_ERR_IO. */
dmx_status dmx_decoder_read(dmx_decoder *dec, float *const *planar_out, int64_t max_frames,
                            int64_t *got);

/* Output sample rate / channel count (the targets, or the source's when 0
 * was asked). */
int32_t dmx_decoder_rate(const dmx_decoder *dec);
int32_t dmx_decoder_channels(const dmx_decoder *dec);

/* The source stream as found in the file: rate, channel count, codec and
 * container short names ("mp3", "flac", "wav", "mov,mp4,m4a,3gp,3g2,mj2").
 * Strings are owned by FFmpeg and static. */
int32_t dmx_decoder_source_rate(const dmx_decoder *dec);
int32_t dmx_decoder_source_channels(const dmx_decoder *dec);
const char *dmx_decoder_codec_name(const dmx_decoder *dec);
const char *dmx_decoder_container_name(const dmx_decoder *dec);

/* Expected number of output frames from the container's duration, or -1 if
 * unknown. Only a hint (for progress and preallocation): the real count can
 * differ by a few frames, or much more for badly muxed files. */
int64_t dmx_decoder_duration_hint(const dmx_decoder *dec);

/* Restarts decoding from the beginning of the file; the frames read after a
 * rewind are bit-identical to the first pass (the file is reopened), which is
 * what two-pass normalisation needs. On failure the decoder is unusable
 * except for dmx_decoder_close(). */
dmx_status dmx_decoder_rewind(dmx_decoder *dec);

/* Frees the decoder and closes the file. Accepts NULL. */
void dmx_decoder_close(dmx_decoder *dec);

/* Decodes the whole of `path` at `rate` Hz, `channels` channels (see
 * dmx_decoder_open; both must be > 0 here, else DMX_ERR_INVALID_ARG: use
 * dmx_audio_load_ex to keep the source's). On success *planar receives a malloc'ed array
 * of `channels` pointers, each a malloc'ed buffer of *frames floats, owned by
 * the caller: free with dmx_audio_free(*planar, channels). On failure
 * *planar = NULL and *frames = 0. */
dmx_status dmx_audio_load(const char *path, int32_t rate, int32_t channels, float ***planar,
                          int64_t *frames);

/* Same, also reporting the output rate and channel count (what 0 resolved
 * to); the array then has *out_channels pointers. Either out pointer may be
 * NULL. */
dmx_status dmx_audio_load_ex(const char *path, int32_t rate, int32_t channels, float ***planar,
                             int64_t *frames, int32_t *out_rate, int32_t *out_channels);

/* Frees what dmx_audio_load returned: each of the `channels` buffers, then
 * the array. Accepts NULL. */
void dmx_audio_free(float **planar, int32_t channels);

/* ---- encoding ------------------------------------------------------------- */

typedef enum dmx_audio_container {
    DMX_AUDIO_WAV = 0,
    DMX_AUDIO_FLAC = 1,
    DMX_AUDIO_MP3 = 2
} dmx_audio_container;

/* Sample encoding of WAV and FLAC output (MP3 ignores it). */
typedef enum dmx_audio_depth {
    DMX_DEPTH_S16 = 0, /* 16-bit integer (default) */
    DMX_DEPTH_S24 = 1, /* 24-bit integer (upstream --int24) */
    DMX_DEPTH_F32 = 2  /* 32-bit float, WAV only (upstream --float32) */
} dmx_audio_depth;

/* What to write. Initialise with dmx_audio_format_init() or
 * dmx_audio_format_from_name(), then adjust fields. Plain value, no
 * ownership. */
typedef struct dmx_audio_format {
    dmx_audio_container container;
    dmx_audio_depth depth; /* WAV: S16/S24/F32; FLAC: S16/S24 */
    int32_t mp3_bitrate;   /* MP3 constant bitrate in kbit/s (32..320); default 320 */
    int32_t mp3_preset;    /* MP3 encoder quality 2 (best) .. 7 (fastest), LAME's -q,
                                as upstream --mp3-preset; default 2 */
} dmx_audio_format;

/* Sets *f to the defaults for `c`: S16, 320 kbit/s, preset 2. */
void dmx_audio_format_init(dmx_audio_format *f, dmx_audio_container c);

/* Parses a format name, case-insensitive, with or without a leading dot:
 * "wav", "flac", "mp3". Fills *f with that container's defaults. Returns
 * DMX_OK, DMX_ERR_INVALID_ARG (NULL) or DMX_ERR_UNSUPPORTED (unknown name). */
dmx_status dmx_audio_format_from_name(const char *name, dmx_audio_format *f);

/* Guesses the format from the extension of `path` ("song.FLAC" -> flac).
 * Same returns as dmx_audio_format_from_name. */
dmx_status dmx_audio_format_from_path(const char *path, dmx_audio_format *f);

/* File extension without the dot ("wav", "flac", "mp3"); static; "" for an
 * unknown value. */
const char *dmx_audio_container_extension(dmx_audio_container c);

/* 1 if this build's FFmpeg has the muxer and encoder `c` needs (MP3 needs
 * libavcodec built with libmp3lame), else 0. */
int dmx_audio_container_available(dmx_audio_container c);

/* Space-separated names of the output formats available in this build, e.g.
 * "wav flac mp3". Static; never NULL. */
const char *dmx_audio_supported_formats(void);

typedef struct dmx_encoder dmx_encoder;

/* Creates `path` for writing `channels` (1..DMX_AUDIO_MAX_CHANNELS) channels
 * at `rate` Hz in format `fmt` (NULL: WAV s16). Data goes to "<path>.part",
 * renamed to `path` (replacing any existing file) only when
 * dmx_encoder_close() succeeds; on any failure no file named `path` is
 * created or changed and the .part file is removed.
 *
 * Integer output: each sample is clamped to [-1, 1 - 2^-(bits-1)] after
 * scaling by 2^(bits-1) and rounded to nearest, as FFmpeg/torchaudio convert
 * float to PCM (so decoded integer PCM re-encodes to identical samples). NaN
 * becomes 0. Float WAV stores the floats unchanged. MP3 input is converted as
 * upstream's i16_pcm: clamp to [-1, 1], times 32767, truncated toward zero.
 * No clipping prevention (rescale/clamp modes) is applied here.
 *
 * On success *out receives a new encoder. On failure *out = NULL and:
 * DMX_ERR_INVALID_ARG, DMX_ERR_UNSUPPORTED (format/rate the codec cannot do,
 * e.g. MP3 at 96 kHz, FLAC f32), DMX_ERR_IO (cannot create the file),
 * DMX_ERR_ENCODE, DMX_ERR_NOMEM. */
dmx_status dmx_encoder_open(const char *path, const dmx_audio_format *fmt, int32_t rate,
                            int32_t channels, dmx_encoder **out);

/* Appends `frames` frames from planar[0..channels-1] (caller-owned, not kept).
 * Any chunk size works; samples are buffered to the codec's frame size.
 * Returns DMX_OK, DMX_ERR_INVALID_ARG, DMX_ERR_IO (write failed, e.g. disk
 * full), DMX_ERR_ENCODE or DMX_ERR_NOMEM. After an error the encoder can only
 * be aborted (close would also fail and discard). */
dmx_status dmx_encoder_write(dmx_encoder *enc, const float *const *planar, int64_t frames);

/* Frames accepted so far. */
int64_t dmx_encoder_frames(const dmx_encoder *enc);

/* Flushes the codec, finalises headers and renames "<path>.part" to `path`.
 * Always frees `enc`. On failure (DMX_ERR_IO, DMX_ERR_ENCODE, or the earlier
 * write error) the partial file is deleted and `path` is untouched.
 * Accepts NULL (returns DMX_ERR_INVALID_ARG). */
dmx_status dmx_encoder_close(dmx_encoder *enc);

/* Discards everything: frees `enc` and deletes "<path>.part"; `path` is
 * untouched. Accepts NULL. */
void dmx_encoder_abort(dmx_encoder *enc);

#ifdef __cplusplus
}
#endif
#endif
