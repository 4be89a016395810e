/*
 * roformer_demix.c - MSST's chunked whole-track inference (see
 * roformer_demix.h).
 */
#include "roformer_demix.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "team.h"
#include "threads.h"

dmx_status dmx__rf_plan_make(const dmx__rf_config *c, int64_t len, dmx__rf_plan *p) {
    memset(p, 0, sizeof *p);
    if (len < 1) return dmx__fail(DMX_ERR_BAD_INPUT, "roformer demix: empty input");
    p->len = len;
    p->chunk = c->chunk_size;
    p->step = c->chunk_size / c->num_overlap;
    p->fade = c->chunk_size / 10;
    p->border = p->chunk - p->step;
    if (p->step < 1)
        return dmx__fail(DMX_ERR_MODEL, "roformer demix: chunk_size / num_overlap is 0");
    p->padded = len > 2 * p->border && p->border > 0;
    p->plen = len + (p->padded ? 2 * p->border : 0);
    p->n_chunks = (p->plen + p->step - 1) / p->step;
    return DMX_OK;
}

/* torch.linspace(a, b, n) in float32: the first half counts up from a, the
 * second half down from b. */
static float linspace_at(float a, float b, int64_t n, int64_t i) {
    if (n == 1) return a;
    float step = (b - a) / (float)(n - 1);
    int64_t half = n / 2;
    return i < half ? a + step * (float)i : b - step * (float)(n - 1 - i);
}

void dmx__rf_plan_window(const dmx__rf_plan *p, int64_t k, float *w) {
    const int64_t C = p->chunk, fade = p->fade;
    for (int64_t i = 0; i < C; i++) w[i] = 1.0f;
    for (int64_t i = 0; i < fade; i++) w[C - fade + i] = linspace_at(1.0f, 0.0f, fade, i);
    for (int64_t i = 0; i < fade; i++) w[i] = linspace_at(0.0f, 1.0f, fade, i);
    int64_t start = k * p->step;
    if (start == 0) {
        for (int64_t i = 0; i < fade; i++) w[i] = 1.0f; /* first chunk: no fade-in */
    } else if (start + p->step >= p->plen) {
        for (int64_t i = 0; i < fade; i++) w[C - fade + i] = 1.0f; /* last chunk: no fade-out */
    }
}

static int64_t reflect(int64_t i, int64_t n) {
    if (n == 1) return 0;
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

#define MAX_WORKERS 32
/* The provisional length of a stream whose length is not known yet. */
#define OPEN_LEN ((int64_t)1 << 50)

typedef struct rf_worker {
    float *chunk, *y; /* (A, C), (S, A, C) */
    dmx__arena ar;
    int64_t k; /* chunk being run */
    dmx_status status;
    char err[512];
    const dmx__roformer *n;
} rf_worker;

struct dmx__rf_stream {
    const dmx__roformer *n;
    dmx__rf_plan p;
    int A, S, threads; /* threads: workers (at most one per chunk) */
    int run_threads;   /* the run's threads: those without a chunk help (team.h) */
    int64_t B;         /* padding offset: border when padded, else 0 */
    dmx_write_fn write;
    void *user;
    float *hist; /* (A, hcap): input samples [obase, obase + on) */
    int64_t hcap, obase, on;
    int64_t k; /* next chunk */
    rf_worker wk[MAX_WORKERS];
    float *w;           /* (C) window */
    float *res, *cnt;   /* weighted sums for padded positions [k * step, k * step + C) */
    float *outb;        /* (S, A, C) finished samples */
    const float **optr; /* (S * A) */
    int64_t written;
    dmx_status err;
    /* 1 while the length is unknown (total_len < 0): the plan is a
     * provisional one for an endless track, which gives every chunk that
     * runs before dmx__rf_stream_finish the same layout, window and output
     * as the real plan (see run_ready), and finish replaces it. */
    int open;
};

size_t dmx__rf_stream_footprint(const dmx__rf_stream *st) {
    const int64_t C = st->p.chunk, SA = (int64_t)st->S * st->A;
    return (size_t)(st->A * st->hcap + st->threads * (st->A * C + SA * C) + 2 * SA * C + 2 * C);
}

void dmx__rf_stream_free(dmx__rf_stream *st) {
    if (!st) return;
    free(st->hist);
    for (int i = 0; i < MAX_WORKERS; i++) {
        free(st->wk[i].chunk);
        free(st->wk[i].y);
        dmx__arena_free(&st->wk[i].ar);
    }
    free(st->w);
    free(st->res);
    free(st->cnt);
    free(st->outb);
    free(st->optr);
    free(st);
}

dmx_status dmx__rf_stream_new(const dmx__roformer *n, int64_t total_len, int n_threads,
                              dmx_write_fn write, void *user, dmx__rf_stream **out) {
    *out = NULL;
    const dmx__rf_config *c = dmx__roformer_config(n);
    dmx__rf_stream *st = calloc(1, sizeof *st);
    if (!st) return dmx__fail(DMX_ERR_NOMEM, "roformer demix: out of memory");
    for (int i = 0; i < MAX_WORKERS; i++) dmx__arena_init(&st->wk[i].ar);
    st->open = total_len < 0;
    dmx_status s = dmx__rf_plan_make(c, st->open ? OPEN_LEN : total_len, &st->p);
    if (s != DMX_OK) {
        dmx__rf_stream_free(st);
        return s;
    }
    if (st->p.chunk > INT32_MAX / 4) {
        dmx__rf_stream_free(st);
        return dmx__fail(DMX_ERR_MODEL, "roformer demix: chunk_size is too large");
    }
    st->n = n;
    st->A = c->stereo ? 2 : 1;
    st->S = c->num_stems;
    st->threads = n_threads < 1 ? 1 : n_threads > MAX_WORKERS ? MAX_WORKERS : n_threads;
    st->run_threads = st->threads;
    if (!st->open && st->threads > st->p.n_chunks) st->threads = (int)st->p.n_chunks;
    st->B = st->p.padded ? st->p.border : 0;
    st->write = write;
    st->user = user;
    const int64_t C = st->p.chunk, SA = (int64_t)st->S * st->A;
    /* one batch of `threads` chunks reads at most C + (threads - 1) step
     * samples beyond what the right padding keeps */
    st->hcap = C + 2 * st->p.border + (st->threads + 1) * st->p.step + 16;
    st->hist = malloc(sizeof(float) * (size_t)(st->A * st->hcap));
    int ok = st->hist != NULL;
    for (int i = 0; i < st->threads && ok; i++) {
        st->wk[i].chunk = malloc(sizeof(float) * (size_t)(st->A * C));
        st->wk[i].y = malloc(sizeof(float) * (size_t)(SA * C));
        st->wk[i].n = n;
        ok = st->wk[i].chunk && st->wk[i].y;
    }
    st->w = malloc(sizeof(float) * (size_t)C);
    st->res = calloc((size_t)(SA * C), sizeof(float));
    st->cnt = calloc((size_t)C, sizeof(float));
    st->outb = malloc(sizeof(float) * (size_t)(SA * C));
    st->optr = malloc(sizeof(float *) * (size_t)SA);
    if (!ok || !st->w || !st->res || !st->cnt || !st->outb || !st->optr) {
        dmx__rf_stream_free(st);
        return dmx__fail(DMX_ERR_NOMEM, "roformer demix: out of memory");
    }
    *out = st;
    return DMX_OK;
}

/* Smallest and largest input sample chunk k reads (after the reflect padding). */
static void chunk_sources(const dmx__rf_stream *st, int64_t k, int64_t *lo, int64_t *hi) {
    const int64_t s = k * st->p.step,
                  L = st->p.plen - s < st->p.chunk ? st->p.plen - s : st->p.chunk;
    int64_t a = INT64_MAX, b = -1;
    for (int64_t i = 0; i < L; i++) {
        int64_t o = reflect(s + i - st->B, st->p.len);
        a = o < a ? o : a;
        b = o > b ? o : b;
    }
    *lo = a;
    *hi = b;
}

/* Chunk k's model input, padded to C as MSST pads it. */
static void gather(const dmx__rf_stream *st, int64_t k, float *chunk) {
    const int64_t C = st->p.chunk, s0 = k * st->p.step, T = st->p.len;
    const int64_t L = st->p.plen - s0 < C ? st->p.plen - s0 : C;
    for (int a = 0; a < st->A; a++) {
        const float *h = st->hist + (size_t)a * st->hcap;
        float *d = chunk + (size_t)a * C;
        for (int64_t i = 0; i < L; i++) d[i] = h[reflect(s0 + i - st->B, T) - st->obase];
        for (int64_t i = L; i < C; i++) d[i] = L > C / 2 ? d[reflect(i, L)] : 0.0f;
    }
}

static void *worker_main(void *arg) {
    rf_worker *w = arg;
    w->status = dmx__roformer_forward(
        w->n, &w->ar, w->chunk, (int)dmx__roformer_config(w->n)->chunk_size, w->y, NULL, NULL);
    if (w->status != DMX_OK) snprintf(w->err, sizeof w->err, "%s", dmx_last_error());
    dmx__arena_fit(&w->ar);
    return NULL;
}

/* Adds chunk k's output y, writes what became final, slides the sums and
 * drops the input no later chunk reads. */
static dmx_status accumulate(dmx__rf_stream *st, int64_t k, const float *y) {
    const int64_t C = st->p.chunk, step = st->p.step, s0 = k * step, T = st->p.len;
    const int64_t L = st->p.plen - s0 < C ? st->p.plen - s0 : C;
    const int A = st->A, SA = st->S * st->A;
    dmx__rf_plan_window(&st->p, k, st->w);
    for (int q = 0; q < SA; q++) {
        const float *yq = y + (size_t)q * C;
        float *r = st->res + (size_t)q * C;
        for (int64_t i = 0; i < L; i++) r[i] += yq[i] * st->w[i];
    }
    for (int64_t i = 0; i < L; i++) st->cnt[i] += st->w[i];
    /* padded positions [s0, s0 + fin) are final: no later chunk reaches them */
    int last = k == st->p.n_chunks - 1;
    int64_t fin = last ? L : step;
    int64_t a0 = st->B > s0 ? st->B - s0 : 0;                 /* skip the left padding */
    int64_t a1 = st->B + T - s0 < fin ? st->B + T - s0 : fin; /* and the right one */
    if (a1 > a0) {
        int64_t m = a1 - a0;
        for (int q = 0; q < SA; q++) {
            const float *r = st->res + (size_t)q * C;
            float *o = st->outb + (size_t)q * C;
            for (int64_t i = 0; i < m; i++) {
                float cn = st->cnt[a0 + i];
                o[i] = cn != 0.0f ? r[a0 + i] / cn : 0.0f; /* MSST: nan_to_num(0/0) */
            }
            st->optr[q] = o;
        }
        dmx_status s = st->write(st->user, st->optr, m);
        if (s != DMX_OK) return s;
        st->written += m;
    }
    for (int q = 0; q < SA; q++) {
        float *r = st->res + (size_t)q * C;
        memmove(r, r + step, sizeof(float) * (size_t)(C - step));
        memset(r + C - step, 0, sizeof(float) * (size_t)step);
    }
    memmove(st->cnt, st->cnt + step, sizeof(float) * (size_t)(C - step));
    memset(st->cnt + C - step, 0, sizeof(float) * (size_t)step);
    if (k + 1 < st->p.n_chunks) {
        int64_t lo, hi;
        chunk_sources(st, k + 1, &lo, &hi);
        /* a later chunk can reach further into the right reflect padding
         * (down to sample T-1-border) than the next one does */
        if (st->p.padded && T - 1 - st->B < lo) lo = T - 1 - st->B;
        /* unknown length: the end may be near, keep what its padding reads */
        if (st->open && st->obase + st->on - 1 - st->p.border < lo)
            lo = st->obase + st->on - 1 - st->p.border;
        int64_t drop = lo - st->obase;
        if (drop > st->on) drop = st->on;
        if (drop > 0) {
            for (int a = 0; a < A; a++) {
                float *h = st->hist + (size_t)a * st->hcap;
                memmove(h, h + drop, sizeof(float) * (size_t)(st->on - drop));
            }
            st->obase += drop;
            st->on -= drop;
        }
    }
    return DMX_OK;
}

/* Runs every chunk whose input has arrived, `threads` at a time (a partial
 * batch only once the input is complete), accumulating in chunk order so
 * the result does not depend on the thread count. */
static dmx_status run_ready(dmx__rf_stream *st) {
    const int complete = !st->open && st->obase + st->on == st->p.len;
    /* Unknown length: once more than 2 border samples have arrived the
     * track is padded, as the provisional plan says, and a chunk whose
     * input has all arrived is not the last one and lies before the right
     * padding (its last source sample k step + step - 1 < T), so it runs as
     * under the real plan. */
    if (st->open && st->obase + st->on <= 2 * st->p.border) return DMX_OK;
    while (st->k < st->p.n_chunks) {
        int nb = 0;
        while (nb < st->threads && st->k + nb < st->p.n_chunks) {
            int64_t lo, hi;
            chunk_sources(st, st->k + nb, &lo, &hi);
            if (hi >= st->obase + st->on) break;
            nb++;
        }
        if (nb == 0 || (nb < st->threads && !complete)) break;
        for (int b = 0; b < nb; b++) {
            st->wk[b].k = st->k + b;
            gather(st, st->k + b, st->wk[b].chunk);
        }
        dmx__blas_init(); /* one BLAS thread per forward pass, process-wide (threads.c) */
        dmx__team_run(nb, st->run_threads, worker_main, st->wk, sizeof st->wk[0]);
        for (int b = 0; b < nb; b++) {
            if (st->wk[b].status != DMX_OK) return dmx__fail(st->wk[b].status, "%s", st->wk[b].err);
            dmx_status s = accumulate(st, st->k, st->wk[b].y);
            if (s != DMX_OK) return s;
            st->k++;
        }
    }
    return DMX_OK;
}

dmx_status dmx__rf_stream_feed(dmx__rf_stream *st, const float *const *in, int64_t frames) {
    if (st->err != DMX_OK) return st->err;
    if (frames < 0 || (!st->open && st->obase + st->on + frames > st->p.len))
        return dmx__fail(DMX_ERR_INVALID_ARG,
                         "roformer demix: %lld samples fed past the announced %lld",
                         (long long)(st->obase + st->on + frames), (long long)st->p.len);
    int64_t done = 0;
    while (done < frames) {
        int64_t room = st->hcap - st->on, m = frames - done < room ? frames - done : room;
        if (m <= 0)
            return st->err = dmx__fail(DMX_ERR_INTERNAL, "roformer demix: input history overflow");
        for (int a = 0; a < st->A; a++)
            memcpy(st->hist + (size_t)a * st->hcap + st->on, in[a] + done,
                   sizeof(float) * (size_t)m);
        st->on += m;
        done += m;
        dmx_status s = run_ready(st);
        if (s != DMX_OK) return st->err = s;
    }
    return DMX_OK;
}

dmx_status dmx__rf_stream_finish(dmx__rf_stream *st) {
    if (st->err != DMX_OK) return st->err;
    if (st->open) {
        /* The real plan; the chunks already run are the same in both. */
        int64_t T = st->obase + st->on;
        dmx__rf_plan p;
        dmx_status s = dmx__rf_plan_make(dmx__roformer_config(st->n), T, &p);
        if (s == DMX_OK && st->k > 0 && !p.padded)
            s = dmx__fail(DMX_ERR_INTERNAL, "roformer demix: the padding changed at the end");
        if (s != DMX_OK) return st->err = s;
        st->p = p;
        st->B = p.padded ? p.border : 0;
        st->open = 0;
    }
    if (st->obase + st->on != st->p.len)
        return dmx__fail(DMX_ERR_INVALID_ARG, "roformer demix: finished after %lld of %lld samples",
                         (long long)(st->obase + st->on), (long long)st->p.len);
    dmx_status s = run_ready(st);
    if (s != DMX_OK) return st->err = s;
    if (st->k != st->p.n_chunks || st->written != st->p.len)
        return st->err = dmx__fail(DMX_ERR_INTERNAL, "roformer demix: %lld of %lld samples written",
                                   (long long)st->written, (long long)st->p.len);
    return DMX_OK;
}

typedef struct whole_ctx {
    float *out;
    int64_t len, pos;
    int SA;
} whole_ctx;

static dmx_status whole_write(void *user, const float *const *stems, int64_t frames) {
    whole_ctx *c = user;
    for (int q = 0; q < c->SA; q++)
        memcpy(c->out + (size_t)q * c->len + c->pos, stems[q], sizeof(float) * (size_t)frames);
    c->pos += frames;
    return DMX_OK;
}

dmx_status dmx__rf_demix(const dmx__roformer *n, const float *mix, int64_t len, int n_threads,
                         float *out) {
    const dmx__rf_config *c = dmx__roformer_config(n);
    const int A = c->stereo ? 2 : 1;
    whole_ctx wc = {out, len, 0, c->num_stems * A};
    dmx__rf_stream *st = NULL;
    dmx_status s = dmx__rf_stream_new(n, len, n_threads, whole_write, &wc, &st);
    if (s != DMX_OK) return s;
    const float *in[2] = {mix, mix + (A > 1 ? len : 0)};
    s = dmx__rf_stream_feed(st, in, len);
    if (s == DMX_OK) s = dmx__rf_stream_finish(st);
    dmx__rf_stream_free(st);
    return s;
}
