/*
 * test_api.c - the public engine API (demix.h) on the tiny fixture models:
 * model queries, argument validation, progress and cancellation, seeded
 * shifts, and one model shared by two threads giving identical results.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "demix/demix.h"
#include "testutil.h"

static dmx_model *model;
static npy_array mix; /* (2, 132300) */

typedef struct result {
    float *buf;
    float *ptr[64];
    dmx_status st;
} result;

static void alloc_result(result *r, int64_t n) {
    int k = dmx_model_n_sources(model) * dmx_model_channels(model);
    r->buf = calloc((size_t)k * n, sizeof(float));
    for (int i = 0; i < k; i++) r->ptr[i] = r->buf + (size_t)i * n;
}

static dmx_status run(const dmx_separate_opts *o, int64_t n, result *r) {
    const float *in[2] = {mix.data, mix.data + mix.shape[1]};
    dmx_session *s = NULL;
    REQUIRE(dmx_session_new(model, &s) == DMX_OK);
    alloc_result(r, n);
    r->st = dmx_separate(s, in, n, r->ptr, o);
    dmx_session_free(s);
    return r->st;
}

static int64_t last_done, last_total, calls;
static int progress(void *user, int64_t done, int64_t total) {
    CHECK(done == last_done + 1);
    last_done = done;
    last_total = total;
    calls++;
    return user && done >= 2; /* cancel after 2 evaluations when asked */
}

static void *thread_main(void *arg) {
    result *r = arg;
    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.n_threads = 1;
    run(&o, mix.shape[1], r);
    return NULL;
}

int main(void) {
    REQUIRE(npy_load(golden_path("inputs/mix_3s.npy"), &mix) == 0);
    const int64_t n = mix.shape[1];

    /* loading errors */
    dmx_model *bad = (dmx_model *)1;
    CHECK(dmx_model_load("/nonexistent/x.th", &bad) == DMX_ERR_NOT_FOUND && bad == NULL);
    CHECK(strlen(dmx_last_error()) > 0);
    CHECK(dmx_model_load(NULL, &bad) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_model_load(golden_path("models/tiny4s.txt"), &bad) == DMX_ERR_CORRUPT);
    dmx_model_free(NULL);
    dmx_session_free(NULL);

    REQUIRE(dmx_model_load(golden_path("models/tiny4s.th"), &model) == DMX_OK);
    CHECK(dmx_model_n_sources(model) == 4);
    CHECK(!strcmp(dmx_model_source_name(model, 0), "drums"));
    CHECK(!strcmp(dmx_model_source_name(model, 3), "vocals"));
    CHECK(dmx_model_source_name(model, 4) == NULL && dmx_model_source_name(model, -1) == NULL);
    CHECK(dmx_model_source_index(model, "bass") == 1 && dmx_model_source_index(model, "piano") == -1);
    CHECK(dmx_model_samplerate(model) == 44100 && dmx_model_channels(model) == 2);
    CHECK(dmx_model_segment(model) > 7.79 && dmx_model_segment(model) < 7.81);
    CHECK(dmx_model_n_members(model) == 1 && dmx_model_n_params(model) > 100000);

    dmx_separate_opts o;
    result r;
    /* invalid options */
    dmx_separate_opts_init(&o);
    o.overlap = 1.0;
    CHECK(run(&o, n, &r) == DMX_ERR_INVALID_ARG);
    free(r.buf);
    dmx_separate_opts_init(&o);
    o.segment = 20.0;
    CHECK(run(&o, n, &r) == DMX_ERR_INVALID_ARG);
    free(r.buf);
    dmx_separate_opts_init(&o);
    o.transition_power = 0.5;
    CHECK(run(&o, n, &r) == DMX_ERR_INVALID_ARG);
    free(r.buf);

    /* progress: 1 evaluation for 3 s without shifts; with 2 shifts, 2 */
    dmx_separate_opts_init(&o);
    o.progress = progress;
    last_done = 0, calls = 0;
    CHECK(run(&o, n, &r) == DMX_OK);
    CHECK(calls == 1 && last_total == 1);
    free(r.buf);
    o.shifts = 2;
    last_done = 0, calls = 0;
    CHECK(run(&o, n, &r) == DMX_OK);
    CHECK(calls == 2 && last_total == 2);
    result r2, r3;
    /* same seed: bit-identical; another seed: different */
    last_done = 0;
    CHECK(run(&o, n, &r2) == DMX_OK);
    CHECK(memcmp(r.buf, r2.buf, sizeof(float) * 8 * n) == 0);
    o.seed = 1234;
    last_done = 0;
    CHECK(run(&o, n, &r3) == DMX_OK);
    CHECK(memcmp(r.buf, r3.buf, sizeof(float) * 8 * n) != 0);
    free(r.buf), free(r2.buf), free(r3.buf);

    /* cancellation through the progress callback and through the flag */
    dmx_separate_opts_init(&o);
    o.shifts = 3;
    o.progress = progress;
    o.progress_user = (void *)1;
    last_done = 0;
    CHECK(run(&o, n, &r) == DMX_ERR_CANCELLED);
    free(r.buf);
    atomic_int flag = 1;
    dmx_separate_opts_init(&o);
    o.cancel = &flag;
    CHECK(run(&o, n, &r) == DMX_ERR_CANCELLED);
    free(r.buf);

    /* no split: fine up to the segment, an error beyond it */
    dmx_separate_opts_init(&o);
    o.split = 0;
    CHECK(run(&o, n, &r) == DMX_OK);
    free(r.buf);

    /* one model, two threads at once: same result as one thread alone */
    result ta, tb, solo;
    pthread_t a, b;
    pthread_create(&a, NULL, thread_main, &ta);
    pthread_create(&b, NULL, thread_main, &tb);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    thread_main(&solo);
    CHECK(ta.st == DMX_OK && tb.st == DMX_OK && solo.st == DMX_OK);
    CHECK(memcmp(ta.buf, solo.buf, sizeof(float) * 8 * n) == 0);
    CHECK(memcmp(tb.buf, solo.buf, sizeof(float) * 8 * n) == 0);
    free(ta.buf), free(tb.buf), free(solo.buf);

    /* segments evaluated in parallel: bit-identical to one thread */
    {
        npy_array m12;
        REQUIRE(npy_load(golden_path("inputs/mix_12s.npy"), &m12) == 0);
        npy_array keep = mix;
        mix = m12;
        result one, two;
        dmx_separate_opts_init(&o);
        o.n_threads = 1;
        CHECK(run(&o, m12.shape[1], &one) == DMX_OK);
        o.n_threads = 2;
        CHECK(run(&o, m12.shape[1], &two) == DMX_OK);
        CHECK(memcmp(one.buf, two.buf, sizeof(float) * 8 * m12.shape[1]) == 0);
        free(one.buf), free(two.buf);
        mix = keep;
        npy_free(&m12);
    }

    dmx_model_free(model);
    npy_free(&mix);
    return dmx_test_done("test_api");
}
