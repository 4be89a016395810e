/*
 * decode.c - the streaming decoder (dmx_decoder_*) and dmx_audio_load():
 * demux the first audio stream of a local file with libavformat, decode it
 * with libavcodec, map channels as upstream Demucs's convert_audio_channels,
 * and resample with libswresample only when the rate differs (same-rate
 * input passes through bit-exactly).
 */
#include "audio_internal.h"
#include "demix/audio.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>

#define MAX_CH DMX_AUDIO_MAX_CHANNELS
/* Consecutive failing packets after which a stream is declared undecodable. */
#define MAX_CONSECUTIVE_ERRORS 1000

struct dmx_decoder {
    char *path; /* owned copy, for reopening and messages */
    char *url;  /* "file:" + path */

    int32_t out_rate, out_ch; /* resolved output format (0 until resolved) */
    int32_t src_rate, src_ch; /* as found in the stream */

    /* libav state; torn down and rebuilt by rewind */
    AVIOContext *pb;
    AVFormatContext *fmt;
    AVCodecContext *cc;
    int stream;
    AVPacket *pkt;
    AVFrame *frame;
    SwrContext *swr;
    int swr_in_rate; /* input rate swr was made for */
    int demux_eof, dec_eof, done;
    int64_t frames_out; /* output frames produced since (re)open */
    int64_t errors;     /* packets that failed to decode */
    int consecutive_errors;
    int last_err;      /* last libav decode error, for messages */
    dmx_status sticky; /* a fatal error seen while decoding */

    /* planar float scratch at the source rate, out_ch channels (resampler input) */
    float *conv[MAX_CH];
    int64_t conv_cap;
    double *acc; /* mono mixdown accumulator */
    int64_t acc_cap;

    /* output FIFO: planar, frames [fifo_start, fifo_start + fifo_len) valid */
    float *fifo[MAX_CH];
    int64_t fifo_cap, fifo_start, fifo_len;
};

/* ---- buffers ----------------------------------------------------------------- */

static int grow_planar(float **bufs, int nch, int64_t *cap, int64_t need) {
    if (need <= *cap) return 0;
    int64_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    for (int c = 0; c < nch; c++) {
        float *p = realloc(bufs[c], (size_t)n * sizeof(float));
        if (!p) return -1;
        bufs[c] = p;
    }
    *cap = n;
    return 0;
}

/* Makes room for `extra` more frames at the FIFO's tail; returns the tail
 * offset, or -1 on OOM. */
static int64_t fifo_reserve(dmx_decoder *d, int64_t extra) {
    if (d->fifo_start > 0 && d->fifo_start + d->fifo_len + extra > d->fifo_cap) {
        for (int c = 0; c < d->out_ch; c++)
            memmove(d->fifo[c], d->fifo[c] + d->fifo_start, (size_t)d->fifo_len * sizeof(float));
        d->fifo_start = 0;
    }
    if (grow_planar(d->fifo, d->out_ch, &d->fifo_cap, d->fifo_start + d->fifo_len + extra) < 0)
        return -1;
    return d->fifo_start + d->fifo_len;
}

/* ---- sample conversion ------------------------------------------------------- */

/* Converts channel `ch` of `f` (any libav sample format) to float, exactly as
 * libswresample converts to AV_SAMPLE_FMT_FLT. */
static void load_channel(const AVFrame *f, int ch, float *dst) {
    const int n = f->nb_samples;
    const int nch = f->ch_layout.nb_channels;
    const int planar = av_sample_fmt_is_planar(f->format);
    const uint8_t *base = planar ? f->extended_data[ch] : f->extended_data[0];
    const int stride = planar ? 1 : nch;
    const int off = planar ? 0 : ch;
    switch (av_get_packed_sample_fmt(f->format)) {
        case AV_SAMPLE_FMT_U8: {
            const uint8_t *s = base;
            for (int i = 0; i < n; i++) dst[i] = (s[i * stride + off] - 0x80) * (1.0f / (1 << 7));
            break;
        }
        case AV_SAMPLE_FMT_S16: {
            const int16_t *s = (const int16_t *)base;
            for (int i = 0; i < n; i++) dst[i] = s[i * stride + off] * (1.0f / (1 << 15));
            break;
        }
        case AV_SAMPLE_FMT_S32: {
            const int32_t *s = (const int32_t *)base;
            for (int i = 0; i < n; i++) dst[i] = (float)s[i * stride + off] * (1.0f / (1U << 31));
            break;
        }
        case AV_SAMPLE_FMT_S64: {
            const int64_t *s = (const int64_t *)base;
            for (int i = 0; i < n; i++)
                dst[i] = (float)s[i * stride + off] * (1.0f / (float)(UINT64_C(1) << 63));
            break;
        }
        case AV_SAMPLE_FMT_FLT: {
            const float *s = (const float *)base;
            if (stride == 1)
                memcpy(dst, s, (size_t)n * sizeof(float));
            else
                for (int i = 0; i < n; i++) dst[i] = s[i * stride + off];
            break;
        }
        case AV_SAMPLE_FMT_DBL: {
            const double *s = (const double *)base;
            for (int i = 0; i < n; i++) dst[i] = (float)s[i * stride + off];
            break;
        }
        default: /* rejected before we get here */ memset(dst, 0, (size_t)n * sizeof(float)); break;
    }
}

/* Channel mapping of upstream convert_audio_channels: writes out_ch planar
 * channels of f->nb_samples frames into dst[]. The caller checked that the
 * mapping exists. */
static int map_channels(dmx_decoder *d, const AVFrame *f, float *const *dst) {
    const int nch = f->ch_layout.nb_channels, n = f->nb_samples;
    if (d->out_ch == 1 && nch > 1) {
        if (d->acc_cap < n) {
            double *a = realloc(d->acc, (size_t)n * sizeof(double));
            if (!a) return -1;
            d->acc = a;
            d->acc_cap = n;
        }
        memset(d->acc, 0, (size_t)n * sizeof(double));
        for (int c = 0; c < nch; c++) {
            load_channel(f, c, dst[0]);
            for (int i = 0; i < n; i++) d->acc[i] += dst[0][i];
        }
        for (int i = 0; i < n; i++) dst[0][i] = (float)(d->acc[i] / nch);
        return 0;
    }
    for (int c = 0; c < d->out_ch; c++) {
        if (nch == 1 && c > 0)
            memcpy(dst[c], dst[0], (size_t)n * sizeof(float));
        else
            load_channel(f, c, dst[c]);
    }
    return 0;
}

/* ---- resampler --------------------------------------------------------------- */

/* Drains what the resampler still holds into the FIFO and frees it. */
static dmx_status swr_drain(dmx_decoder *d) {
    if (!d->swr) return DMX_OK;
    for (;;) {
        int cap = swr_get_out_samples(d->swr, 0);
        if (cap <= 0) break;
        int64_t at = fifo_reserve(d, cap);
        if (at < 0) return dmx__fail(DMX_ERR_NOMEM, "out of memory resampling %s", d->path);
        uint8_t *out[MAX_CH];
        for (int c = 0; c < d->out_ch; c++) out[c] = (uint8_t *)(d->fifo[c] + at);
        int got = swr_convert(d->swr, out, cap, NULL, 0);
        if (got < 0) return dmx__av_fail(DMX_ERR_DECODE, got, "%s: resampler failed", d->path);
        if (got == 0) break;
        d->fifo_len += got;
        d->frames_out += got;
    }
    swr_free(&d->swr);
    return DMX_OK;
}

static dmx_status swr_setup(dmx_decoder *d, int in_rate) {
    AVChannelLayout lay;
    av_channel_layout_default(&lay, d->out_ch);
    int ret = swr_alloc_set_opts2(&d->swr, &lay, AV_SAMPLE_FMT_FLTP, d->out_rate, &lay,
                                  AV_SAMPLE_FMT_FLTP, in_rate, 0, NULL);
    av_channel_layout_uninit(&lay);
    if (ret >= 0) ret = swr_init(d->swr);
    if (ret < 0) {
        swr_free(&d->swr);
        return dmx__av_fail(ret == AVERROR(ENOMEM) ? DMX_ERR_NOMEM : DMX_ERR_DECODE, ret,
                            "%s: cannot resample %d Hz to %d Hz", d->path, in_rate, d->out_rate);
    }
    d->swr_in_rate = in_rate;
    return DMX_OK;
}

/* ---- frame handling ---------------------------------------------------------- */

static int supported_sample_fmt(int fmt) {
    switch (av_get_packed_sample_fmt(fmt)) {
        case AV_SAMPLE_FMT_U8:
        case AV_SAMPLE_FMT_S16:
        case AV_SAMPLE_FMT_S32:
        case AV_SAMPLE_FMT_S64:
        case AV_SAMPLE_FMT_FLT:
        case AV_SAMPLE_FMT_DBL: return 1;
        default: return 0;
    }
}

static dmx_status check_channels(const dmx_decoder *d, int nch) {
    if (nch < 1) return dmx__fail(DMX_ERR_DECODE, "%s: audio stream has no channels", d->path);
    if (nch != d->out_ch && d->out_ch != 1 && nch != 1 && nch < d->out_ch)
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: audio has %d channels; cannot make %d (only mono is expanded)",
                         d->path, nch, d->out_ch);
    return DMX_OK;
}

/* Converts one decoded frame and appends it to the FIFO. */
static dmx_status process_frame(dmx_decoder *d, const AVFrame *f) {
    const int n = f->nb_samples, nch = f->ch_layout.nb_channels, rate = f->sample_rate;
    if (n <= 0) return DMX_OK;
    if (rate <= 0)
        return dmx__fail(DMX_ERR_DECODE, "%s: decoded audio has no sample rate", d->path);
    if (!supported_sample_fmt(f->format))
        return dmx__fail(DMX_ERR_DECODE, "%s: unsupported sample format %s", d->path,
                         av_get_sample_fmt_name(f->format) ? av_get_sample_fmt_name(f->format)
                                                           : "?");
    if (nch > 64) return dmx__fail(DMX_ERR_DECODE, "%s: %d channels is too many", d->path, nch);
    if (d->src_rate <= 0) d->src_rate = rate;
    if (d->src_ch <= 0) d->src_ch = nch;
    if (d->out_rate == 0) d->out_rate = rate;
    if (d->out_ch == 0) d->out_ch = nch <= MAX_CH ? nch : MAX_CH;
    dmx_status st = check_channels(d, nch);
    if (st) return st;

    /* (Re)build the resampler when the input rate changes (also mid-stream). */
    if (d->swr && d->swr_in_rate != rate && (st = swr_drain(d))) return st;
    if (!d->swr && rate != d->out_rate && (st = swr_setup(d, rate))) return st;

    if (!d->swr) { /* same rate: straight into the FIFO, no arithmetic beyond scaling */
        int64_t at = fifo_reserve(d, n);
        if (at < 0) return dmx__fail(DMX_ERR_NOMEM, "out of memory decoding %s", d->path);
        float *dst[MAX_CH];
        for (int c = 0; c < d->out_ch; c++) dst[c] = d->fifo[c] + at;
        if (map_channels(d, f, dst) < 0)
            return dmx__fail(DMX_ERR_NOMEM, "out of memory decoding %s", d->path);
        d->fifo_len += n;
        d->frames_out += n;
        return DMX_OK;
    }
    if (grow_planar(d->conv, d->out_ch, &d->conv_cap, n) < 0 || map_channels(d, f, d->conv) < 0)
        return dmx__fail(DMX_ERR_NOMEM, "out of memory decoding %s", d->path);
    int cap = swr_get_out_samples(d->swr, n);
    if (cap < 0) return dmx__av_fail(DMX_ERR_DECODE, cap, "%s: resampler failed", d->path);
    int64_t at = fifo_reserve(d, cap);
    if (at < 0) return dmx__fail(DMX_ERR_NOMEM, "out of memory resampling %s", d->path);
    uint8_t *out[MAX_CH];
    const uint8_t *in[MAX_CH];
    for (int c = 0; c < d->out_ch; c++) {
        out[c] = (uint8_t *)(d->fifo[c] + at);
        in[c] = (const uint8_t *)d->conv[c];
    }
    int got = swr_convert(d->swr, out, cap, in, n);
    if (got < 0) return dmx__av_fail(DMX_ERR_DECODE, got, "%s: resampler failed", d->path);
    d->fifo_len += got;
    d->frames_out += got;
    return DMX_OK;
}

/* One step of the decode loop: produce some output, or reach the end.
 * Returns a fatal status (also stored as sticky), else DMX_OK. */
static dmx_status step(dmx_decoder *d) {
    dmx_status st;
    if (d->dec_eof) {
        if ((st = swr_drain(d))) return st;
        d->done = 1;
        return DMX_OK;
    }
    int ret = avcodec_receive_frame(d->cc, d->frame);
    if (ret >= 0) {
        d->consecutive_errors = 0;
        st = process_frame(d, d->frame);
        av_frame_unref(d->frame);
        return st;
    }
    if (ret == AVERROR_EOF) {
        d->dec_eof = 1;
        return DMX_OK;
    }
    if (ret != AVERROR(EAGAIN)) {
        /* A bad frame: skip it like the ffmpeg CLI does. */
        d->errors++;
        d->last_err = ret;
        if (++d->consecutive_errors > MAX_CONSECUTIVE_ERRORS)
            return dmx__av_fail(DMX_ERR_DECODE, ret, "%s: audio stream cannot be decoded", d->path);
        return DMX_OK;
    }
    if (d->demux_eof) { /* flushed but the decoder wants more: treat as the end */
        d->dec_eof = 1;
        return DMX_OK;
    }
    ret = av_read_frame(d->fmt, d->pkt);
    if (ret < 0) {
        if (ret != AVERROR_EOF) {
            if (dmx__averr_is_os(ret))
                return dmx__av_fail(DMX_ERR_IO, ret, "cannot read %s", d->path);
            /* Garbage after the audio ends the stream, as in the ffmpeg CLI. */
            char err[AV_ERROR_MAX_STRING_SIZE];
            av_strerror(ret, err, sizeof err);
            dmx__audio_log(DMX_LOG_WARN, "%s: demuxing stopped early: %s", d->path, err);
        }
        d->demux_eof = 1;
        ret = avcodec_send_packet(d->cc, NULL);
        if (ret < 0 && ret != AVERROR_EOF) d->dec_eof = 1;
        return DMX_OK;
    }
    if (d->pkt->stream_index == d->stream) {
        ret = avcodec_send_packet(d->cc, d->pkt);
        if (ret < 0 && ret != AVERROR(EAGAIN)) {
            d->errors++;
            d->last_err = ret;
            if (++d->consecutive_errors > MAX_CONSECUTIVE_ERRORS) {
                av_packet_unref(d->pkt);
                return dmx__av_fail(DMX_ERR_DECODE, ret, "%s: audio stream cannot be decoded",
                                    d->path);
            }
        }
    }
    av_packet_unref(d->pkt);
    return DMX_OK;
}

/* Decodes until the FIFO holds `want` frames or the stream ends. */
static dmx_status fill(dmx_decoder *d, int64_t want) {
    if (d->sticky) return d->sticky;
    while (d->fifo_len < want && !d->done) {
        dmx_status st = step(d);
        if (st) {
            d->sticky = st;
            return st;
        }
    }
    return DMX_OK;
}

/* ---- open / close ------------------------------------------------------------ */

/* Nested resources (playlist entries, concat lists, external references)
 * are refused: a decoder reads the one file it was given. */
static int deny_io_open(AVFormatContext *s, AVIOContext **pb, const char *url, int flags,
                        AVDictionary **options) {
    (void)s;
    (void)pb;
    (void)url;
    (void)flags;
    (void)options;
    return AVERROR(EPERM);
}

/* Demuxers that open further resources named inside the file. */
static int demuxer_allowed(const AVInputFormat *f) {
    static const char *const refused[] = {"concat", "hls", "applehttp", "dash", "imf",     "sdp",
                                          "rtsp",   "rtp", "image2",    "tee",  "ffconcat"};
    if (!f || (f->flags & AVFMT_NOFILE)) return 0;
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (strcmp(f->name, refused[i]) == 0) return 0;
    return 1;
}

static void close_pb(dmx_decoder *d) {
    if (d->pb) avio_closep(&d->pb);
}

/* Opens the file and its decoder, and decodes the first audio. */
static dmx_status open_stream(dmx_decoder *d) {
    struct stat sb;
    if (stat(d->path, &sb) != 0)
        return dmx__fail(DMX_ERR_IO, "cannot open %s: %s", d->path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return dmx__fail(DMX_ERR_IO, "cannot open %s: %s", d->path, strerror(EISDIR));
    if (!S_ISREG(sb.st_mode))
        return dmx__fail(DMX_ERR_IO, "cannot open %s: not a regular file", d->path);
    if (sb.st_size == 0) return dmx__fail(DMX_ERR_DECODE, "%s: empty file", d->path);

    AVDictionary *opts = NULL;
    av_dict_set(&opts, "protocol_whitelist", "file", 0);
    int ret = avio_open2(&d->pb, d->url, AVIO_FLAG_READ, NULL, &opts);
    av_dict_free(&opts);
    if (ret < 0) {
        d->pb = NULL;
        return dmx__av_fail(dmx__averr_is_os(ret) ? DMX_ERR_IO : DMX_ERR_DECODE, ret,
                            "cannot open %s", d->path);
    }
    d->fmt = avformat_alloc_context();
    d->pkt = av_packet_alloc();
    d->frame = av_frame_alloc();
    if (!d->fmt || !d->pkt || !d->frame) {
        close_pb(d);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory opening %s", d->path);
    }
    /* Probe first, to refuse demuxers that read other files or the network
     * (they would do it while opening). */
    const AVInputFormat *ifmt = NULL;
    ret = av_probe_input_buffer2(d->pb, &ifmt, d->url, NULL, 0, 0);
    if (ret < 0) {
        close_pb(d);
        if (dmx__averr_is_os(ret)) return dmx__av_fail(DMX_ERR_IO, ret, "cannot read %s", d->path);
        return dmx__fail(DMX_ERR_DECODE, "%s: not a recognised audio or video file", d->path);
    }
    if (!demuxer_allowed(ifmt)) {
        close_pb(d);
        return dmx__fail(DMX_ERR_DECODE,
                         "%s: %s files (which refer to other files) are not "
                         "accepted",
                         d->path, ifmt->name);
    }
    d->fmt->pb = d->pb;
    d->fmt->io_open = deny_io_open;
    av_dict_set(&opts, "protocol_whitelist", "file", 0);
    ret = avformat_open_input(&d->fmt, d->url, ifmt, &opts);
    av_dict_free(&opts);
    if (ret < 0) { /* d->fmt was freed */
        close_pb(d);
        if (dmx__averr_is_os(ret)) return dmx__av_fail(DMX_ERR_IO, ret, "cannot read %s", d->path);
        if (ret == AVERROR(EINVAL) || ret == AVERROR_INVALIDDATA) /* says nothing more */
            return dmx__fail(DMX_ERR_DECODE, "%s: not a recognised audio or video file", d->path);
        return dmx__av_fail(DMX_ERR_DECODE, ret, "%s: not a recognised audio or video file",
                            d->path);
    }
    /* Look only at audio while probing and demuxing. */
    d->stream = -1;
    for (unsigned i = 0; i < d->fmt->nb_streams; i++) {
        AVStream *s = d->fmt->streams[i];
        if (s->codecpar->codec_type == AVMEDIA_TYPE_AUDIO && d->stream < 0 &&
            avcodec_find_decoder(s->codecpar->codec_id))
            d->stream = (int)i;
        else
            s->discard = AVDISCARD_ALL;
    }
    ret = avformat_find_stream_info(d->fmt, NULL);
    if (ret < 0 && dmx__averr_is_os(ret)) {
        dmx_status st = dmx__av_fail(DMX_ERR_IO, ret, "cannot read %s", d->path);
        avformat_close_input(&d->fmt);
        close_pb(d);
        return st;
    }
    if (d->stream < 0) { /* streams may only appear while probing (e.g. MPEG-TS) */
        for (unsigned i = 0; i < d->fmt->nb_streams; i++) {
            AVStream *s = d->fmt->streams[i];
            if (s->codecpar->codec_type == AVMEDIA_TYPE_AUDIO &&
                avcodec_find_decoder(s->codecpar->codec_id)) {
                d->stream = (int)i;
                break;
            }
        }
        for (unsigned i = 0; i < d->fmt->nb_streams; i++)
            d->fmt->streams[i]->discard = (int)i == d->stream ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
    }
    if (d->stream < 0) {
        int has_audio = 0;
        const char *codec = "?";
        for (unsigned i = 0; i < d->fmt->nb_streams; i++)
            if (d->fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
                has_audio = 1;
                codec = avcodec_get_name(d->fmt->streams[i]->codecpar->codec_id);
                break;
            }
        dmx_status st = has_audio ? dmx__fail(DMX_ERR_DECODE, "%s: no decoder for audio codec %s",
                                              d->path, codec)
                                  : dmx__fail(DMX_ERR_DECODE, "%s: no audio stream (%s data)",
                                              d->path, d->fmt->iformat->name);
        avformat_close_input(&d->fmt);
        close_pb(d);
        return st;
    }
    AVStream *st = d->fmt->streams[d->stream];
    const AVCodec *codec = avcodec_find_decoder(st->codecpar->codec_id);
    d->cc = avcodec_alloc_context3(codec);
    if (!d->cc) {
        avformat_close_input(&d->fmt);
        close_pb(d);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory opening %s", d->path);
    }
    ret = avcodec_parameters_to_context(d->cc, st->codecpar);
    if (ret >= 0) {
        d->cc->pkt_timebase = st->time_base;
        d->cc->thread_count = 1;
        ret = avcodec_open2(d->cc, codec, NULL);
    }
    if (ret < 0) {
        avcodec_free_context(&d->cc);
        avformat_close_input(&d->fmt);
        close_pb(d);
        return dmx__av_fail(ret == AVERROR(ENOMEM) ? DMX_ERR_NOMEM : DMX_ERR_DECODE, ret,
                            "%s: cannot open %s decoder", d->path, codec->name);
    }
    if (d->src_rate <= 0) d->src_rate = st->codecpar->sample_rate;
    if (d->src_ch <= 0) d->src_ch = st->codecpar->ch_layout.nb_channels;
    if (d->out_ch > 0 && d->src_ch > 0) {
        dmx_status s2 = check_channels(d, d->src_ch);
        if (s2) return s2; /* caller tears down */
    }

    /* Decode the first audio now so that undecodable files fail at open. */
    dmx_status s3 = fill(d, 1);
    if (s3) return s3;
    if (d->fifo_len == 0) {
        if (d->errors) {
            char err[AV_ERROR_MAX_STRING_SIZE];
            av_strerror(d->last_err, err, sizeof err);
            return dmx__fail(DMX_ERR_DECODE, "%s: no audio could be decoded (%s)", d->path, err);
        }
        return dmx__fail(DMX_ERR_DECODE, "%s: no audio", d->path);
    }
    return DMX_OK;
}

static void reset_state(dmx_decoder *d) {
    d->stream = -1;
    d->swr_in_rate = 0;
    d->demux_eof = d->dec_eof = d->done = 0;
    d->frames_out = d->errors = 0;
    d->consecutive_errors = 0;
    d->last_err = 0;
    d->sticky = DMX_OK;
    d->fifo_start = d->fifo_len = 0;
}

/* Frees all libav state. The AVIOContext is ours (custom IO), so it is closed
 * after the format context. */
static void teardown_all(dmx_decoder *d) {
    swr_free(&d->swr);
    avcodec_free_context(&d->cc);
    avformat_close_input(&d->fmt);
    close_pb(d);
    av_packet_free(&d->pkt);
    av_frame_free(&d->frame);
}

dmx_status dmx_decoder_open(const char *path, int32_t target_rate, int32_t target_channels,
                            dmx_decoder **out) {
    if (out) *out = NULL;
    if (!out || !path || !*path)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_decoder_open: %s",
                         !out ? "out is NULL" : "empty path");
    if (target_rate < 0 || target_rate > 1000000)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_decoder_open: bad sample rate %d",
                         (int)target_rate);
    if (target_channels < 0 || target_channels > MAX_CH)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_decoder_open: bad channel count %d",
                         (int)target_channels);
    dmx__audio_init();
    dmx_decoder *d = calloc(1, sizeof *d);
    if (!d) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    d->path = strdup(path);
    d->url = dmx__file_url(path);
    if (!d->path || !d->url) {
        dmx_decoder_close(d);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    }
    d->out_rate = target_rate;
    d->out_ch = target_channels;
    reset_state(d);
    dmx_status st = open_stream(d);
    if (st) {
        dmx_decoder_close(d);
        return st;
    }
    dmx__clear_error();
    *out = d;
    return DMX_OK;
}

dmx_status dmx_decoder_read(dmx_decoder *dec, float *const *planar_out, int64_t max_frames,
                            int64_t *got) {
    if (got) *got = 0;
    if (!dec || !planar_out || !got || max_frames < 0)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_decoder_read: bad argument");
    if (max_frames == 0) return DMX_OK;
    dmx_status st = fill(dec, max_frames);
    if (st) return st;
    int64_t n = dec->fifo_len < max_frames ? dec->fifo_len : max_frames;
    for (int c = 0; c < dec->out_ch; c++)
        memcpy(planar_out[c], dec->fifo[c] + dec->fifo_start, (size_t)n * sizeof(float));
    dec->fifo_start += n;
    dec->fifo_len -= n;
    if (dec->fifo_len == 0) dec->fifo_start = 0;
    *got = n;
    return DMX_OK;
}

int32_t dmx_decoder_rate(const dmx_decoder *dec) { return dec ? dec->out_rate : 0; }
int32_t dmx_decoder_channels(const dmx_decoder *dec) { return dec ? dec->out_ch : 0; }
int32_t dmx_decoder_source_rate(const dmx_decoder *dec) { return dec ? dec->src_rate : 0; }
int32_t dmx_decoder_source_channels(const dmx_decoder *dec) { return dec ? dec->src_ch : 0; }

const char *dmx_decoder_codec_name(const dmx_decoder *dec) {
    return dec && dec->cc && dec->cc->codec ? dec->cc->codec->name : "";
}

const char *dmx_decoder_container_name(const dmx_decoder *dec) {
    return dec && dec->fmt && dec->fmt->iformat ? dec->fmt->iformat->name : "";
}

int64_t dmx_decoder_duration_hint(const dmx_decoder *dec) {
    if (!dec || !dec->fmt || dec->stream < 0) return -1;
    const AVStream *s = dec->fmt->streams[dec->stream];
    int64_t us = -1;
    if (s->duration != AV_NOPTS_VALUE && s->duration > 0 && s->time_base.den > 0)
        us = av_rescale_q(s->duration, s->time_base, AV_TIME_BASE_Q);
    else if (dec->fmt->duration != AV_NOPTS_VALUE && dec->fmt->duration > 0)
        us = dec->fmt->duration;
    if (us < 0) return -1;
    return av_rescale(us, dec->out_rate, AV_TIME_BASE);
}

dmx_status dmx_decoder_rewind(dmx_decoder *dec) {
    if (!dec) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_decoder_rewind: NULL decoder");
    teardown_all(dec);
    reset_state(dec);
    dmx_status st = open_stream(dec);
    if (st) {
        dec->sticky = st;
        teardown_all(dec);
        return st;
    }
    return DMX_OK;
}

void dmx_decoder_close(dmx_decoder *dec) {
    if (!dec) return;
    teardown_all(dec);
    for (int c = 0; c < MAX_CH; c++) {
        free(dec->conv[c]);
        free(dec->fifo[c]);
    }
    free(dec->acc);
    free(dec->path);
    free(dec->url);
    free(dec);
}

/* ---- whole-file convenience ---------------------------------------------------- */

void dmx_audio_free(float **planar, int32_t channels) {
    if (!planar) return;
    for (int32_t c = 0; c < channels; c++) free(planar[c]);
    free(planar);
}

dmx_status dmx_audio_load_ex(const char *path, int32_t rate, int32_t channels, float ***planar,
                             int64_t *frames, int32_t *out_rate, int32_t *out_channels) {
    if (planar) *planar = NULL;
    if (frames) *frames = 0;
    if (out_rate) *out_rate = 0;
    if (out_channels) *out_channels = 0;
    if (!planar || !frames)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_audio_load: NULL output pointer");
    dmx_decoder *d = NULL;
    dmx_status st = dmx_decoder_open(path, rate, channels, &d);
    if (st) return st;
    const int nch = d->out_ch;
    /* Trust the duration hint only so far: a lying header must not make us
     * allocate gigabytes up front. */
    int64_t cap = dmx_decoder_duration_hint(d) + 4096;
    if (cap < 65536) cap = 65536;
    if (cap > ((int64_t)1 << 24)) cap = (int64_t)1 << 24;
    float **p = calloc((size_t)nch, sizeof *p);
    if (!p) {
        dmx_decoder_close(d);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory loading %s", path);
    }
    int64_t len = 0, cap_now = 0;
    for (;;) {
        if (cap_now - len < 65536) {
            int64_t want = cap_now ? cap_now * 2 : cap;
            if (grow_planar(p, nch, &cap_now, want) < 0) {
                st = dmx__fail(DMX_ERR_NOMEM, "out of memory loading %s", path);
                break;
            }
        }
        float *dst[MAX_CH];
        for (int c = 0; c < nch; c++) dst[c] = p[c] + len;
        int64_t got = 0;
        st = dmx_decoder_read(d, dst, cap_now - len, &got);
        if (st || got == 0) break;
        len += got;
    }
    const int32_t orate = d->out_rate;
    dmx_decoder_close(d);
    if (st) {
        dmx_audio_free(p, nch);
        return st;
    }
    /* Trim to size (best effort). */
    for (int c = 0; c < nch && len > 0; c++) {
        float *q = realloc(p[c], (size_t)len * sizeof(float));
        if (q) p[c] = q;
    }
    *planar = p;
    *frames = len;
    if (out_rate) *out_rate = orate;
    if (out_channels) *out_channels = nch;
    dmx__clear_error();
    return DMX_OK;
}

dmx_status dmx_audio_load(const char *path, int32_t rate, int32_t channels, float ***planar,
                          int64_t *frames) {
    if (rate <= 0 || channels <= 0) {
        if (planar) *planar = NULL;
        if (frames) *frames = 0;
        return dmx__fail(DMX_ERR_INVALID_ARG,
                         "dmx_audio_load: rate and channels must be given (see dmx_audio_load_ex)");
    }
    return dmx_audio_load_ex(path, rate, channels, planar, frames, NULL, NULL);
}
