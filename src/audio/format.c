/*
 * format.c - output format names, extensions and availability
 * (dmx_audio_format_*, dmx_audio_container_*, dmx_audio_supported_formats).
 */
#include "audio_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

static const char *const k_ext[] = {"wav", "flac", "mp3"};

void dmx_audio_format_init(dmx_audio_format *f, dmx_audio_container c) {
    if (!f) return;
    memset(f, 0, sizeof *f);
    f->container = c;
    f->depth = DMX_DEPTH_S16;
    f->mp3_bitrate = 320;
    f->mp3_preset = 2;
}

dmx_status dmx_audio_format_from_name(const char *name, dmx_audio_format *f) {
    if (!name || !f) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_audio_format_from_name: NULL");
    if (name[0] == '.') name++;
    for (int c = 0; c < (int)(sizeof k_ext / sizeof k_ext[0]); c++) {
        if (strcasecmp(name, k_ext[c]) == 0) {
            dmx_audio_format_init(f, (dmx_audio_container)c);
            return DMX_OK;
        }
    }
    return dmx__fail(DMX_ERR_UNSUPPORTED, "unknown audio format '%s' (supported: wav, flac, mp3)",
                     name);
}

dmx_status dmx_audio_format_from_path(const char *path, dmx_audio_format *f) {
    if (!path || !f) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_audio_format_from_path: NULL");
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: no file extension to tell the audio format",
                         path);
    return dmx_audio_format_from_name(dot + 1, f);
}

const char *dmx_audio_container_extension(dmx_audio_container c) {
    return (unsigned)c < sizeof k_ext / sizeof k_ext[0] ? k_ext[c] : "";
}

int dmx_audio_container_available(dmx_audio_container c) {
    dmx__audio_init();
    dmx_audio_format f;
    dmx_audio_format_init(&f, c);
    const char *muxer, *encoder;
    enum AVSampleFormat sfmt;
    if (dmx__audio_codec_names(&f, &muxer, &encoder, &sfmt) < 0) return 0;
    return av_guess_format(muxer, NULL, NULL) != NULL &&
           avcodec_find_encoder_by_name(encoder) != NULL;
}

static char g_supported[64];
static pthread_once_t g_supported_once = PTHREAD_ONCE_INIT;

static void compute_supported(void) {
    size_t len = 0;
    for (int c = 0; c < (int)(sizeof k_ext / sizeof k_ext[0]); c++) {
        if (!dmx_audio_container_available((dmx_audio_container)c)) continue;
        int n =
            snprintf(g_supported + len, sizeof g_supported - len, "%s%s", len ? " " : "", k_ext[c]);
        if (n > 0) len += (size_t)n;
    }
}

const char *dmx_audio_supported_formats(void) {
    pthread_once(&g_supported_once, compute_supported);
    return g_supported;
}
