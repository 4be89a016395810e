/*
 * test_threads.c - issue 12 bug 13: the engine's threads.
 *   - dmx_threads_divide, the one rule dividing the CPUs between jobs that
 *     run at once (CLI -j x --threads, the service's workers): never more
 *     threads in all than CPUs;
 *   - a run never changes the process's BLAS thread count (OpenBLAS 0.3.21's
 *     is process-wide; a run that set it changed every other run's);
 *   - a job's result does not depend on another job running beside it;
 *   - a song's evaluations run one by one as threads free up and finish in
 *     any order: 2 and 3 threads fed in small blocks (feeds returning while
 *     evaluations run, feeds waiting when the input window is full) give
 *     one thread's bits, with overlap 0.25 (results summed as they finish)
 *     and 0.6 (summed in order), with shifts;
 *   - fed in blocks, write and progress run on the feeding thread, progress
 *     once per evaluation;
 *   - a stream freed with evaluations running, one cancelled by its
 *     progress callback and one whose write fails (the errors stick) end
 *     cleanly.
 */
#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "demix/demix.h"
#include "testutil.h"

static void test_divide(void) {
    dmx_thread_plan p;
    p = dmx_threads_divide(8, 2, 0);
    CHECK(p.jobs == 2 && p.threads_per_job == 4);
    p = dmx_threads_divide(8, 3, 0);
    CHECK(p.jobs == 3 && p.threads_per_job == 2);
    p = dmx_threads_divide(8, 1, 4); /* --threads 4 */
    CHECK(p.jobs == 1 && p.threads_per_job == 4);
    p = dmx_threads_divide(2, 4, 0); /* -j 4 on 2 CPUs: 2 at once */
    CHECK(p.jobs == 2 && p.threads_per_job == 1);
    p = dmx_threads_divide(4, 2, 16); /* --threads beyond the CPUs */
    CHECK(p.jobs == 2 && p.threads_per_job == 2);
    p = dmx_threads_divide(1, 5, 0);
    CHECK(p.jobs == 1 && p.threads_per_job == 1);
    p = dmx_threads_divide(0, 0, 0); /* nonsense in, one job of one thread out */
    CHECK(p.jobs == 1 && p.threads_per_job == 1);
    /* the invariant, everywhere */
    for (int cpus = 1; cpus <= 64; cpus++)
        for (int jobs = -1; jobs <= 70; jobs++)
            for (int threads = -1; threads <= 70; threads++) {
                p = dmx_threads_divide(cpus, jobs, threads);
                int total = threads > 0 && threads < cpus ? threads : cpus;
                int want = jobs < 1 ? 1 : jobs;
                if (!(p.jobs >= 1 && p.threads_per_job >= 1 && p.jobs * p.threads_per_job <= total &&
                      p.jobs == (want < total ? want : total) && p.threads_per_job == total / p.jobs)) {
                    CHECK_MSG(0, "divide(%d, %d, %d) = %d x %d", cpus, jobs, threads, p.jobs,
                              p.threads_per_job);
                    return;
                }
            }
    CHECK(dmx_cpu_count() >= 1);
}

typedef struct run {
    dmx_session *s;
    const npy_array *mix;
    int threads, shifts;
    float *out;
    dmx_status st;
} run;

static void *run_main(void *arg) {
    run *r = arg;
    int64_t n = r->mix->shape[1];
    const float *in[2] = {r->mix->data, r->mix->data + n};
    float *outp[8];
    for (int k = 0; k < 8; k++) outp[k] = r->out + (size_t)k * n;
    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.n_threads = r->threads;
    o.shifts = r->shifts;
    o.seed = 7;
    r->st = dmx_separate(r->s, in, n, outp, &o);
    return NULL;
}

typedef struct sink {
    float *out; /* (8, n) */
    int64_t n, pos;
    pthread_t caller; /* the thread feeding the stream */
    int elsewhere;    /* a callback ran on another thread */
    int64_t progress, done, total; /* progress calls, the last call's counts */
    int64_t fail_after;            /* > 0: writes past this many frames fail */
} sink;

static dmx_status sink_write(void *user, const float *const *stems, int64_t frames) {
    sink *k = user;
    if (!pthread_equal(pthread_self(), k->caller)) k->elsewhere = 1;
    if (k->pos + frames > k->n) return DMX_ERR_INTERNAL;
    if (k->fail_after && k->pos >= k->fail_after) return DMX_ERR_IO;
    for (int c = 0; c < 8; c++)
        memcpy(k->out + (size_t)c * k->n + k->pos, stems[c], sizeof(float) * (size_t)frames);
    k->pos += frames;
    return DMX_OK;
}

static int sink_progress(void *user, int64_t done, int64_t total) {
    sink *k = user;
    if (!pthread_equal(pthread_self(), k->caller)) k->elsewhere = 1;
    k->progress++;
    k->done = done, k->total = total;
    return 0;
}

/* The whole song through the stream API, fed `block` frames at a time;
 * the write and progress callbacks must run on this thread, progress once
 * per evaluation. */
static dmx_status stream_run(dmx_session *s, const npy_array *mix, const dmx_separate_opts *o,
                             int64_t block, float *out) {
    const int64_t n = mix->shape[1];
    sink k = {out, n, 0, pthread_self(), 0, 0, 0, 0, 0};
    dmx_separate_opts oc = *o;
    oc.progress = sink_progress;
    oc.progress_user = &k;
    dmx_stream *st = NULL;
    dmx_status e = dmx_stream_new(s, &oc, sink_write, &k, &st);
    const float *in[2];
    for (int64_t p = 0; e == DMX_OK && p < n; p += block) {
        in[0] = mix->data + p, in[1] = mix->data + n + p;
        e = dmx_stream_analyze(st, in, p + block < n ? block : n - p);
    }
    if (e == DMX_OK) e = dmx_stream_start(st, n);
    for (int64_t p = 0; e == DMX_OK && p < n; p += block) {
        in[0] = mix->data + p, in[1] = mix->data + n + p;
        e = dmx_stream_feed(st, in, p + block < n ? block : n - p);
    }
    if (e == DMX_OK) e = dmx_stream_finish(st);
    dmx_stream_free(st);
    CHECK_MSG(!k.elsewhere, "a stream callback ran off the feeding thread");
    CHECK_MSG(e != DMX_OK || (k.progress == k.total && k.done == k.total && k.total >= 1),
              "progress: %lld calls, last %lld of %lld", (long long)k.progress,
              (long long)k.done, (long long)k.total);
    if (e == DMX_OK && k.pos != n) e = DMX_ERR_INTERNAL;
    return e;
}

/* A new stream into sink k, started and fed the whole song in blocks of
 * 0.2 s, then finished: the first error, or DMX_OK. The stream is left
 * in *st (to feed again, then free). */
static dmx_status feed_all(dmx_session *s, const dmx_separate_opts *o, sink *k,
                           const npy_array *mix, dmx_stream **st) {
    const int64_t n = mix->shape[1];
    REQUIRE(dmx_stream_new(s, o, sink_write, k, st) == DMX_OK);
    REQUIRE(dmx_stream_start(*st, n) == DMX_OK);
    dmx_status e = DMX_OK;
    const float *in[2];
    for (int64_t p = 0; e == DMX_OK && p < n; p += 8820) {
        in[0] = mix->data + p, in[1] = mix->data + n + p;
        e = dmx_stream_feed(*st, in, p + 8820 < n ? 8820 : n - p);
    }
    return e == DMX_OK ? dmx_stream_finish(*st) : e;
}

/* Stops the run at its first result. */
static int cancel_first(void *user, int64_t done, int64_t total) {
    (void)user, (void)total;
    return done >= 1;
}

/* Each case: one thread at once, then `fed` threads fed in blocks of 0.2 s
 * (test_api compares 2 threads at once). Segments of 4 s: 3 evaluations of the 7.8 s song
 * per shift at overlap 0.25, 5 at overlap 0.6; 8 of the 24 s song (the 12
 * s one twice), whose input fills the stream's window while evaluations
 * run, so feeds wait for them. Then a stream freed halfway with
 * evaluations running, one cancelled by its progress callback and one
 * whose write fails. */
static void test_order(dmx_session *s) {
    npy_array short_song, mix12;
    REQUIRE(npy_load(golden_path("inputs/mix_7s8.npy"), &short_song) == 0);
    REQUIRE(npy_load(golden_path("inputs/mix_12s.npy"), &mix12) == 0);
    npy_array long_song = mix12; /* twice as long: the same shape header */
    const int64_t n12 = mix12.shape[1];
    long_song.shape[1] = 2 * n12;
    long_song.numel = 4 * (size_t)n12;
    long_song.data = malloc(sizeof(float) * 4 * (size_t)n12);
    REQUIRE(long_song.data);
    for (int c = 0; c < 2; c++)
        for (int r = 0; r < 2; r++)
            memcpy(long_song.data + (size_t)c * 2 * n12 + (size_t)r * n12,
                   mix12.data + (size_t)c * n12, sizeof(float) * (size_t)n12);
    const struct {
        const npy_array *mix;
        double segment, overlap;
        int shifts, fed;
    } cases[] = {{&long_song, 4.0, 0.25, 0, 2}, {&short_song, 4.0, 0.25, 2, 3}, {&short_song, 4.0, 0.6, 0, 3}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const npy_array *mix = cases[c].mix;
        const int64_t n = mix->shape[1];
        const size_t nf = 8 * (size_t)n;
        float *ref = malloc(sizeof(float) * nf), *got = malloc(sizeof(float) * nf);
        REQUIRE(ref && got);
        dmx_separate_opts o;
        dmx_separate_opts_init(&o);
        o.segment = cases[c].segment;
        o.overlap = cases[c].overlap;
        o.shifts = cases[c].shifts;
        o.seed = 3;
        o.n_threads = 1;
        const float *in[2] = {mix->data, mix->data + n};
        float *outp[8];
        for (int k = 0; k < 8; k++) outp[k] = ref + (size_t)k * n;
        CHECK_MSG(dmx_separate(s, in, n, outp, &o) == DMX_OK, "%s", dmx_last_error());
        o.n_threads = cases[c].fed;
        memset(got, 0, sizeof(float) * nf);
        CHECK_MSG(stream_run(s, mix, &o, 8820, got) == DMX_OK, "%s", dmx_last_error());
        CHECK_MSG(!memcmp(got, ref, sizeof(float) * nf),
                  "overlap %.2f shifts %d: %d threads fed in blocks differ from one", o.overlap,
                  o.shifts, o.n_threads);
        free(ref);
        free(got);
    }

    /* freed halfway (no finish) with evaluations running; then cancelled
     * by the progress callback at the first result */
    const int64_t n = long_song.shape[1];
    float *out = malloc(sizeof(float) * 8 * (size_t)n);
    REQUIRE(out);
    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.segment = 4.0;
    o.n_threads = 2;
    o.normalize = 0;
    sink k = {out, n, 0, pthread_self(), 0, 0, 0, 0, 0};
    dmx_stream *st = NULL;
    REQUIRE(dmx_stream_new(s, &o, sink_write, &k, &st) == DMX_OK);
    REQUIRE(dmx_stream_start(st, n) == DMX_OK);
    const float *in[2] = {long_song.data, long_song.data + n};
    CHECK(dmx_stream_feed(st, in, n / 2) == DMX_OK);
    dmx_stream_free(st);
    o.progress = cancel_first;
    k.pos = 0;
    dmx_status e = feed_all(s, &o, &k, &long_song, &st);
    CHECK_MSG(e == DMX_ERR_CANCELLED, "a stream cancelled at its first result returned %d", e);
    CHECK(dmx_stream_feed(st, in, 1) == DMX_ERR_CANCELLED); /* the error sticks */
    dmx_stream_free(st);
    /* a write that fails once the first stride is out: evaluations are
     * dispatched before each emission, so one has just started when the
     * error comes back; the stream returns the callback's status */
    o.progress = NULL;
    k.pos = 0;
    k.fail_after = 1;
    e = feed_all(s, &o, &k, &long_song, &st);
    CHECK_MSG(e == DMX_ERR_IO, "a stream whose write failed returned %d", e);
    CHECK(k.pos > 0 && k.pos < n);
    CHECK(dmx_stream_feed(st, in, 1) == DMX_ERR_IO); /* the error sticks */
    dmx_stream_free(st); /* (the session serves the runs after this) */
    free(out);
    npy_free(&short_song);
    npy_free(&mix12);
    free(long_song.data);
}

int main(void) {
    test_divide();

    dmx_model *m = NULL;
    REQUIRE(dmx_model_load(golden_path("models/tiny4s.th"), &m) == DMX_OK);
    REQUIRE(dmx_model_n_sources(m) * dmx_model_channels(m) == 8);
    npy_array short_mix, long_mix;
    REQUIRE(npy_load(golden_path("inputs/mix_3s.npy"), &short_mix) == 0);
    REQUIRE(npy_load(golden_path("inputs/mix_12s.npy"), &long_mix) == 0);
    dmx_session *sa = NULL, *sb = NULL;
    REQUIRE(dmx_session_new(m, &sa) == DMX_OK && dmx_session_new(m, &sb) == DMX_OK);
    size_t na = 8 * (size_t)short_mix.shape[1], nb = 8 * (size_t)long_mix.shape[1];
    /* A: one evaluation (3 s), 2 threads; B: many evaluations with shifts */
    run a = {sa, &short_mix, 2, 0, malloc(sizeof(float) * na), DMX_OK};
    run b = {sb, &long_mix, 2, 1, malloc(sizeof(float) * nb), DMX_OK};
    float *a_alone = malloc(sizeof(float) * na), *b_alone = malloc(sizeof(float) * nb);
    REQUIRE(a.out && b.out && a_alone && b_alone);

    /* A run leaves the process's BLAS threads at one, set once: a run of
     * a single evaluation used to set them to its n_threads. */
    run_main(&a);
    CHECK_MSG(a.st == DMX_OK, "%s", dmx_last_error());
    CHECK_MSG(openblas_get_num_threads() == 1, "a run left %d BLAS threads", openblas_get_num_threads());
    memcpy(a_alone, a.out, sizeof(float) * na);
    run_main(&b);
    CHECK_MSG(b.st == DMX_OK, "%s", dmx_last_error());
    CHECK(openblas_get_num_threads() == 1);
    memcpy(b_alone, b.out, sizeof(float) * nb);

    test_order(sa);

    /* Side by side, a few times: each result is bit for bit its result alone. */
    for (int round = 0; round < 2; round++) {
        pthread_t ta, tb;
        REQUIRE(pthread_create(&tb, NULL, run_main, &b) == 0);
        REQUIRE(pthread_create(&ta, NULL, run_main, &a) == 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        CHECK(a.st == DMX_OK && b.st == DMX_OK);
        CHECK_MSG(memcmp(a.out, a_alone, sizeof(float) * na) == 0, "round %d: A changed beside B", round);
        CHECK_MSG(memcmp(b.out, b_alone, sizeof(float) * nb) == 0, "round %d: B changed beside A", round);
    }
    free(a.out);
    free(b.out);
    free(a_alone);
    free(b_alone);
    dmx_session_free(sa);
    dmx_session_free(sb);
    npy_free(&short_mix);
    npy_free(&long_mix);
    dmx_model_free(m);
    return dmx_test_done("test_threads");
}
