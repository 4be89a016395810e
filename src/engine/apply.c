/*
 * apply.c - upstream's apply_model() (demucs/apply.py), for one model or a
 * bag, with identical arithmetic:
 *
 *   bag:    each member's estimate is weighted per source and the sum is
 *           divided by the per-source weight totals;
 *   shifts: the mix is zero-padded by max_shift = 0.5 s on both sides, and
 *           for each shift a random offset in [0, max_shift] (Python's
 *           random.randint, seeded) selects a view of length
 *           n + max_shift - offset; the estimates are realigned and averaged;
 *   split:  segments of `segment` seconds every (1 - overlap) * segment,
 *           each evaluated on a window padded symmetrically to the model's
 *           length with real neighbouring samples where they exist (upstream's
 *           TensorChunk.padded) and zeros beyond the signal, cross-faded with
 *           triangular weights ** transition_power.
 *
 * Threads: with T threads and several segments, T segments are evaluated at
 * once (one worker each, single-threaded BLAS), which keeps every core busy
 * including the non-GEMM work; a single segment gets T BLAS threads instead.
 * Results are accumulated in segment order, so the output is bit-identical
 * whatever the thread count.
 *
 * A "view" below is upstream's TensorChunk: an offset and length into a base
 * signal whose samples outside the view remain visible to padding.
 */
#include "apply.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

typedef struct view {
    const float *const *base; /* channels pointers */
    int64_t base_len;
    int64_t offset, length;
} view;

typedef struct run {
    dmx_session *s;
    const dmx_separate_opts *o;
    const dmx__htdemucs *net;
    int64_t done, total;
    int threads;
} run;

static int cancelled(run *r) { return r->o->cancel && atomic_load(r->o->cancel); }

/* upstream TensorChunk.padded(target) into dst (channels, target) */
static void view_padded(const view *v, int channels, int64_t target, float *dst) {
    int64_t delta = target - v->length;
    int64_t start = v->offset - delta / 2;
    for (int c = 0; c < channels; c++) {
        float *d = dst + (size_t)c * target;
        const float *src = v->base[c];
        for (int64_t i = 0; i < target; i++) {
            int64_t k = start + i;
            d[i] = (k >= 0 && k < v->base_len) ? src[k] : 0.0f;
        }
    }
}

/* int(samplerate * segment) as upstream computes it; the model's own segment
 * is an exact fraction, so its length is the training length. */
static int64_t segment_length(const run *r) {
    if (r->o->segment > 0) return (int64_t)(r->net->samplerate * r->o->segment);
    return r->net->training_length;
}

/* Leaf: one model evaluation on a view of length <= the model's segment.
 * out: (sources, channels, v->length) contiguous. */
static dmx_status eval_segment(run *r, dmx__worker *wk, const view *v, float *out) {
    const dmx__htdemucs *net = r->net;
    const int A = net->audio_channels, S = net->n_sources;
    int64_t valid = segment_length(r);
    if (v->length > valid)
        return dmx__fail(DMX_ERR_INVALID_ARG,
                         "input of %lld samples is longer than the model segment (%lld samples); enable splitting",
                         (long long)v->length, (long long)valid);
    if (cancelled(r)) return dmx__fail(DMX_ERR_CANCELLED, "separation cancelled");
    dmx_session *s = r->s;
    if (valid > s->seg_cap) valid = s->seg_cap; /* never beyond the training length */
    view_padded(v, A, valid, wk->seg_in);
    dmx_status st = dmx__htdemucs_forward(net, &wk->arena, wk->seg_in, (int)valid, wk->seg_out, NULL, NULL);
    if (st != DMX_OK) return st;
    /* center_trim(out, length) */
    int64_t d = valid - v->length, lo = d / 2;
    for (int k = 0; k < S * A; k++)
        memcpy(out + (size_t)k * v->length, wk->seg_out + (size_t)k * valid + lo,
               sizeof(float) * (size_t)v->length);
    return DMX_OK;
}

/* Called in the caller's thread after each evaluation, in order. */
static dmx_status report(run *r) {
    r->done++;
    if (r->o->progress && r->o->progress(r->o->progress_user, r->done, r->total))
        return dmx__fail(DMX_ERR_CANCELLED, "separation cancelled by the progress callback");
    return DMX_OK;
}

static dmx_status worker_get(run *r, int i, int64_t chunk_len, dmx__worker **out) {
    dmx_session *s = r->s;
    const dmx_model *m = s->model;
    while (s->n_workers <= i) {
        dmx__worker *w = &s->workers[s->n_workers];
        memset(w, 0, sizeof *w);
        dmx__arena_init(&w->arena);
        w->seg_in = malloc(sizeof(float) * (size_t)m->channels * s->seg_cap);
        w->seg_out = malloc(sizeof(float) * (size_t)m->n_sources * m->channels * s->seg_cap);
        s->n_workers++;
        if (!w->seg_in || !w->seg_out) return dmx__fail(DMX_ERR_NOMEM, "out of memory for segment buffers");
    }
    dmx__worker *w = &s->workers[i];
    if (w->chunk_cap < chunk_len) {
        free(w->chunk);
        w->chunk = malloc(sizeof(float) * (size_t)m->n_sources * m->channels * chunk_len);
        w->chunk_cap = w->chunk ? chunk_len : 0;
        if (!w->chunk) return dmx__fail(DMX_ERR_NOMEM, "out of memory for segment buffers");
    }
    *out = w;
    return DMX_OK;
}

typedef struct job {
    run *r;
    dmx__worker *w;
    view v;
    dmx_status st;
    char err[512];
} job;

static void *job_main(void *arg) {
    job *j = arg;
    j->st = eval_segment(j->r, j->w, &j->v, j->w->chunk);
    if (j->st != DMX_OK) snprintf(j->err, sizeof j->err, "%s", dmx_last_error());
    return NULL;
}

static int64_t n_chunks(const run *r, int64_t length) {
    if (!r->o->split) return 1;
    int64_t sl = segment_length(r);
    int64_t stride = (int64_t)((1.0 - r->o->overlap) * sl);
    if (stride < 1) stride = 1;
    return (length + stride - 1) / stride;
}

/* split=True branch (or a single evaluation when split is off); out
 * (sources, channels, v->length), overwritten. */
static dmx_status apply_split(run *r, const view *v, float *out) {
    const int A = r->net->audio_channels, S = r->net->n_sources;
    const int64_t L = v->length;
    const int64_t sl = r->o->split ? segment_length(r) : L;
    int64_t stride = r->o->split ? (int64_t)((1.0 - r->o->overlap) * sl) : L;
    if (stride < 1) stride = 1;
    const int64_t nchunks = (L + stride - 1) / stride;
    int nw = r->threads < nchunks ? r->threads : (int)nchunks;
    if (nw < 1) nw = 1;
    /* segments in parallel with 1 BLAS thread each, or one segment with all */
    openblas_set_num_threads(nw > 1 ? 1 : r->threads);
    dmx__worker *wk[DMX__MAX_WORKERS];
    dmx_status st = DMX_OK;
    for (int i = 0; i < nw && st == DMX_OK; i++) st = worker_get(r, i, sl, &wk[i]);
    if (st != DMX_OK) return st;
    if (!r->o->split) {
        view c = *v;
        st = eval_segment(r, wk[0], &c, out);
        return st == DMX_OK ? report(r) : st;
    }
    float *weight = malloc(sizeof(float) * (size_t)sl);
    float *sum_w = dmx__big_calloc(sizeof(float) * (size_t)L);
    if (!weight || !sum_w) {
        st = dmx__fail(DMX_ERR_NOMEM, "out of memory for segment buffers");
        goto done;
    }
    {
        /* th.cat([arange(1, sl//2 + 1), arange(sl - sl//2, 0, -1)]) / max */
        int64_t half = sl / 2;
        float mx = 0;
        for (int64_t i = 0; i < sl; i++) {
            weight[i] = (float)(i < half ? i + 1 : sl - i);
            if (weight[i] > mx) mx = weight[i];
        }
        for (int64_t i = 0; i < sl; i++) {
            weight[i] = weight[i] / mx;
            if (r->o->transition_power != 1.0) weight[i] = powf(weight[i], (float)r->o->transition_power);
        }
    }
    memset(out, 0, sizeof(float) * (size_t)S * A * L);
    job jobs[DMX__MAX_WORKERS];
    pthread_t tid[DMX__MAX_WORKERS];
    for (int64_t c0 = 0; c0 < nchunks && st == DMX_OK; c0 += nw) {
        int nb = (int)(nchunks - c0 < nw ? nchunks - c0 : nw);
        int started[DMX__MAX_WORKERS] = {0};
        for (int b = 0; b < nb; b++) {
            int64_t off = (c0 + b) * stride;
            jobs[b] = (job){r, wk[b], {v->base, v->base_len, v->offset + off, L - off < sl ? L - off : sl}, DMX_OK, ""};
            if (b > 0) started[b] = pthread_create(&tid[b], NULL, job_main, &jobs[b]) == 0;
        }
        job_main(&jobs[0]);
        for (int b = 1; b < nb; b++) {
            if (started[b]) pthread_join(tid[b], NULL);
            else job_main(&jobs[b]); /* could not start a thread: run it here */
        }
        for (int b = 0; b < nb && st == DMX_OK; b++) {
            if (jobs[b].st != DMX_OK) {
                st = dmx__fail(jobs[b].st, "%s", jobs[b].err);
                break;
            }
            int64_t off = (c0 + b) * stride, len = jobs[b].v.length;
            for (int k = 0; k < S * A; k++) {
                float *o = out + (size_t)k * L + off;
                const float *ci = wk[b]->chunk + (size_t)k * len;
                for (int64_t i = 0; i < len; i++) o[i] += weight[i] * ci[i];
            }
            for (int64_t i = 0; i < len; i++) sum_w[off + i] += weight[i];
            st = report(r);
        }
    }
    if (st == DMX_OK) {
        for (int k = 0; k < S * A; k++) {
            float *o = out + (size_t)k * L;
            for (int64_t i = 0; i < L; i++) o[i] /= sum_w[i];
        }
    }
done:
    free(weight);
    dmx__big_free(sum_w);
    return st;
}

/* One model (not a bag) with shifts. in: channels pointers of length n.
 * out: (sources, channels, n) contiguous, overwritten. offsets: the shift
 * offsets drawn for this member. */
static dmx_status apply_one(run *r, const float *const *in, int64_t n, float *out,
                            const int64_t *offsets) {
    const int A = r->net->audio_channels, S = r->net->n_sources;
    if (r->o->shifts <= 0) {
        view v = {in, n, 0, n};
        return apply_split(r, &v, out);
    }
    const int64_t max_shift = (int64_t)(0.5 * r->net->samplerate);
    const int64_t plen = n + 2 * max_shift;
    float *padded = dmx__big_calloc(sizeof(float) * (size_t)A * plen);
    float *res = dmx__big_alloc(sizeof(float) * (size_t)S * A * (n + max_shift));
    const float *pp[8];
    dmx_status st = DMX_OK;
    if (!padded || !res) {
        st = dmx__fail(DMX_ERR_NOMEM, "out of memory for shifted input");
        goto done;
    }
    for (int c = 0; c < A; c++) {
        memcpy(padded + (size_t)c * plen + max_shift, in[c], sizeof(float) * (size_t)n);
        pp[c] = padded + (size_t)c * plen;
    }
    memset(out, 0, sizeof(float) * (size_t)S * A * n);
    for (int i = 0; i < r->o->shifts; i++) {
        int64_t off = offsets[i];
        view v = {pp, plen, off, n + max_shift - off};
        st = apply_split(r, &v, res);
        if (st != DMX_OK) goto done;
        for (int k = 0; k < S * A; k++) {
            float *o = out + (size_t)k * n;
            const float *q = res + (size_t)k * v.length + (max_shift - off);
            for (int64_t j = 0; j < n; j++) o[j] += q[j];
        }
    }
    {
        float sh = (float)r->o->shifts;
        for (size_t j = 0; j < (size_t)S * A * n; j++) out[j] /= sh;
    }
done:
    dmx__big_free(padded);
    dmx__big_free(res);
    return st;
}

dmx_status dmx__apply(dmx_session *s, const float *const *in, int64_t n, float *const *out,
                      const dmx_separate_opts *o) {
    const dmx_model *m = s->model;
    const int A = m->channels, S = m->n_sources, nm = m->n_members;
    const int shifts = o->shifts > 0 ? o->shifts : 0;
    run r = {s, o, NULL, 0, 0, 1};
    {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        r.threads = o->n_threads > 0 ? o->n_threads : (int)(nc > 0 ? nc : 1);
        if (r.threads > DMX__MAX_WORKERS) r.threads = DMX__MAX_WORKERS;
    }
    int64_t *offsets = calloc((size_t)nm * (shifts ? shifts : 1), sizeof(int64_t));
    float *est = dmx__big_alloc(sizeof(float) * (size_t)S * A * n);
    float *acc = nm > 1 ? dmx__big_calloc(sizeof(float) * (size_t)S * A * n) : NULL;
    dmx_status st = DMX_OK;
    if (!offsets || !est || (nm > 1 && !acc)) {
        st = dmx__fail(DMX_ERR_NOMEM, "out of memory for %lld samples of output", (long long)n);
        goto done;
    }
    /* Draw every offset first (same order as upstream: member, then shift) so
     * the progress total is exact. */
    dmx__pyrandom rng;
    dmx__pyrandom_seed(&rng, o->seed);
    for (int k = 0; k < nm; k++) {
        r.net = m->members[k];
        int64_t max_shift = (int64_t)(0.5 * r.net->samplerate);
        if (!shifts) {
            r.total += n_chunks(&r, n);
            continue;
        }
        for (int i = 0; i < shifts; i++) {
            int64_t off = dmx__pyrandom_randint(&rng, 0, max_shift);
            offsets[(size_t)k * shifts + i] = off;
            int64_t nc = n_chunks(&r, n + max_shift - off);
            r.total += nc;
            /* Upstream's transformer calls random.randrange(1) on every
             * forward pass (for its optional embedding shift), which
             * consumes draws between two offsets: replay that too so the
             * offsets equal upstream's after random.seed(seed). */
            if (r.net->has_xformer && !r.net->xf.emb_cape)
                for (int64_t c = 0; c < nc; c++) (void)dmx__pyrandom_randint(&rng, 0, 0);
        }
    }
    for (int k = 0; k < nm; k++) {
        r.net = m->members[k];
        st = apply_one(&r, in, n, est, offsets + (size_t)k * (shifts ? shifts : 1));
        if (st != DMX_OK) goto done;
        if (nm == 1) break;
        for (int src = 0; src < S; src++) {
            float w = m->weights[(size_t)k * S + src];
            for (size_t j = 0; j < (size_t)A * n; j++) {
                size_t idx = (size_t)src * A * n + j;
                acc[idx] += est[idx] * w;
            }
        }
    }
    {
        const float *res = nm > 1 ? acc : est;
        for (int src = 0; src < S; src++) {
            float tot = nm > 1 ? (float)m->totals[src] : 1.0f;
            for (int c = 0; c < A; c++) {
                const float *p = res + ((size_t)src * A + c) * n;
                float *q = out[src * A + c];
                if (nm > 1)
                    for (int64_t j = 0; j < n; j++) q[j] = p[j] / tot;
                else
                    memcpy(q, p, sizeof(float) * (size_t)n);
            }
        }
    }
done:
    free(offsets);
    dmx__big_free(est);
    dmx__big_free(acc);
    return st;
}
