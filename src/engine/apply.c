/*
 * apply.c - upstream's apply_model() (demucs/apply.py) as a stream: input is
 * fed in chunks, stems come out through a callback as soon as they are final,
 * and memory does not grow with the song.
 *
 * Upstream's computation, which this reproduces with identical arithmetic:
 *   bag:    each member's estimate is weighted per source; the sum is divided
 *           by the per-source weight totals;
 *   shifts: the mix is zero-padded by max_shift = 0.5 s on both sides, and
 *           for each shift a random offset in [0, max_shift] (Python's
 *           random.randint after random.seed(seed); the draws upstream's
 *           transformer makes on each forward pass are replayed too) selects
 *           a view of length n + max_shift - offset; the estimates are
 *           realigned and averaged;
 *   split:  segments of `segment` seconds every (1 - overlap) * segment,
 *           each evaluated on a window padded symmetrically to the model's
 *           length with real neighbouring samples where they exist (upstream's
 *           TensorChunk.padded) and zeros beyond the signal, cross-faded with
 *           triangular weights ** transition_power. The model's length for a
 *           chunk is int(segment * samplerate) for a fixed-segment network
 *           (HTDemucs) given a segment, else the network's valid_length(chunk
 *           length) (net.h).
 * The networks are reached only through net.h (dmx__net_forward).
 *
 * How it streams: every (member, shift) pair is a "track" — one of upstream's
 * apply_model passes over one view. Its segment evaluations are known in
 * advance; each reads a window of the (normalised) input and adds a weighted
 * result into the track's accumulator ring. Evaluations run in order of their
 * output position across all tracks, so a sample is final once every track
 * has moved past it; final samples are combined exactly as upstream combines
 * whole tensors (divide by the summed weights, average shifts, weight bag
 * members), de-normalised and handed to the caller. Only a window of about
 * one segment of input and of accumulators is alive at any time.
 *
 * Threads: with T threads, up to T evaluations run at once, each on a
 * thread of the stream's pool (team.h) as soon as one is free, so a slow
 * evaluation holds up no other and decoding, accumulating and writing (on
 * the caller's thread) overlap them; a thread with nothing to evaluate (the
 * song's end, or an evaluation waiting for ring space) helps the busy ones
 * with their matrix products, cut so that each element is computed as
 * uncut. BLAS is single-threaded in the whole process, set once
 * (threads.c): OpenBLAS's thread count is process-wide, so changing it
 * here would change the threads — and the rounding — of other streams
 * running at the same time. Accumulation happens in the calling thread
 * (see "scheduling" below for its order), so results are bit-identical for
 * any T and whatever else the process runs.
 *
 * RoFormer models (loaded from an MSST config) do not use any of this: the
 * same dmx_stream API forwards to MSST's whole-track chunking
 * (roformer_demix.h), so callers have one stream interface for every model.
 */
#include "apply.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "ops.h"
#include "roformer_demix.h"
#include "team.h"
#include "threads.h"

#define MAX_TRACKS 1024

typedef struct track {
    const dmx__net *net;
    int member;
    int64_t t0;          /* input index of the view's first sample (offset - max_shift) */
    int64_t L;           /* view length */
    int64_t sl, stride;  /* segment length and hop (sl = L, stride = L without split) */
    int64_t fixed_valid; /* > 0: the model length of every chunk (a fixed-segment
                          * network given a segment), else valid_length(chunk) */
    int64_t n_chunks;
    int64_t next;       /* chunks before it are accumulated */
    int64_t dispatched; /* chunks before it are dispatched (or accumulated) */
    uint64_t acc_mask;  /* bit b: chunk next + b accumulated out of order */
    float *acc;    /* (sources*channels, ring) weighted sums, indexed by t % ring */
    float *sw;     /* (ring) summed weights */
    float *weight; /* (sl) cross-fade weights, shared by tracks of equal sl (not owned if shared) */
    int owns_weight;
} track;

typedef struct job {
    struct dmx_stream *st;
    track *t;
    int64_t j;
    dmx__worker *w;
    uint64_t seq;     /* dispatch order */
    atomic_int state; /* JOB_FREE, JOB_RUNNING, JOB_DONE */
    dmx_status status;
    char err[512];
} job;
enum { JOB_FREE, JOB_RUNNING, JOB_DONE };

/* pass 1's block: ref's statistics are merged this many frames at a time */
#define ANALYZE_BLOCK 4096

struct dmx_stream {
    dmx_session *s;
    dmx_separate_opts o;
    dmx_write_fn write;
    void *write_user;
    int S, A, threads, shifts;
    int64_t max_valid; /* longest model input of any evaluation */
    /* normalisation (upstream separator): statistics of the mono reference */
    double mean_acc, m2; /* pass 1: the running mean and squared deviations */
    float ref_buf[ANALYZE_BLOCK]; /* pass 1: ref's values not merged yet */
    int ref_n;
    int64_t analyzed;
    float mean, den; /* x = (in - mean) / den ; out = est * den + mean */
    int started, finished_input;
    int64_t n; /* total frames */
    /* normalised input window x[in_base, in_base + in_len) */
    float *in; /* (A, in_cap) */
    int64_t in_cap, in_base, in_len;
    /* tracks and their accumulator rings */
    int n_tracks;
    track tracks[MAX_TRACKS];
    int64_t ring;
    int64_t emitted;     /* frames handed to the caller */
    float *emit_buf;     /* (S*A + 1, EMIT_BLOCK): outputs, a track's estimate */
    int64_t done, total; /* progress */
    dmx_status error;    /* sticky */
    /* evaluations in flight: slot b uses session worker b; with more than
     * one thread they run on the pool's threads (started at the first
     * dispatch, stopped when the stream ends or fails) */
    job jobs[DMX__MAX_WORKERS];
    int inflight;
    uint64_t seq;
    dmx__pool *pool;
    int no_pool;             /* its threads could not be started: evaluate here */
    atomic_int abort;        /* drain(): evaluations not yet begun are skipped */
    unsigned long long seen; /* pool tasks seen finished */
    int order_free;          /* no sample of a track is covered by more than two
                              * chunks: accumulation order cannot change a sum */
    /* RoFormer models: MSST's chunking (roformer_demix.h) instead of all of
     * the above; the stream only forwards, with progress and cancel */
    const dmx__roformer *rfnet;
    dmx__rf_stream *rf;
};

#define EMIT_BLOCK 16384

static int cancelled(const dmx_stream *st) { return st->o.cancel && atomic_load(st->o.cancel); }

/* --------------------------------------------------------------- schedule */

/* int(samplerate * segment): the user's segment, else the network's own
 * (its training length, or a bag's `segment:` override) */
static int64_t seg_len(const dmx_stream *st, const dmx__net *net) {
    if (st->o.segment > 0) return dmx__segment_length(0, 0, st->o.segment, net->desc.samplerate);
    return net->desc.training_length;
}

static void track_geometry(const dmx_stream *st, track *t, int64_t L) {
    t->L = L;
    if (st->o.split) {
        t->sl = seg_len(st, t->net);
        t->stride = (int64_t)((1.0 - st->o.overlap) * t->sl);
        if (t->stride < 1) t->stride = 1;
    } else {
        t->sl = L;
        t->stride = L;
    }
    /* upstream's leaf: int(segment * samplerate) for HTDemucs with a
     * segment given, else model.valid_length(chunk length) */
    t->fixed_valid = st->o.segment > 0 && t->net->desc.fixed_segment ? seg_len(st, t->net) : 0;
    t->n_chunks = (L + t->stride - 1) / t->stride;
    t->next = 0;
}

static int64_t chunk_len(const track *t, int64_t j) {
    int64_t r = t->L - j * t->stride;
    return r < t->sl ? r : t->sl;
}
/* the model's input length for chunk j */
static int64_t chunk_valid(const track *t, int64_t j) {
    return t->fixed_valid > 0 ? t->fixed_valid : dmx__net_valid_length(t->net, chunk_len(t, j));
}
/* input index of chunk j's first output sample */
static int64_t chunk_t(const track *t, int64_t j) { return t->t0 + j * t->stride; }
/* input index where chunk j's model window starts (upstream's padded()) */
static int64_t window_start(const track *t, int64_t j) {
    return chunk_t(t, j) - (chunk_valid(t, j) - chunk_len(t, j)) / 2;
}

/* The track whose next undispatched evaluation comes first, or -1. */
static int next_track(const dmx_stream *st) {
    int best = -1;
    int64_t bt = 0;
    for (int i = 0; i < st->n_tracks; i++) {
        const track *t = &st->tracks[i];
        int64_t j = t->dispatched;
        if (j >= t->n_chunks) continue;
        int64_t ct = chunk_t(t, j);
        if (best < 0 || ct < bt) {
            best = i;
            bt = ct;
        }
    }
    return best;
}

/* Every sample before this is final. */
static int64_t final_limit(const dmx_stream *st) {
    int64_t lim = st->n;
    for (int i = 0; i < st->n_tracks; i++) {
        const track *t = &st->tracks[i];
        if (t->next < t->n_chunks) {
            int64_t ct = chunk_t(t, t->next);
            if (ct < lim) lim = ct;
        }
    }
    return lim < 0 ? 0 : lim;
}

/* Oldest input sample still needed (a dispatched evaluation has its
 * window copied). */
static int64_t input_keep_from(const dmx_stream *st) {
    int64_t k = st->n;
    for (int i = 0; i < st->n_tracks; i++) {
        const track *t = &st->tracks[i];
        if (t->dispatched < t->n_chunks) {
            int64_t ws = window_start(t, t->dispatched);
            if (ws < k) k = ws;
        }
    }
    return k < 0 ? 0 : k;
}

/* ---------------------------------------------------------------- workers */

/* Worker i, with segment buffers of at least st->max_valid samples. */
static dmx_status worker_get(dmx_stream *st, int i, dmx__worker **out) {
    dmx_session *s = st->s;
    const dmx_model *m = s->model;
    while (s->n_workers <= i) {
        dmx__worker *w = &s->workers[s->n_workers++];
        memset(w, 0, sizeof *w);
        dmx__arena_init(&w->arena);
    }
    dmx__worker *w = &s->workers[i];
    if (w->cap < st->max_valid) {
        dmx__big_free(w->seg_in);
        dmx__big_free(w->seg_out);
        w->seg_in = dmx__big_alloc(sizeof(float) * (size_t)m->channels * st->max_valid);
        w->seg_out =
            dmx__big_alloc(sizeof(float) * (size_t)m->n_sources * m->channels * st->max_valid);
        w->cap = w->seg_in && w->seg_out ? st->max_valid : 0;
        if (!w->cap) return dmx__fail(DMX_ERR_NOMEM, "out of memory for segment buffers");
    }
    *out = w;
    return DMX_OK;
}

/* One model evaluation (its window already in w->seg_in): forward ->
 * center_trim, into w->seg_out as (sources*channels, len) rows with stride
 * `valid`. Runs on a pool thread (or the caller's); touches only its job
 * and its worker. */
static void job_main(void *arg) {
    job *jb = arg;
    dmx_stream *st = jb->st;
    const int64_t valid = chunk_valid(jb->t, jb->j);
    jb->status = cancelled(st) || atomic_load(&st->abort)
                     ? dmx__fail(DMX_ERR_CANCELLED, "separation cancelled")
                               : dmx__net_forward(jb->t->net, &jb->w->arena, jb->w->seg_in,
                                                  (int)valid, jb->w->seg_out, NULL, NULL);
    dmx__arena_fit(&jb->w->arena);
    if (jb->status != DMX_OK) snprintf(jb->err, sizeof jb->err, "%s", dmx_last_error());
    atomic_store_explicit(&jb->state, JOB_DONE, memory_order_release);
}

/* Evaluation (t, j)'s model window into w->seg_in: real samples where the
 * input has them, zeros beyond (upstream's TensorChunk.padded). */
static void copy_window(const dmx_stream *st, const track *t, int64_t j, dmx__worker *w) {
    const int64_t valid = chunk_valid(t, j), ws = window_start(t, j);
    for (int c = 0; c < st->A; c++) {
        float *d = w->seg_in + (size_t)c * valid;
        const float *src = st->in + (size_t)c * st->in_cap;
        for (int64_t i = 0; i < valid; i++) {
            int64_t k = ws + i; /* input index */
            d[i] = (k >= 0 && k < st->n) ? src[k - st->in_base] : 0.0f;
        }
    }
}

/* Adds evaluation (t, j)'s result (in w->seg_out) into the track's ring,
 * run by run of ring slots that do not wrap. */
static dmx_status accumulate(dmx_stream *st, track *t, int64_t j, const dmx__worker *w) {
    const int K = st->S * st->A;
    const int64_t valid = chunk_valid(t, j);
    int64_t len = chunk_len(t, j), lo = (valid - len) / 2, ct = chunk_t(t, j);
    int64_t end = ct + len < st->n ? ct + len : st->n;
    if (end - st->emitted > st->ring)
        return dmx__fail(DMX_ERR_INTERNAL,
                         "accumulator ring overrun (%lld samples pending, ring %lld)",
                         (long long)(end - st->emitted), (long long)st->ring);
    /* upstream drops the samples outside the song (shift realignment) */
    int64_t i = ct < 0 ? -ct : 0;
    const int64_t i_end = end - ct;
    while (i < i_end) {
        const int64_t r0 = (ct + i) % st->ring;
        int64_t m = st->ring - r0;
        if (m > i_end - i) m = i_end - i;
        const float *wg = t->weight + i;
        for (int k = 0; k < K; k++) {
            float *a = t->acc + (size_t)k * st->ring + r0;
            const float *x = w->seg_out + (size_t)k * valid + lo + i;
            for (int64_t q = 0; q < m; q++) a[q] += wg[q] * x[q];
        }
        float *sw = t->sw + r0;
        for (int64_t q = 0; q < m; q++) sw[q] += wg[q];
        i += m;
    }
    return DMX_OK;
}

/* Combines final samples [emitted, limit) and hands them to the caller:
 * per sample, each track's sum over its summed weights, shifts averaged,
 * bag members weighted per source, de-normalised (upstream's order of
 * operations), run by run of ring slots that do not wrap. */
static dmx_status emit(dmx_stream *st, int64_t limit) {
    const int K = st->S * st->A;
    const dmx_model *m = st->s->model;
    const int nm = m->n_members, shifts = st->shifts ? st->shifts : 1;
    const float *outp[64];
    while (st->emitted < limit) {
        int64_t nb = limit - st->emitted;
        if (nb > EMIT_BLOCK) nb = EMIT_BLOCK;
        const int64_t r0 = st->emitted % st->ring;
        if (nb > st->ring - r0) nb = st->ring - r0;
        for (int k = 0; k < K; k++) {
            const int src = k / st->A;
            float *o = st->emit_buf + (size_t)k * EMIT_BLOCK;
            float *est = st->emit_buf + (size_t)K * EMIT_BLOCK; /* a member's estimate */
            for (int mb = 0; mb < nm; mb++) {
                const float wmb = nm > 1 ? m->weights[(size_t)mb * st->S + src] : 1.0f;
                for (int sh = 0; sh < shifts; sh++) {
                    const track *t = &st->tracks[mb * shifts + sh];
                    const float *a = t->acc + (size_t)k * st->ring + r0, *sw = t->sw + r0;
                    if (sh == 0) /* 0 + x: a sum that starts at zero, as upstream's */
                        for (int64_t i = 0; i < nb; i++) est[i] = 0.0f + a[i] / sw[i];
                    else
                        for (int64_t i = 0; i < nb; i++) est[i] += a[i] / sw[i];
                }
                if (st->shifts)
                    for (int64_t i = 0; i < nb; i++) est[i] /= (float)st->shifts;
                if (nm == 1)
                    memcpy(o, est, sizeof(float) * (size_t)nb);
                else if (mb == 0)
                    for (int64_t i = 0; i < nb; i++) o[i] = 0.0f + est[i] * wmb;
                else
                    for (int64_t i = 0; i < nb; i++) o[i] += est[i] * wmb;
            }
            if (nm > 1) {
                const float tot = (float)m->totals[src];
                for (int64_t i = 0; i < nb; i++) o[i] /= tot;
            }
            if (st->o.normalize)
                for (int64_t i = 0; i < nb; i++) o[i] = o[i] * st->den + st->mean;
            outp[k] = o;
        }
        /* recycle the ring slots */
        for (int ti = 0; ti < st->n_tracks; ti++) {
            track *t = &st->tracks[ti];
            for (int k = 0; k < K; k++)
                memset(t->acc + (size_t)k * st->ring + r0, 0, sizeof(float) * (size_t)nb);
            memset(t->sw + r0, 0, sizeof(float) * (size_t)nb);
        }
        dmx_status s = st->write(st->write_user, outp, nb);
        if (s != DMX_OK) return s;
        st->emitted += nb;
    }
    return DMX_OK;
}

/* ------------------------------------------------------------- scheduling
 *
 * Evaluations are dispatched in order of their output position (across
 * tracks) as soon as a slot is free, their input has arrived and their
 * output fits the accumulator ring; each runs on its own pool thread, so a
 * slow one holds up no other and the caller's decoding and writing overlap
 * them. A thread with nothing to evaluate helps the busy ones with their
 * products (team.h): the song's last evaluations, or one whose successor
 * must wait for it to free ring space. Results are accumulated on the
 * caller's thread: as they finish where no sample of a track is covered by
 * more than two chunks (a sum of two terms onto zero does not depend on
 * their order), else in dispatch order; either way bit-identical for any
 * thread count. With one thread evaluations run on the caller's thread. */

static int job_done(const job *jb) {
    return atomic_load_explicit(&jb->state, memory_order_acquire) == JOB_DONE;
}

/* Ends the pool after every evaluation in flight has returned (their
 * results are dropped: the stream has failed, or is freed); queued ones
 * return at once. */
static void drain(dmx_stream *st) {
    atomic_store(&st->abort, 1);
    dmx__pool_stop(st->pool);
    atomic_store(&st->abort, 0);
    st->pool = NULL;
    for (int b = 0; b < DMX__MAX_WORKERS; b++) atomic_store(&st->jobs[b].state, JOB_FREE);
    st->inflight = 0;
}

/* The slot whose result is accumulated next, or -1: none has finished,
 * or (in order) the oldest is still running. */
static int next_result(const dmx_stream *st) {
    int pick = -1;
    uint64_t oldest = UINT64_MAX;
    for (int b = 0; b < st->threads; b++) {
        const job *jb = &st->jobs[b];
        int state = atomic_load_explicit(&jb->state, memory_order_acquire);
        if (state == JOB_FREE) continue;
        if (st->order_free) {
            if (state == JOB_DONE) return b;
        } else if (jb->seq < oldest) {
            pick = b;
            oldest = jb->seq;
        }
    }
    return pick >= 0 && job_done(&st->jobs[pick]) ? pick : -1;
}

/* Accumulates finished evaluations (see above for the order). */
static dmx_status collect(dmx_stream *st) {
    for (int b; (b = next_result(st)) >= 0;) {
        job *jb = &st->jobs[b];
        if (jb->status != DMX_OK) return dmx__fail(jb->status, "%s", jb->err);
        track *t = jb->t;
        dmx_status a = accumulate(st, t, jb->j, jb->w);
        if (a != DMX_OK) return a;
        atomic_store_explicit(&jb->state, JOB_FREE, memory_order_relaxed);
        st->inflight--;
        t->acc_mask |= (uint64_t)1 << (jb->j - t->next);
        while (t->acc_mask & 1) {
            t->acc_mask >>= 1;
            t->next++;
        }
        st->done++;
        if (st->o.progress && st->o.progress(st->o.progress_user, st->done, st->total))
            return dmx__fail(DMX_ERR_CANCELLED, "separation cancelled by the progress callback");
    }
    return DMX_OK;
}

/* Starts every evaluation that can start now. `limit` is where emission
 * is about to reach (final_limit()): pump() emits up to it right after,
 * before any result dispatched here is accumulated, so an evaluation may
 * start while the caller's thread still writes the samples whose ring
 * slots its output will take. */
static dmx_status dispatch(dmx_stream *st, int64_t limit) {
    const int64_t have = st->in_base + st->in_len;
    while (st->inflight < st->threads) {
        int ti = next_track(st);
        if (ti < 0) break;
        track *t = &st->tracks[ti];
        int64_t j = t->dispatched;
        int64_t need = window_start(t, j) + chunk_valid(t, j);
        if (need > st->n) need = st->n;
        if (!st->finished_input && need > have) break; /* its input has not arrived */
        int64_t end = chunk_t(t, j) + chunk_len(t, j);
        if (end > st->n) end = st->n;
        /* its output must fit the ring (and acc_mask: never more than
         * 64 chunks past a track's oldest unaccumulated one) */
        if (end - limit > st->ring || j - t->next >= 64) break;
        int b = 0;
        while (atomic_load_explicit(&st->jobs[b].state, memory_order_relaxed) != JOB_FREE) b++;
        job *jb = &st->jobs[b];
        dmx_status s = worker_get(st, b, &jb->w);
        if (s != DMX_OK) return s;
        copy_window(st, t, j, jb->w);
        jb->st = st;
        jb->t = t;
        jb->j = j;
        jb->seq = st->seq++;
        jb->status = DMX_OK;
        jb->err[0] = 0;
        atomic_store_explicit(&jb->state, JOB_RUNNING, memory_order_relaxed);
        t->dispatched++;
        st->inflight++;
        if (st->threads > 1 && !st->pool && !st->no_pool)
            st->no_pool = !(st->pool = dmx__pool_start(st->threads));
        if (!st->pool || dmx__pool_submit(st->pool, job_main, jb) != 0) job_main(jb);
    }
    return DMX_OK;
}

/* Accumulates, dispatches and emits until nothing more can happen without
 * waiting; with `wait_all`, also waits for evaluations until none is left
 * (the input has ended). Dispatching comes before emitting: a thread that
 * has finished an evaluation starts the next one while this thread writes
 * (writing a stride of stems can take a tenth of a second). */
static dmx_status pump(dmx_stream *st, int wait_all) {
    for (;;) {
        dmx_status s = collect(st);
        const int64_t limit = final_limit(st);
        if (s == DMX_OK) s = dispatch(st, limit);
        if (s == DMX_OK) s = emit(st, limit);
        if (s != DMX_OK) {
            drain(st);
            return s;
        }
        if (next_result(st) >= 0) continue; /* ran on this thread, or finished meanwhile */
        if (st->inflight == 0 || !wait_all) return DMX_OK;
        st->seen = dmx__pool_wait(st->pool, st->seen);
    }
}

/* ------------------------------------------------------------------ API */

void dmx_separate_opts_init(dmx_separate_opts *o) {
    memset(o, 0, sizeof *o);
    o->shifts = 0;
    o->overlap = 0.25;
    o->split = 1;
    o->transition_power = 1.0;
    o->normalize = 1;
}

/* ---------------------------------------------------------------- RoFormer */

const dmx__roformer *dmx__model_roformer(const dmx_model *m) {
    if (!m || m->n_members != 1) return NULL;
    const dmx__net *n = m->members[0];
    return n->vt == &dmx__bs_roformer_vt || n->vt == &dmx__mel_band_roformer_vt ? n->impl : NULL;
}

int dmx_model_single_pass(const dmx_model *m) { return dmx__model_roformer(m) != NULL; }

/* The RoFormer stream's writer: cancel and progress (in output frames) around
 * the caller's. */
static dmx_status rf_write(void *user, const float *const *stems, int64_t frames) {
    dmx_stream *st = user;
    if (cancelled(st)) return dmx__fail(DMX_ERR_CANCELLED, "cancelled");
    dmx_status e = st->write(st->write_user, stems, frames);
    if (e != DMX_OK) return e;
    st->done += frames;
    /* an unknown length's hint may be short: never report past 100 % */
    if (st->total > 0 && st->done > st->total) st->total = st->done;
    if (st->o.progress && st->o.progress(st->o.progress_user, st->done, st->total))
        return dmx__fail(DMX_ERR_CANCELLED, "cancelled");
    return DMX_OK;
}

static dmx_status check_opts(const dmx_model *m, const dmx_separate_opts *o) {
    if (!(o->overlap >= 0.0 && o->overlap < 1.0))
        return dmx__fail(DMX_ERR_INVALID_ARG, "overlap must be in [0, 1), got %g", o->overlap);
    if (!(o->transition_power >= 1.0))
        return dmx__fail(DMX_ERR_INVALID_ARG, "transition_power must be >= 1, got %g",
                         o->transition_power);
    if (o->shifts < 0 || o->shifts > 100)
        return dmx__fail(DMX_ERR_INVALID_ARG, "shifts must be in 0..100, got %d", o->shifts);
    if (o->segment < 0 || (o->segment > 0 && o->segment > m->max_segment + 1e-9))
        return dmx__fail(DMX_ERR_INVALID_ARG, "segment %.3g s is longer than the model's %.3g s",
                         o->segment, m->max_segment);
    if (o->segment > 0 && dmx__segment_length(0, 0, o->segment, m->samplerate) < 1)
        return dmx__fail(DMX_ERR_INVALID_ARG, "segment %.3g s is too short", o->segment);
    if ((size_t)m->n_members * (o->shifts ? o->shifts : 1) > MAX_TRACKS)
        return dmx__fail(DMX_ERR_INVALID_ARG, "too many bag members x shifts");
    return DMX_OK;
}

dmx_status dmx_stream_new(dmx_session *s, const dmx_separate_opts *opts, dmx_write_fn write,
                          void *user, dmx_stream **out) {
    dmx__clear_error();
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_new: out is NULL");
    *out = NULL;
    if (!s || !write)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_new: NULL session or callback");
    dmx_separate_opts def;
    if (!opts) {
        dmx_separate_opts_init(&def);
        opts = &def;
    }
    const dmx__roformer *rfnet = dmx__model_roformer(s->model);
    dmx_status e = rfnet ? DMX_OK : check_opts(s->model, opts);
    if (e != DMX_OK) return e;
    dmx_stream *st = calloc(1, sizeof *st);
    if (!st) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    st->s = s;
    st->rfnet = rfnet;
    st->o = *opts;
    st->write = write;
    st->write_user = user;
    st->S = s->model->n_sources;
    st->A = s->model->channels;
    st->shifts = opts->shifts;
    dmx__blas_init();
    st->threads = opts->n_threads > 0 ? opts->n_threads : dmx_cpu_count();
    if (st->threads > DMX__MAX_WORKERS) st->threads = DMX__MAX_WORKERS;
    st->mean = 0.0f;
    st->den = 1.0f;
    *out = st;
    return DMX_OK;
}

/* Merges the gathered block of ref (st->ref_n values) into the running
 * mean and squared deviations: the block's own pair in double on the vector
 * lanes (dmx__sum_sq, dmx__sum_sqdev), combined by Chan's rule. A per-sample
 * Welford update (a dependent division per sample) took 70 ms of a 3 min
 * song's single-threaded first pass. */
static void analyze_block(dmx_stream *st) {
    const int nb = st->ref_n;
    if (nb <= 0) return;
    double s = 0, s2 = 0;
    dmx__sum_sq(st->ref_buf, (size_t)nb, &s, &s2);
    const double mb = s / nb, m2b = dmx__sum_sqdev(st->ref_buf, (size_t)nb, mb);
    const double na = (double)st->analyzed, n = na + nb, d = mb - st->mean_acc;
    st->mean_acc += d * (nb / n);
    st->m2 += m2b + d * d * (na * nb / n);
    st->analyzed += nb;
    st->ref_n = 0;
}

dmx_status dmx_stream_analyze(dmx_stream *st, const float *const *in, int64_t frames) {
    if (!st || (!in && frames))
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_analyze: NULL argument");
    if (st->started)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_analyze after dmx_stream_start");
    if (st->rfnet) return DMX_OK; /* MSST's demix does not normalise */
    /* ref = mix.mean(0), gathered into blocks of ANALYZE_BLOCK frames counted
     * from the song's start (so the statistics do not depend on how the
     * caller cuts its feed); a full block is merged by analyze_block. */
    for (int64_t i0 = 0; i0 < frames;) {
        const int64_t room = ANALYZE_BLOCK - st->ref_n;
        const int nb = (int)(frames - i0 < room ? frames - i0 : room);
        float *r = st->ref_buf + st->ref_n;
        const float *c0 = in[0] + i0;
        for (int i = 0; i < nb; i++) r[i] = c0[i];
        for (int c = 1; c < st->A; c++) {
            const float *x = in[c] + i0;
            for (int i = 0; i < nb; i++) r[i] += x[i];
        }
        const float a = (float)st->A;
        for (int i = 0; i < nb; i++) r[i] /= a;
        st->ref_n += nb;
        i0 += nb;
        if (st->ref_n == ANALYZE_BLOCK) analyze_block(st);
    }
    return DMX_OK;
}

dmx_status dmx_stream_start(dmx_stream *st, int64_t total_frames) {
    if (!st) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_start: NULL stream");
    if (st->started) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_start called twice");
    if (total_frames == DMX_FRAMES_UNKNOWN && !st->rfnet)
        return dmx__fail(DMX_ERR_INVALID_ARG,
                         "dmx_stream_start: this model needs the song's length "
                         "(dmx_model_single_pass is 0)");
    if (total_frames < 1 && total_frames != DMX_FRAMES_UNKNOWN)
        return dmx__fail(DMX_ERR_INVALID_ARG, "no audio to separate");
    if (st->rfnet) {
        st->n = total_frames;
        if (total_frames > 0 || !st->total) st->total = total_frames > 0 ? total_frames : 0;
        dmx_status e =
            dmx__rf_stream_new(st->rfnet, total_frames, st->threads, rf_write, st, &st->rf);
        if (e == DMX_OK) st->started = 1;
        return e;
    }
    analyze_block(st); /* the song's last, partial block */
    if (st->o.normalize && st->analyzed != total_frames)
        return dmx__fail(DMX_ERR_INVALID_ARG,
                         "normalisation analysed %lld frames but the stream has %lld",
                         (long long)st->analyzed, (long long)total_frames);
    const dmx_model *m = st->s->model;
    st->n = total_frames;
    if (st->o.normalize) {
        double n = (double)total_frames;
        double var = n > 1 ? st->m2 / (n - 1) : 0.0; /* torch.std is unbiased */
        st->mean = (float)st->mean_acc;
        st->den = (float)sqrt(var) + 1e-8f; /* (ref.std() + 1e-8) in float32 */
    }
    /* tracks, random offsets (upstream order: member, then shift) */
    dmx__pyrandom rng;
    dmx__pyrandom_seed(&rng, st->o.seed);
    int shifts = st->shifts ? st->shifts : 1;
    int64_t max_span = 0, max_sl = 0, max_stride = 0;
    st->order_free = 1;
    for (int k = 0; k < m->n_members; k++) {
        for (int i = 0; i < shifts; i++) {
            track *t = &st->tracks[st->n_tracks++];
            t->net = m->members[k];
            t->member = k;
            int64_t max_shift = 0, off = 0;
            if (st->shifts) {
                max_shift = (int64_t)(0.5 * t->net->desc.samplerate);
                off = dmx__pyrandom_randint(&rng, 0, max_shift);
            }
            t->t0 = off - max_shift;
            track_geometry(st, t, total_frames + max_shift - off);
            if (2 * t->stride < t->sl) st->order_free = 0;
            /* chunk 0 is the longest: the model must take it (upstream's
             * valid_length raises, or padded() asserts, otherwise) */
            int64_t v0 = chunk_valid(t, 0);
            if (v0 < chunk_len(t, 0))
                return dmx__fail(
                    DMX_ERR_INVALID_ARG,
                    st->o.split
                        ? "segment of %lld samples is longer than the model accepts (%lld samples)"
                        : "input of %lld samples is longer than the model segment (%lld samples); "
                          "enable splitting",
                    (long long)chunk_len(t, 0), (long long)v0);
            for (int64_t c = 0; c < t->n_chunks; c++) {
                int64_t v = chunk_valid(t, c);
                if (v > st->max_valid) st->max_valid = v;
            }
            if (st->max_valid > INT32_MAX)
                return dmx__fail(DMX_ERR_INVALID_ARG, "a model input of %lld samples is too long",
                                 (long long)st->max_valid);
            st->total += t->n_chunks;
            /* upstream's networks draw from Python's random on every forward
             * pass (HTDemucs' transformer: randrange(1)): replay those draws
             * between offsets */
            if (st->shifts)
                for (int64_t c = 0; c < t->n_chunks * t->net->desc.rand_draws_per_forward; c++)
                    (void)dmx__pyrandom_randint(&rng, 0, 0);
            int64_t span = t->sl + (int64_t)(st->threads + 1) * t->stride + 2 * max_shift + 1;
            if (span > max_span) max_span = span;
            if (t->sl > max_sl) max_sl = t->sl;
            if (t->stride > max_stride) max_stride = t->stride;
        }
    }
    /* The ring holds every sample that can be pending at once: T
     * evaluations from the lowest unaccumulated position over all tracks
     * (where emission stopped), each pick at most one stride past the
     * previous minimum, end before emitted + sl + (T-1) * stride (shift
     * offsets included, as the positions carry them). dispatch() starts
     * none that would end past it (counting from where the emission that
     * follows it will stop); accumulate() checks it. */
    st->ring = max_sl + (int64_t)(st->threads - 1) * max_stride + 1;
    if (st->ring > st->n + 1) st->ring = st->n + 1;
    const int K = st->S * st->A;
    for (int i = 0; i < st->n_tracks; i++) {
        track *t = &st->tracks[i];
        t->acc = dmx__big_calloc(sizeof(float) * (size_t)K * st->ring);
        t->sw = dmx__big_calloc(sizeof(float) * (size_t)st->ring);
        /* th.cat([arange(1, sl//2 + 1), arange(sl - sl//2, 0, -1)]) / max, ** power */
        t->weight = malloc(sizeof(float) * (size_t)t->sl);
        t->owns_weight = 1;
        if (!t->acc || !t->sw || !t->weight)
            return dmx__fail(DMX_ERR_NOMEM, "out of memory for accumulators");
        if (!st->o.split) {
            for (int64_t x = 0; x < t->sl; x++) t->weight[x] = 1.0f;
            continue;
        }
        int64_t half = t->sl / 2;
        float mx = 0;
        for (int64_t x = 0; x < t->sl; x++) {
            t->weight[x] = (float)(x < half ? x + 1 : t->sl - x);
            if (t->weight[x] > mx) mx = t->weight[x];
        }
        for (int64_t x = 0; x < t->sl; x++) {
            t->weight[x] = t->weight[x] / mx;
            if (st->o.transition_power != 1.0)
                t->weight[x] = powf(t->weight[x], (float)st->o.transition_power);
        }
    }
    /* K output rows and one row for a track's estimate */
    st->emit_buf = dmx__big_alloc(sizeof(float) * (size_t)(K + 1) * EMIT_BLOCK);
    st->in_cap = max_span + st->max_valid + EMIT_BLOCK;
    st->in = dmx__big_alloc(sizeof(float) * (size_t)st->A * st->in_cap);
    if (!st->emit_buf || !st->in)
        return dmx__fail(DMX_ERR_NOMEM, "out of memory for stream buffers");
    st->started = 1;
    return DMX_OK;
}

dmx_status dmx_stream_expect(dmx_stream *st, int64_t frames) {
    if (!st) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_expect: NULL stream");
    /* only a RoFormer stream can have an unknown length (a Demucs stream's
     * progress counts segment evaluations) */
    if (!st->rfnet || (st->started && st->n != DMX_FRAMES_UNKNOWN)) return DMX_OK;
    st->total = frames > 0 ? frames : 0;
    return DMX_OK;
}

dmx_status dmx_stream_feed(dmx_stream *st, const float *const *in, int64_t frames) {
    if (!st || (!in && frames))
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_feed: NULL argument");
    if (!st->started)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_feed before dmx_stream_start");
    if (st->error != DMX_OK) return st->error;
    if (st->rf) {
        if (cancelled(st)) return st->error = dmx__fail(DMX_ERR_CANCELLED, "cancelled");
        dmx_status e = dmx__rf_stream_feed(st->rf, in, frames);
        if (e != DMX_OK) st->error = e;
        return e;
    }
    if (st->in_base + st->in_len + frames > st->n)
        return dmx__fail(DMX_ERR_INVALID_ARG, "more frames fed than announced to dmx_stream_start");
    int64_t pos = 0;
    while (pos < frames) {
        /* drop input no evaluation needs any more */
        int64_t keep = input_keep_from(st);
        if (keep > st->in_base + st->in_len) keep = st->in_base + st->in_len;
        if (keep > st->in_base) {
            int64_t drop = keep - st->in_base;
            for (int c = 0; c < st->A; c++) {
                float *b = st->in + (size_t)c * st->in_cap;
                memmove(b, b + drop, sizeof(float) * (size_t)(st->in_len - drop));
            }
            st->in_base = keep;
            st->in_len -= drop;
        }
        int64_t room = st->in_cap - st->in_len;
        if (room <= 0 && st->inflight > 0) {
            /* the window is full of input for evaluations not yet started:
             * wait for a running one to finish and free a slot */
            st->seen = dmx__pool_wait(st->pool, st->seen);
            dmx_status s = pump(st, 0);
            if (s != DMX_OK) return st->error = s;
            continue;
        }
        if (room <= 0)
            return st->error = dmx__fail(DMX_ERR_INTERNAL, "stream input window overflow");
        int64_t take = frames - pos < room ? frames - pos : room;
        for (int c = 0; c < st->A; c++) {
            float *b = st->in + (size_t)c * st->in_cap + st->in_len;
            const float *src = in[c] + pos;
            if (st->o.normalize)
                for (int64_t i = 0; i < take; i++) b[i] = (src[i] - st->mean) / st->den;
            else
                memcpy(b, src, sizeof(float) * (size_t)take);
        }
        st->in_len += take;
        pos += take;
        dmx_status s = pump(st, 0);
        if (s != DMX_OK) return st->error = s;
    }
    return DMX_OK;
}

dmx_status dmx_stream_finish(dmx_stream *st) {
    if (!st) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_finish: NULL stream");
    if (!st->started)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_stream_finish before dmx_stream_start");
    if (st->error != DMX_OK) return st->error;
    if (st->rf) {
        dmx_status e = dmx__rf_stream_finish(st->rf);
        if (e != DMX_OK) st->error = e;
        return e;
    }
    if (st->in_base + st->in_len != st->n)
        return st->error = dmx__fail(DMX_ERR_INVALID_ARG,
                                     "stream ended after %lld of %lld announced frames",
                                     (long long)(st->in_base + st->in_len), (long long)st->n);
    st->finished_input = 1;
    dmx_status s = pump(st, 1);
    if (s == DMX_OK) s = emit(st, st->n);
    drain(st);
    if (s != DMX_OK) st->error = s;
    return s;
}

void dmx_stream_free(dmx_stream *st) {
    if (!st) return;
    drain(st);
    dmx__rf_stream_free(st->rf);
    for (int i = 0; i < st->n_tracks; i++) {
        dmx__big_free(st->tracks[i].acc);
        dmx__big_free(st->tracks[i].sw);
        if (st->tracks[i].owns_weight) free(st->tracks[i].weight);
    }
    dmx__big_free(st->emit_buf);
    dmx__big_free(st->in);
    free(st);
}

/* Whole-buffer separation is a stream fed in one go. */
typedef struct copy_out {
    float *const *out;
    int64_t pos;
    int K;
} copy_out;

static dmx_status copy_write(void *user, const float *const *stems, int64_t frames) {
    copy_out *c = user;
    for (int k = 0; k < c->K; k++)
        memcpy(c->out[k] + c->pos, stems[k], sizeof(float) * (size_t)frames);
    c->pos += frames;
    return DMX_OK;
}

dmx_status dmx_separate(dmx_session *s, const float *const *in, int64_t n, float *const *out,
                        const dmx_separate_opts *opts) {
    if (!s || !in || !out || n < 1)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_separate: NULL argument or empty input");
    copy_out c = {out, 0, s->model->n_sources * s->model->channels};
    dmx_stream *st = NULL;
    dmx_status e = dmx_stream_new(s, opts, copy_write, &c, &st);
    if (e == DMX_OK && st->o.normalize) e = dmx_stream_analyze(st, in, n);
    if (e == DMX_OK) e = dmx_stream_start(st, n);
    if (e == DMX_OK) e = dmx_stream_feed(st, in, n);
    if (e == DMX_OK) e = dmx_stream_finish(st);
    dmx_stream_free(st);
    return e;
}
