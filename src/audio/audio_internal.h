/*
 * audio_internal.h - helpers shared by the files of the audio I/O module
 * (demix_audio): one-time libav setup, log routing and error formatting.
 */
#ifndef DMX_AUDIO_INTERNAL_H
#define DMX_AUDIO_INTERNAL_H

#include <stdint.h>

#include "demix/demix.h"
#include "demix/status.h"
#include "demix/audio.h"
#include "error.h" /* engine: dmx__fail, dmx__clear_error */

#include <libavutil/samplefmt.h>

/* Installs the libav log callback (once per process, thread-safe). Every
 * public entry point of the module calls it before touching libav. */
void dmx__audio_init(void);

/* Sends one diagnostic line to the demix log callback, if any. */
void dmx__audio_log(dmx_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like dmx__fail, with ": <libav's description of averr>" appended. */
dmx_status dmx__av_fail(dmx_status s, int averr, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 1 if the libav error code averr is an operating-system I/O error (a
 * negated errno such as ENOENT, EACCES, EIO, ENOSPC), 0 for a data error.
 * EPERM is not one: it is what deny_io_open (decode.c) answers. */
int dmx__averr_is_os(int averr);

/* Returns "file:" + path in a new malloc'ed string (NULL on OOM). The prefix
 * makes libav treat any name, even one with a colon, as a local file. */
char *dmx__file_url(const char *path);

/* The libav muxer, encoder and input sample format that write `f`
 * (encode.c). Returns 0, or -1 for a combination that does not exist
 * (FLAC f32, bad enum values). Strings are static. */
int dmx__audio_codec_names(const dmx_audio_format *f, const char **muxer, const char **encoder,
                           enum AVSampleFormat *sfmt);

#endif
