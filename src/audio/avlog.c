/*
 * avlog.c - one-time libav setup for the audio module: libav's log output
 * is captured (it never reaches stderr) and forwarded, one line at a time,
 * to the demix log callback, and single allocations are capped (hostile
 * headers); plus libav error formatting helpers.
 */
#include "audio_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavutil/error.h>
#include <libavutil/log.h>
#include <libavutil/mem.h>

/* The engine's internal log emitter (src/engine). Referenced weakly so this
 * module also links with an engine that does not provide it; then libav's
 * messages are simply dropped. */
extern void dmx__log(dmx_log_level level, const char *fmt, ...)
    __attribute__((weak, format(printf, 2, 3)));

void dmx__audio_log(dmx_log_level level, const char *fmt, ...) {
    if (!dmx__log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    dmx__log(level, "%s", line);
}

static void av_log_cb(void *avcl, int level, const char *fmt, va_list vl) {
    if (level > AV_LOG_INFO || !dmx__log) return;
    char line[1024];
    int print_prefix = 1;
    av_log_format_line2(avcl, level, fmt, vl, line, (int)sizeof line, &print_prefix);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    if (n == 0) return;
    dmx_log_level l = level <= AV_LOG_ERROR     ? DMX_LOG_WARN
                      : level <= AV_LOG_WARNING ? DMX_LOG_INFO
                                                : DMX_LOG_DEBUG;
    dmx__log(l, "ffmpeg: %s", line);
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Largest single libav allocation. libav's own cap is INT_MAX, and some
 * demuxers size buffers from header fields (a 113-byte WAV with a LIST chunk
 * claiming 2 GB made av_mallocz zero 2 GB); audio needs far less. */
#define DMX_AV_MAX_ALLOC ((size_t)256 << 20)

static void init_once(void) {
    av_max_alloc(DMX_AV_MAX_ALLOC);
    av_log_set_level(AV_LOG_INFO);
    av_log_set_callback(av_log_cb);
}

void dmx__audio_init(void) { pthread_once(&g_once, init_once); }

dmx_status dmx__av_fail(dmx_status s, int averr, const char *fmt, ...) {
    char msg[768], err[AV_ERROR_MAX_STRING_SIZE + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (av_strerror(averr, err, sizeof err) < 0) snprintf(err, sizeof err, "error %d", averr);
    return dmx__fail(s, "%s: %s", msg, err);
}

int dmx__averr_is_os(int averr) {
    switch (averr) {
        case AVERROR(ENOENT):
        case AVERROR(EACCES):
        case AVERROR(EIO):
        case AVERROR(ENOSPC):
        case AVERROR(EISDIR):
        case AVERROR(ENOTDIR):
        case AVERROR(EROFS):
        case AVERROR(EMFILE):
        case AVERROR(ENFILE):
        case AVERROR(ENAMETOOLONG):
        case AVERROR(EDQUOT):
        case AVERROR(EFBIG):
        case AVERROR(ELOOP):
        case AVERROR(EBADF):
        case AVERROR(EXDEV):
        case AVERROR(ENXIO):
        case AVERROR(ENODEV): return 1;
        default: return 0;
    }
}

char *dmx__file_url(const char *path) {
    size_t n = strlen(path);
    char *u = malloc(n + 6);
    if (!u) return NULL;
    memcpy(u, "file:", 5);
    memcpy(u + 5, path, n + 1);
    return u;
}
