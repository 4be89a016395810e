/*
 * encode.c - the streaming encoder (dmx_encoder_*): planar float in,
 * WAV (s16/s24/f32), FLAC (s16/s24) or MP3 (libmp3lame) out, written to
 * "<path>.part" and renamed to the final name only on a successful close.
 */
#include "audio_internal.h"
#include "demix/audio.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>

#define MAX_CH DMX_AUDIO_MAX_CHANNELS
/* Frame size used for codecs that take any (PCM). */
#define PCM_FRAME 4096

struct dmx_encoder {
    char *path, *part; /* final name and "<path>.part", owned */
    dmx_audio_format fmt;
    int32_t rate, ch;
    const AVCodec *codec;
    AVCodecContext *cc;
    AVFormatContext *oc;
    AVStream *st;
    AVFrame *frame;
    AVPacket *pkt;
    enum AVSampleFormat sfmt;
    int frame_size; /* samples per frame sent to the codec */
    int filled;     /* samples in the current frame */
    int small_last; /* codec accepts a short final frame */
    int header_written;
    int64_t pts, frames_in;
    dmx_status sticky; /* first error seen; the encoder is dead after it */
};

/* ---- capability queries (portable across FFmpeg 5..7) --------------------- */

static int codec_has_sample_fmt(const AVCodec *c, enum AVSampleFormat f) {
    const enum AVSampleFormat *p;
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(61, 13, 100)
    const void *cfg = NULL;
    int n = 0;
    if (avcodec_get_supported_config(NULL, c, AV_CODEC_CONFIG_SAMPLE_FORMAT, 0, &cfg, &n) < 0)
        return 0;
    if (!cfg) return 1;
    p = cfg;
    for (int i = 0; i < n; i++)
        if (p[i] == f) return 1;
    return 0;
#else
    if (!c->sample_fmts) return 1;
    for (p = c->sample_fmts; *p != AV_SAMPLE_FMT_NONE; p++)
        if (*p == f) return 1;
    return 0;
#endif
}

static int codec_has_rate(const AVCodec *c, int rate) {
    const int *p;
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(61, 13, 100)
    const void *cfg = NULL;
    int n = 0;
    if (avcodec_get_supported_config(NULL, c, AV_CODEC_CONFIG_SAMPLE_RATE, 0, &cfg, &n) < 0)
        return 0;
    if (!cfg) return 1;
    p = cfg;
    for (int i = 0; i < n; i++)
        if (p[i] == rate) return 1;
    return 0;
#else
    if (!c->supported_samplerates) return 1;
    for (p = c->supported_samplerates; *p; p++)
        if (*p == rate) return 1;
    return 0;
#endif
}

/* The libav muxer and encoder names for a format. */
int dmx__audio_codec_names(const dmx_audio_format *f, const char **muxer, const char **encoder,
                           enum AVSampleFormat *sfmt) {
    switch (f->container) {
        case DMX_AUDIO_WAV:
            *muxer = "wav";
            switch (f->depth) {
                case DMX_DEPTH_S16:
                    *encoder = "pcm_s16le";
                    *sfmt = AV_SAMPLE_FMT_S16;
                    return 0;
                case DMX_DEPTH_S24:
                    *encoder = "pcm_s24le";
                    *sfmt = AV_SAMPLE_FMT_S32;
                    return 0;
                case DMX_DEPTH_F32:
                    *encoder = "pcm_f32le";
                    *sfmt = AV_SAMPLE_FMT_FLT;
                    return 0;
            }
            return -1;
        case DMX_AUDIO_FLAC:
            *muxer = "flac";
            *encoder = "flac";
            switch (f->depth) {
                case DMX_DEPTH_S16: *sfmt = AV_SAMPLE_FMT_S16; return 0;
                case DMX_DEPTH_S24: *sfmt = AV_SAMPLE_FMT_S32; return 0;
                default: return -1;
            }
        case DMX_AUDIO_MP3:
            *muxer = "mp3";
            *encoder = "libmp3lame";
            *sfmt = AV_SAMPLE_FMT_S16P;
            return 0;
    }
    return -1;
}

/* ---- sample conversion ------------------------------------------------------- */

/* float -> s16 as FFmpeg's swresample does: round to nearest, clip. */
static inline int16_t f_to_s16(float x) {
    if (x != x) return 0;
    float v = x * 32768.0f;
    if (v >= 32767.0f) return 32767;
    if (v <= -32768.0f) return -32768;
    return (int16_t)lrintf(v);
}

/* float -> s24 (in the low 24 bits), same rule. */
static inline int32_t f_to_s24(float x) {
    if (x != x) return 0;
    float v = x * 8388608.0f;
    if (v >= 8388607.0f) return 8388607;
    if (v <= -8388608.0f) return -8388608;
    return (int32_t)lrintf(v);
}

/* float -> s16 as upstream Demucs's i16_pcm for MP3: clamp to [-1, 1], times
 * 32767, truncate toward zero (torch .short()). */
static inline int16_t f_to_s16_upstream(float x) {
    if (x != x) return 0;
    if (x > 1.0f) x = 1.0f;
    if (x < -1.0f) x = -1.0f;
    return (int16_t)(x * 32767.0f);
}

/* Converts n frames from planar[] (starting at src_off) into the current
 * frame at sample offset `at`. */
static void convert_into(dmx_encoder *e, const float *const *planar, int64_t src_off, int at,
                         int n) {
    const int ch = e->ch;
    switch (e->sfmt) {
        case AV_SAMPLE_FMT_S16: {
            int16_t *d = (int16_t *)e->frame->data[0] + (size_t)at * ch;
            for (int c = 0; c < ch; c++) {
                const float *s = planar[c] + src_off;
                for (int i = 0; i < n; i++) d[(size_t)i * ch + c] = f_to_s16(s[i]);
            }
            break;
        }
        case AV_SAMPLE_FMT_S32: { /* 24-bit in the high bits, as pcm_s24le/flac expect */
            int32_t *d = (int32_t *)e->frame->data[0] + (size_t)at * ch;
            for (int c = 0; c < ch; c++) {
                const float *s = planar[c] + src_off;
                for (int i = 0; i < n; i++) d[(size_t)i * ch + c] = f_to_s24(s[i]) * 256;
            }
            break;
        }
        case AV_SAMPLE_FMT_FLT: {
            float *d = (float *)e->frame->data[0] + (size_t)at * ch;
            for (int c = 0; c < ch; c++) {
                const float *s = planar[c] + src_off;
                for (int i = 0; i < n; i++) d[(size_t)i * ch + c] = s[i];
            }
            break;
        }
        case AV_SAMPLE_FMT_S16P:
            for (int c = 0; c < ch; c++) {
                int16_t *d = (int16_t *)e->frame->extended_data[c] + at;
                const float *s = planar[c] + src_off;
                for (int i = 0; i < n; i++) d[i] = f_to_s16_upstream(s[i]);
            }
            break;
        default: break;
    }
}

/* ---- codec / muxer plumbing -------------------------------------------------- */

static dmx_status fail_io_or(dmx_encoder *e, int ret, dmx_status otherwise, const char *what) {
    dmx_status s = dmx__averr_is_os(ret)    ? DMX_ERR_IO
                   : ret == AVERROR(ENOMEM) ? DMX_ERR_NOMEM
                                            : otherwise;
    return dmx__av_fail(s, ret, "%s %s", what, e->path);
}

/* Moves every packet the codec has ready into the file. */
static dmx_status drain_packets(dmx_encoder *e) {
    for (;;) {
        int ret = avcodec_receive_packet(e->cc, e->pkt);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return DMX_OK;
        if (ret < 0) return fail_io_or(e, ret, DMX_ERR_ENCODE, "cannot encode");
        av_packet_rescale_ts(e->pkt, e->cc->time_base, e->st->time_base);
        e->pkt->stream_index = e->st->index;
        ret = av_interleaved_write_frame(e->oc, e->pkt); /* takes the packet's data */
        av_packet_unref(e->pkt);
        if (ret < 0) return fail_io_or(e, ret, DMX_ERR_ENCODE, "cannot write");
        if (e->oc->pb && e->oc->pb->error < 0)
            return fail_io_or(e, e->oc->pb->error, DMX_ERR_IO, "cannot write");
    }
}

/* Sends the current frame (its first `n` samples) to the codec. */
static dmx_status send_frame(dmx_encoder *e, int n) {
    e->frame->nb_samples = n;
    e->frame->pts = e->pts;
    e->pts += n;
    int ret = avcodec_send_frame(e->cc, e->frame);
    e->filled = 0;
    if (ret < 0) return fail_io_or(e, ret, DMX_ERR_ENCODE, "cannot encode");
    return drain_packets(e);
}

/* Makes the staging frame writable (the codec may still hold a reference to
 * its buffers) and full-sized. */
static dmx_status frame_ready(dmx_encoder *e) {
    e->frame->nb_samples = e->frame_size;
    int ret = av_frame_make_writable(e->frame);
    if (ret < 0) return dmx__av_fail(DMX_ERR_NOMEM, ret, "cannot encode %s", e->path);
    return DMX_OK;
}

static void free_encoder(dmx_encoder *e) {
    if (!e) return;
    avcodec_free_context(&e->cc);
    if (e->oc) {
        if (e->oc->pb) avio_closep(&e->oc->pb);
        avformat_free_context(e->oc);
    }
    av_frame_free(&e->frame);
    av_packet_free(&e->pkt);
    free(e->path);
    free(e->part);
    free(e);
}

static dmx_status setup(dmx_encoder *e) {
    const char *muxer = NULL, *encoder = NULL;
    if (dmx__audio_codec_names(&e->fmt, &muxer, &encoder, &e->sfmt) < 0)
        return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: %s output cannot be %s", e->path,
                         dmx_audio_container_extension(e->fmt.container),
                         e->fmt.depth == DMX_DEPTH_F32 ? "float" : "this depth");
    e->codec = avcodec_find_encoder_by_name(encoder);
    const AVOutputFormat *of = av_guess_format(muxer, NULL, NULL);
    if (!e->codec || !of)
        return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: this FFmpeg build has no %s %s", e->path,
                         e->codec ? "muxer" : "encoder", e->codec ? muxer : encoder);
    if (!codec_has_sample_fmt(e->codec, e->sfmt)) {
        if (e->sfmt == AV_SAMPLE_FMT_S16P && codec_has_sample_fmt(e->codec, AV_SAMPLE_FMT_S16))
            e->sfmt = AV_SAMPLE_FMT_S16; /* not expected for libmp3lame */
        else
            return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: encoder %s lacks sample format %s", e->path,
                             encoder, av_get_sample_fmt_name(e->sfmt));
    }
    if (!codec_has_rate(e->codec, e->rate))
        return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: %s cannot encode at %d Hz", e->path,
                         dmx_audio_container_extension(e->fmt.container), (int)e->rate);
    if (e->fmt.container == DMX_AUDIO_FLAC && e->rate > 655350)
        return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: flac cannot encode at %d Hz", e->path,
                         (int)e->rate);

    int ret = avformat_alloc_output_context2(&e->oc, of, NULL, NULL);
    if (ret < 0 || !e->oc) {
        e->oc = NULL;
        return dmx__av_fail(DMX_ERR_NOMEM, ret, "cannot create %s", e->path);
    }
    /* No version strings in the output: same bytes from any FFmpeg build of
     * the same codecs. (MP3 keeps its LAME/Xing tag, which gapless playback
     * needs; the muxer writes it regardless.) */
    if (e->fmt.container != DMX_AUDIO_MP3) e->oc->flags |= AVFMT_FLAG_BITEXACT;

    e->cc = avcodec_alloc_context3(e->codec);
    e->st = avformat_new_stream(e->oc, NULL);
    e->frame = av_frame_alloc();
    e->pkt = av_packet_alloc();
    if (!e->cc || !e->st || !e->frame || !e->pkt)
        return dmx__fail(DMX_ERR_NOMEM, "out of memory creating %s", e->path);
    e->cc->sample_fmt = e->sfmt;
    e->cc->sample_rate = e->rate;
    av_channel_layout_default(&e->cc->ch_layout, e->ch);
    e->cc->time_base = (AVRational){1, e->rate};
    e->cc->thread_count = 1;
    if (e->fmt.container != DMX_AUDIO_MP3) e->cc->flags |= AV_CODEC_FLAG_BITEXACT;
    if (e->sfmt == AV_SAMPLE_FMT_S32) e->cc->bits_per_raw_sample = 24;
    if (e->fmt.container == DMX_AUDIO_MP3) {
        e->cc->bit_rate = (int64_t)e->fmt.mp3_bitrate * 1000;
        e->cc->compression_level = e->fmt.mp3_preset; /* lame_set_quality */
    }
    if (e->oc->oformat->flags & AVFMT_GLOBALHEADER) e->cc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    ret = avcodec_open2(e->cc, e->codec, NULL);
    if (ret < 0)
        return dmx__av_fail(ret == AVERROR(ENOMEM) ? DMX_ERR_NOMEM : DMX_ERR_UNSUPPORTED, ret,
                            "%s: cannot set up the %s encoder (%d Hz, %d channels)", e->path,
                            encoder, (int)e->rate, (int)e->ch);
    ret = avcodec_parameters_from_context(e->st->codecpar, e->cc);
    if (ret < 0) return dmx__av_fail(DMX_ERR_NOMEM, ret, "cannot create %s", e->path);
    e->st->time_base = e->cc->time_base;

    const int caps = e->codec->capabilities;
    if (e->cc->frame_size > 0 && !(caps & AV_CODEC_CAP_VARIABLE_FRAME_SIZE)) {
        e->frame_size = e->cc->frame_size;
        e->small_last = (caps & AV_CODEC_CAP_SMALL_LAST_FRAME) != 0;
    } else {
        e->frame_size = PCM_FRAME;
        e->small_last = 1;
    }
    e->frame->format = e->sfmt;
    e->frame->sample_rate = e->rate;
    e->frame->nb_samples = e->frame_size;
    ret = av_channel_layout_copy(&e->frame->ch_layout, &e->cc->ch_layout);
    if (ret >= 0) ret = av_frame_get_buffer(e->frame, 0);
    if (ret < 0) return dmx__av_fail(DMX_ERR_NOMEM, ret, "cannot create %s", e->path);

    /* The file itself: "<path>.part", local only. */
    char *url = dmx__file_url(e->part);
    if (!url) return dmx__fail(DMX_ERR_NOMEM, "out of memory creating %s", e->path);
    AVDictionary *opts = NULL;
    av_dict_set(&opts, "protocol_whitelist", "file", 0);
    ret = avio_open2(&e->oc->pb, url, AVIO_FLAG_WRITE, NULL, &opts);
    av_dict_free(&opts);
    free(url);
    if (ret < 0) {
        e->oc->pb = NULL;
        return dmx__av_fail(dmx__averr_is_os(ret) ? DMX_ERR_IO : DMX_ERR_ENCODE, ret,
                            "cannot create %s", e->part);
    }
    ret = avformat_write_header(e->oc, NULL);
    if (ret < 0) return fail_io_or(e, ret, DMX_ERR_ENCODE, "cannot write the header of");
    e->header_written = 1;
    return DMX_OK;
}

/* ---- public API -------------------------------------------------------------- */

dmx_status dmx_encoder_open(const char *path, const dmx_audio_format *fmt, int32_t rate,
                            int32_t channels, dmx_encoder **out) {
    if (out) *out = NULL;
    if (!out || !path || !*path)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_encoder_open: %s",
                         !out ? "out is NULL" : "empty path");
    if (rate <= 0 || rate > 1000000)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_encoder_open: bad sample rate %d", (int)rate);
    if (channels < 1 || channels > MAX_CH)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_encoder_open: bad channel count %d",
                         (int)channels);
    dmx_audio_format f;
    if (fmt)
        f = *fmt;
    else
        dmx_audio_format_init(&f, DMX_AUDIO_WAV);
    if ((unsigned)f.container > DMX_AUDIO_MP3 || (unsigned)f.depth > DMX_DEPTH_F32)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_encoder_open: bad format");
    if (f.mp3_bitrate == 0) f.mp3_bitrate = 320;
    if (f.mp3_preset == 0) f.mp3_preset = 2;
    if (f.container == DMX_AUDIO_MP3) {
        if (f.mp3_bitrate < 8 || f.mp3_bitrate > 320)
            return dmx__fail(DMX_ERR_INVALID_ARG, "mp3 bitrate %d kbit/s is out of range 8..320",
                             (int)f.mp3_bitrate);
        if (f.mp3_preset < 2 || f.mp3_preset > 7)
            return dmx__fail(DMX_ERR_INVALID_ARG, "mp3 preset %d is out of range 2..7",
                             (int)f.mp3_preset);
    }
    dmx__audio_init();
    dmx_encoder *e = calloc(1, sizeof *e);
    if (!e) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    size_t n = strlen(path);
    e->path = strdup(path);
    e->part = malloc(n + 6);
    if (!e->path || !e->part) {
        free_encoder(e);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    }
    memcpy(e->part, path, n);
    memcpy(e->part + n, ".part", 6);
    e->fmt = f;
    e->rate = rate;
    e->ch = channels;
    dmx_status st = setup(e);
    if (st) {
        if (e->oc && e->oc->pb)
            dmx_encoder_abort(e); /* the .part exists: delete it */
        else
            free_encoder(e);
        return st;
    }
    dmx__clear_error();
    *out = e;
    return DMX_OK;
}

dmx_status dmx_encoder_write(dmx_encoder *enc, const float *const *planar, int64_t frames) {
    if (!enc || (!planar && frames > 0) || frames < 0)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_encoder_write: bad argument");
    if (enc->sticky) return enc->sticky;
    int64_t done = 0;
    while (done < frames) {
        dmx_status st;
        if (enc->filled == 0 && (st = frame_ready(enc))) return enc->sticky = st;
        int64_t room = enc->frame_size - enc->filled, left = frames - done;
        int n = (int)(left < room ? left : room);
        convert_into(enc, planar, done, enc->filled, n);
        enc->filled += n;
        done += n;
        enc->frames_in += n;
        if (enc->filled == enc->frame_size && (st = send_frame(enc, enc->frame_size)))
            return enc->sticky = st;
    }
    return DMX_OK;
}

int64_t dmx_encoder_frames(const dmx_encoder *enc) { return enc ? enc->frames_in : 0; }

static dmx_status finish(dmx_encoder *e) {
    dmx_status st;
    if (e->sticky) return e->sticky;
    if (e->filled > 0) {
        int n = e->filled;
        if (!e->small_last) { /* pad the last frame with silence */
            int bps = av_get_bytes_per_sample(e->sfmt);
            if (av_sample_fmt_is_planar(e->sfmt)) {
                for (int c = 0; c < e->ch; c++)
                    memset(e->frame->extended_data[c] + (size_t)n * bps, 0,
                           (size_t)(e->frame_size - n) * bps);
            } else {
                memset(e->frame->data[0] + (size_t)n * bps * e->ch, 0,
                       (size_t)(e->frame_size - n) * bps * e->ch);
            }
            n = e->frame_size;
        }
        if ((st = send_frame(e, n))) return st;
    }
    int ret = avcodec_send_frame(e->cc, NULL);
    if (ret < 0 && ret != AVERROR_EOF) return fail_io_or(e, ret, DMX_ERR_ENCODE, "cannot encode");
    if ((st = drain_packets(e))) return st;
    ret = av_write_trailer(e->oc);
    if (ret < 0) return fail_io_or(e, ret, DMX_ERR_ENCODE, "cannot finish");
    e->header_written = 0;
    avio_flush(e->oc->pb);
    if (e->oc->pb->error < 0) return fail_io_or(e, e->oc->pb->error, DMX_ERR_IO, "cannot write");
    ret = avio_closep(&e->oc->pb);
    if (ret < 0) return fail_io_or(e, ret, DMX_ERR_IO, "cannot write");
    if (rename(e->part, e->path) != 0)
        return dmx__fail(DMX_ERR_IO, "cannot rename %s to %s: %s", e->part, e->path,
                         strerror(errno));
    return DMX_OK;
}

dmx_status dmx_encoder_close(dmx_encoder *enc) {
    if (!enc) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_encoder_close: NULL encoder");
    dmx_status st = finish(enc);
    if (st) {
        dmx_encoder_abort(enc);
        return st;
    }
    free_encoder(enc);
    dmx__clear_error();
    return DMX_OK;
}

void dmx_encoder_abort(dmx_encoder *enc) {
    if (!enc) return;
    char *part = enc->part;
    enc->part = NULL;
    free_encoder(enc); /* closes the file first */
    if (part) {
        unlink(part);
        free(part);
    }
}
