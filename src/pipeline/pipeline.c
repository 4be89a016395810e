/*
 * pipeline.c - see pipeline.h: an audio file in, stem files out, streamed.
 *
 *   pass 1  decode everything once for upstream's normalisation statistics
 *           (Demucs models; a RoFormer needs neither them nor the length up
 *           front, dmx_model_single_pass, so its file is decoded once);
 *   pass 2  decode again and feed the engine's stream; stems arrive in order
 *           through on_write and are derived (two-stem add/minus), clipped
 *           and encoded on the fly;
 *   pass 3  only for DMX_CLIP_RESCALE, which needs each stem's peak before
 *           its first sample can be written: pass 2 spills the stem as raw
 *           interleaved float32 beside its output, pass 3 rescales and
 *           encodes it.
 * Outputs are "<path>.part" until every one is complete (the encoder renames
 * on close); any failure aborts them all and removes what was published.
 */
#define _GNU_SOURCE
#include "demix/pipeline.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

#define DEC_BLOCK 65536

int32_t dmx_file_stems(const dmx_model *m, const char *two_stems, dmx_other_method om,
                       char (*names)[DMX_MAX_STEM_NAME], int32_t cap) {
    int32_t S = dmx_model_n_sources(m), n = 0;
    if (!two_stems) {
        for (int32_t s = 0; s < S; s++)
            if (n < cap) snprintf(names[n++], DMX_MAX_STEM_NAME, "%s", dmx_model_source_name(m, s));
        return S;
    }
    if (dmx_model_source_index(m, two_stems) < 0) return -1;
    if (cap > 0) snprintf(names[0], DMX_MAX_STEM_NAME, "%s", two_stems);
    if (om == DMX_OTHER_NONE) return 1;
    /* upstream's names: no_STEM for the sum of the others, minus_STEM for
     * the mix minus STEM */
    if (cap > 1)
        snprintf(names[1], DMX_MAX_STEM_NAME, "%s_%s", om == DMX_OTHER_MINUS ? "minus" : "no",
                 two_stems);
    return 2;
}

typedef struct out_stem {
    dmx_encoder *enc; /* the final file's encoder (".part" until closed) */
    FILE *spill;      /* rescale mode: raw interleaved float32 */
    char *spill_path;
    float peak;
} out_stem;

typedef struct ctx {
    const dmx_file_job *job;
    const atomic_int *cancel;
    int S, ch, k, n_out; /* k: two-stem source index, or -1 */
    out_stem *os;        /* (n_out) */
    float **tmp;         /* (ch) one stem of one callback */
    float *inter;        /* interleaving scratch */
    int64_t tmp_cap;
    float **fifo; /* (ch) the mix from feed to emit, for DMX_OTHER_MINUS */
    int64_t fifo_base, fifo_len, fifo_cap;
    int64_t emitted;
} ctx;

static int cancelled(const ctx *c) { return c->cancel && atomic_load(c->cancel); }

/* NaN and infinities (float input) become 0 in both passes: one would
 * poison the normalisation statistics and so every stem of the track.
 * Returns how many were replaced. */
static int64_t zero_nonfinite(float **blk, int ch, int64_t n) {
    int64_t k = 0;
    for (int c = 0; c < ch; c++)
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(blk[c][i])) {
                blk[c][i] = 0.0f;
                k++;
            }
    return k;
}

static int grow_tmp(ctx *c, int64_t frames) {
    if (frames <= c->tmp_cap) return 0;
    for (int ch = 0; ch < c->ch; ch++) {
        float *p = realloc(c->tmp[ch], sizeof(float) * (size_t)frames);
        if (!p) return -1;
        c->tmp[ch] = p;
    }
    float *q = realloc(c->inter, sizeof(float) * (size_t)frames * c->ch);
    if (!q) return -1;
    c->inter = q;
    c->tmp_cap = frames;
    return 0;
}

static dmx_status put_stem(ctx *c, out_stem *o, int64_t frames) {
    if (c->job->clip_mode == DMX_CLIP_RESCALE) {
        for (int ch = 0; ch < c->ch; ch++)
            for (int64_t i = 0; i < frames; i++) {
                float a = fabsf(c->tmp[ch][i]);
                if (a > o->peak) o->peak = a;
                c->inter[i * c->ch + ch] = c->tmp[ch][i];
            }
        if (fwrite(c->inter, sizeof(float) * c->ch, (size_t)frames, o->spill) != (size_t)frames)
            return dmx__fail(DMX_ERR_IO, "cannot write %s: %s", o->spill_path, strerror(errno));
        return DMX_OK;
    }
    if (c->job->clip_mode == DMX_CLIP_CLAMP)
        for (int ch = 0; ch < c->ch; ch++)
            for (int64_t i = 0; i < frames; i++) {
                float x = c->tmp[ch][i];
                c->tmp[ch][i] = x < -0.99f ? -0.99f : x > 0.99f ? 0.99f : x;
            }
    return dmx_encoder_write(o->enc, (const float *const *)c->tmp, frames);
}

/* Engine callback: final stems for the next `frames` samples. */
static dmx_status on_write(void *user, const float *const *stems, int64_t frames) {
    ctx *c = user;
    if (grow_tmp(c, frames)) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    for (int o = 0; o < c->n_out; o++) {
        for (int ch = 0; ch < c->ch; ch++) {
            float *d = c->tmp[ch];
            if (c->k < 0) {
                memcpy(d, stems[o * c->ch + ch], sizeof(float) * (size_t)frames);
            } else if (o == 0) {
                memcpy(d, stems[c->k * c->ch + ch], sizeof(float) * (size_t)frames);
            } else if (c->job->other_method == DMX_OTHER_MINUS) {
                /* origin - stem, origin being the decoded mix */
                const float *a = c->fifo[ch] + (c->emitted - c->fifo_base),
                            *b = stems[c->k * c->ch + ch];
                for (int64_t i = 0; i < frames; i++) d[i] = a[i] - b[i];
            } else {
                /* zeros_like(...) then += each other stem in source order */
                for (int64_t i = 0; i < frames; i++) d[i] = 0.0f;
                for (int s = 0; s < c->S; s++) {
                    if (s == c->k) continue;
                    const float *b = stems[s * c->ch + ch];
                    for (int64_t i = 0; i < frames; i++) d[i] += b[i];
                }
            }
        }
        dmx_status st = put_stem(c, &c->os[o], frames);
        if (st != DMX_OK) return st;
    }
    c->emitted += frames;
    return cancelled(c) ? dmx__fail(DMX_ERR_CANCELLED, "cancelled") : DMX_OK;
}

/* Keeps the fed mix until it has been emitted (DMX_OTHER_MINUS). */
static int fifo_push(ctx *c, float *const *in, int64_t frames) {
    int64_t drop = c->emitted - c->fifo_base;
    if (drop > 0) {
        for (int ch = 0; ch < c->ch; ch++)
            memmove(c->fifo[ch], c->fifo[ch] + drop, sizeof(float) * (size_t)(c->fifo_len - drop));
        c->fifo_base += drop;
        c->fifo_len -= drop;
    }
    if (c->fifo_len + frames > c->fifo_cap) {
        int64_t cap = (c->fifo_len + frames) * 2;
        for (int ch = 0; ch < c->ch; ch++) {
            float *p = realloc(c->fifo[ch], sizeof(float) * (size_t)cap);
            if (!p) return -1;
            c->fifo[ch] = p;
        }
        c->fifo_cap = cap;
    }
    for (int ch = 0; ch < c->ch; ch++)
        memcpy(c->fifo[ch] + c->fifo_len, in[ch], sizeof(float) * (size_t)frames);
    c->fifo_len += frames;
    return 0;
}

/* DMX_CLIP_RESCALE: divide each spilled stem by max(1.01 * peak, 1), encode. */
static dmx_status rescale_pass(ctx *c) {
    if (grow_tmp(c, DEC_BLOCK)) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    for (int o = 0; o < c->n_out; o++) {
        out_stem *os = &c->os[o];
        float d = 1.01f * os->peak;
        if (fflush(os->spill) != 0 || fseek(os->spill, 0, SEEK_SET) != 0)
            return dmx__fail(DMX_ERR_IO, "cannot read back %s: %s", os->spill_path,
                             strerror(errno));
        size_t got;
        while ((got = fread(c->inter, sizeof(float) * c->ch, (size_t)c->tmp_cap, os->spill)) > 0) {
            for (int ch = 0; ch < c->ch; ch++)
                for (size_t i = 0; i < got; i++) {
                    float x = c->inter[i * c->ch + ch];
                    c->tmp[ch][i] = d > 1.0f ? x / d : x;
                }
            dmx_status st = dmx_encoder_write(os->enc, (const float *const *)c->tmp, (int64_t)got);
            if (st != DMX_OK) return st;
            if (cancelled(c)) return dmx__fail(DMX_ERR_CANCELLED, "cancelled");
        }
        if (ferror(os->spill)) return dmx__fail(DMX_ERR_IO, "cannot read back %s", os->spill_path);
        fclose(os->spill);
        os->spill = NULL;
        unlink(os->spill_path);
    }
    return DMX_OK;
}

dmx_status dmx_separate_file(dmx_session *s, const dmx_file_job *job, const dmx_separate_opts *opts,
                             int64_t *frames_out) {
    dmx__clear_error();
    if (frames_out) *frames_out = 0;
    if (!s || !job || !job->input || !job->outputs || job->n_outputs < 1)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_separate_file: missing input or outputs");
    const dmx_model *m = dmx_session_model(s);
    const int32_t rate = dmx_model_samplerate(m), ch = dmx_model_channels(m);
    dmx_separate_opts o;
    if (opts)
        o = *opts;
    else
        dmx_separate_opts_init(&o);
    o.normalize = 1;
    ctx c;
    memset(&c, 0, sizeof c);
    c.job = job;
    c.cancel = o.cancel;
    c.S = dmx_model_n_sources(m);
    c.ch = ch;
    c.k = job->two_stems ? dmx_model_source_index(m, job->two_stems) : -1;
    c.n_out = job->n_outputs;
    char names[2][DMX_MAX_STEM_NAME];
    int32_t want = job->two_stems ? dmx_file_stems(m, job->two_stems, job->other_method, names, 2)
                                  : dmx_model_n_sources(m);
    if (want < 0)
        return dmx__fail(DMX_ERR_INVALID_ARG, "the model has no source '%s'", job->two_stems);
    if (want != job->n_outputs)
        return dmx__fail(DMX_ERR_INVALID_ARG, "%d output paths for %d stems", job->n_outputs, want);

    c.os = calloc((size_t)c.n_out, sizeof *c.os);
    c.tmp = calloc((size_t)ch, sizeof *c.tmp);
    c.fifo = calloc((size_t)ch, sizeof *c.fifo);
    float **blk = calloc((size_t)ch, sizeof *blk);
    dmx_decoder *dec = NULL;
    dmx_stream *stream = NULL;
    int64_t n = 0, got = 0, fed = 0, nonfinite = 0;
    int closed = 0;
    dmx_status st = DMX_OK;
    if (!c.os || !c.tmp || !c.fifo || !blk) {
        st = dmx__fail(DMX_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < ch; i++)
        if (!(blk[i] = malloc(sizeof(float) * DEC_BLOCK))) {
            st = dmx__fail(DMX_ERR_NOMEM, "out of memory");
            goto done;
        }

    st = dmx_decoder_open(job->input, rate, ch, &dec);
    if (st == DMX_OK) st = dmx_stream_new(s, &o, on_write, &c, &stream);
    /* A RoFormer needs no statistics nor the length up front: one pass. */
    const int one_pass = dmx_model_single_pass(m);
    if (one_pass) {
        if (st == DMX_OK) st = dmx_stream_expect(stream, dmx_decoder_duration_hint(dec));
        if (st == DMX_OK) st = dmx_stream_start(stream, DMX_FRAMES_UNKNOWN);
        goto outputs;
    }
    /* pass 1: statistics */
    while (st == DMX_OK && (st = dmx_decoder_read(dec, blk, DEC_BLOCK, &got)) == DMX_OK &&
           got > 0) {
        nonfinite += zero_nonfinite(blk, ch, got);
        st = dmx_stream_analyze(stream, (const float *const *)blk, got);
        n += got;
        /* Stop at the limit rather than decoding (and separating) hours a
         * container did not announce. */
        if (st == DMX_OK && job->max_frames > 0 && n > job->max_frames)
            st = dmx__fail(DMX_ERR_BAD_INPUT,
                           "%s: the audio is longer than the limit of %lld frames", job->input,
                           (long long)job->max_frames);
        if (cancelled(&c)) st = dmx__fail(DMX_ERR_CANCELLED, "cancelled");
    }
    if (st != DMX_OK) goto done;
    if (n <= 0) {
        st = dmx__fail(DMX_ERR_DECODE, "%s: no audio samples", job->input);
        goto done;
    }
    if (frames_out) *frames_out = n;
    if (nonfinite > 0)
        dmx__log(DMX_LOG_WARN, "%s: %lld NaN or infinite samples replaced by silence", job->input,
                 (long long)nonfinite);
    st = dmx_decoder_rewind(dec);
    if (st == DMX_OK) st = dmx_stream_start(stream, n);
    if (st != DMX_OK) goto done;

outputs:
    if (st != DMX_OK) goto done;
    /* outputs: encoders (".part") and, for rescale, spill files */
    for (int i = 0; i < c.n_out && st == DMX_OK; i++) {
        st = dmx_encoder_open(job->outputs[i], &job->format, rate, ch, &c.os[i].enc);
        if (st != DMX_OK) break;
        if (job->clip_mode == DMX_CLIP_RESCALE) {
            if (asprintf(&c.os[i].spill_path, "%s.spill.part", job->outputs[i]) < 0) {
                c.os[i].spill_path = NULL;
                st = dmx__fail(DMX_ERR_NOMEM, "out of memory");
            } else if (!(c.os[i].spill = fopen(c.os[i].spill_path, "w+b"))) {
                st = dmx__fail(DMX_ERR_IO, "cannot write %s: %s", c.os[i].spill_path,
                               strerror(errno));
            }
        }
    }
    if (st != DMX_OK) goto done;

    /* pass 2 (the only one for a RoFormer): separate and encode as stems
     * become final */
    while ((st = dmx_decoder_read(dec, blk, DEC_BLOCK, &got)) == DMX_OK && got > 0) {
        int64_t bad = zero_nonfinite(blk, ch, got);
        if (one_pass) {
            nonfinite += bad;
            if (job->max_frames > 0 && fed + got > job->max_frames) {
                st = dmx__fail(DMX_ERR_BAD_INPUT,
                               "%s: the audio is longer than the limit of %lld frames", job->input,
                               (long long)job->max_frames);
                break;
            }
        } else if (fed + got > n) {
            st = dmx__fail(DMX_ERR_DECODE,
                           "%s: the second decoding pass returned more audio than the first",
                           job->input);
            break;
        }
        if (c.k >= 0 && job->other_method == DMX_OTHER_MINUS && fifo_push(&c, blk, got)) {
            st = dmx__fail(DMX_ERR_NOMEM, "out of memory");
            break;
        }
        st = dmx_stream_feed(stream, (const float *const *)blk, got);
        if (st != DMX_OK) break;
        fed += got;
    }
    if (one_pass && st == DMX_OK) {
        if (fed <= 0) st = dmx__fail(DMX_ERR_DECODE, "%s: no audio samples", job->input);
        n = fed;
        if (frames_out) *frames_out = n;
        if (nonfinite > 0)
            dmx__log(DMX_LOG_WARN, "%s: %lld NaN or infinite samples replaced by silence",
                     job->input, (long long)nonfinite);
    }
    if (st == DMX_OK && fed != n)
        st = dmx__fail(DMX_ERR_DECODE, "%s: the second decoding pass returned %lld of %lld frames",
                       job->input, (long long)fed, (long long)n);
    if (st == DMX_OK) st = dmx_stream_finish(stream);
    if (st == DMX_OK && job->clip_mode == DMX_CLIP_RESCALE) st = rescale_pass(&c);
    /* publish only when every stem is fully encoded */
    for (int i = 0; i < c.n_out && st == DMX_OK; i++) {
        st = dmx_encoder_close(c.os[i].enc);
        c.os[i].enc = NULL;
        if (st == DMX_OK) closed = i + 1;
    }
done:
    for (int i = 0; c.os && i < c.n_out; i++) {
        dmx_encoder_abort(c.os[i].enc); /* removes its ".part" */
        if (c.os[i].spill) fclose(c.os[i].spill);
        if (c.os[i].spill_path) unlink(c.os[i].spill_path);
        free(c.os[i].spill_path);
    }
    if (st != DMX_OK)
        for (int i = 0; i < closed; i++) unlink(job->outputs[i]);
    dmx_stream_free(stream);
    dmx_decoder_close(dec);
    for (int i = 0; i < ch; i++) {
        if (blk) free(blk[i]);
        if (c.tmp) free(c.tmp[i]);
        if (c.fifo) free(c.fifo[i]);
    }
    free(blk);
    free(c.tmp);
    free(c.fifo);
    free(c.inter);
    free(c.os);
    return st;
}
