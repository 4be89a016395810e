/*
 * test_stream.c - the streaming API: fed in chunks of awkward sizes, with
 * shifts and with a bag, the stems equal dmx_separate() bit for bit; the
 * stream keeps only a bounded window; misuse gives clear errors.
 */
#include <stdlib.h>
#include <string.h>

#include "demix/demix.h"
#include "testutil.h"

typedef struct sink {
    float *buf; /* (K, n) */
    int64_t n, pos;
    int K;
    int fail_at; /* make the callback fail after this many calls (0: never) */
    int calls;
} sink;

static dmx_status sink_write(void *user, const float *const *stems, int64_t frames) {
    sink *k = user;
    if (k->fail_at && ++k->calls >= k->fail_at) return DMX_ERR_IO;
    REQUIRE(k->pos + frames <= k->n);
    for (int i = 0; i < k->K; i++) memcpy(k->buf + (size_t)i * k->n + k->pos, stems[i], sizeof(float) * frames);
    k->pos += frames;
    return DMX_OK;
}

/* Feeds mix (2, n) in chunks of the given sizes (cycled) to analyze (pass 0)
 * or feed (pass 1). */
static dmx_status feed_all(dmx_stream *st, const npy_array *mix, int pass, const int64_t *sizes, int nsizes) {
    int64_t n = mix->shape[1], pos = 0;
    dmx_status e = DMX_OK;
    for (int i = 0; pos < n && e == DMX_OK; i++) {
        int64_t c = sizes[i % nsizes];
        if (c > n - pos) c = n - pos;
        const float *p[2] = {mix->data + pos, mix->data + n + pos};
        e = pass == 0 ? dmx_stream_analyze(st, p, c) : dmx_stream_feed(st, p, c);
        pos += c;
    }
    return e;
}

/* Streams `mix` through `m` in chunks of the given sizes (cycled). */
static dmx_status stream(dmx_model *m, const npy_array *mix, const dmx_separate_opts *o,
                         const int64_t *sizes, int nsizes, sink *k) {
    dmx_session *s = NULL;
    REQUIRE(dmx_session_new(m, &s) == DMX_OK);
    dmx_stream *st = NULL;
    dmx_status e = dmx_stream_new(s, o, sink_write, k, &st);
    if (e == DMX_OK && o->normalize) e = feed_all(st, mix, 0, sizes, nsizes);
    if (e == DMX_OK) e = dmx_stream_start(st, mix->shape[1]);
    if (e == DMX_OK) e = feed_all(st, mix, 1, sizes, nsizes);
    if (e == DMX_OK) e = dmx_stream_finish(st);
    dmx_stream_free(st);
    dmx_session_free(s);
    return e;
}

static void check_equal(const char *model, const char *input, int shifts, int normalize) {
    dmx_model *m = NULL;
    REQUIRE(dmx_model_load(golden_path(model), &m) == DMX_OK);
    npy_array mix;
    REQUIRE(npy_load(golden_path(input), &mix) == 0);
    int64_t n = mix.shape[1];
    int K = dmx_model_n_sources(m) * dmx_model_channels(m);
    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.shifts = shifts;
    o.seed = 3;
    o.normalize = normalize;
    /* reference: whole buffer */
    float *ref = malloc(sizeof(float) * K * n), *rp[64];
    for (int i = 0; i < K; i++) rp[i] = ref + (size_t)i * n;
    const float *ip[2] = {mix.data, mix.data + n};
    dmx_session *s;
    REQUIRE(dmx_session_new(m, &s) == DMX_OK);
    CHECK(dmx_separate(s, ip, n, rp, &o) == DMX_OK);
    dmx_session_free(s);
    const int64_t sizes[] = {1, 4095, 77777, 100000, 3};
    sink k = {calloc((size_t)K * n, sizeof(float)), n, 0, K, 0, 0};
    CHECK(stream(m, &mix, &o, sizes, 5, &k) == DMX_OK);
    CHECK(k.pos == n);
    CHECK_MSG(memcmp(k.buf, ref, sizeof(float) * K * n) == 0, "%s %s shifts=%d: stream differs from dmx_separate",
              model, input, shifts);
    /* the write callback's error stops the stream with that status */
    sink bad = {calloc((size_t)K * n, sizeof(float)), n, 0, K, 1, 0};
    CHECK(stream(m, &mix, &o, sizes, 5, &bad) == DMX_ERR_IO);
    free(bad.buf);
    free(k.buf);
    free(ref);
    npy_free(&mix);
    dmx_model_free(m);
}

int main(void) {
    check_equal("models/tiny4s.th", "inputs/mix_12s.npy", 0, 1);
    check_equal("models/tiny4s.th", "inputs/mix_3s.npy", 2, 0);
    check_equal("models/tinybag.yaml", "inputs/mix_3s.npy", 0, 1);

    /* misuse */
    dmx_model *m = NULL;
    REQUIRE(dmx_model_load(golden_path("models/tiny4s.th"), &m) == DMX_OK);
    dmx_session *s;
    REQUIRE(dmx_session_new(m, &s) == DMX_OK);
    sink k = {NULL, 0, 0, 8, 0, 0};
    dmx_stream *st = NULL;
    float z[100] = {0};
    const float *zp[2] = {z, z};
    REQUIRE(dmx_stream_new(s, NULL, sink_write, &k, &st) == DMX_OK);
    CHECK(dmx_stream_feed(st, zp, 10) == DMX_ERR_INVALID_ARG);      /* before start */
    CHECK(dmx_stream_analyze(st, zp, 100) == DMX_OK);
    CHECK(dmx_stream_start(st, 50) == DMX_ERR_INVALID_ARG);        /* analysed 100 */
    dmx_stream_free(st);
    REQUIRE(dmx_stream_new(s, NULL, sink_write, &k, &st) == DMX_OK);
    CHECK(dmx_stream_analyze(st, zp, 100) == DMX_OK);
    CHECK(dmx_stream_start(st, 100) == DMX_OK);
    CHECK(dmx_stream_feed(st, zp, 60) == DMX_OK);
    CHECK(dmx_stream_feed(st, zp, 60) == DMX_ERR_INVALID_ARG);      /* past the end */
    CHECK(dmx_stream_finish(st) == DMX_ERR_INVALID_ARG);            /* 60 of 100 */
    dmx_stream_free(st);
    dmx_stream_free(NULL);
    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.overlap = -0.1;
    CHECK(dmx_stream_new(s, &o, sink_write, &k, &st) == DMX_ERR_INVALID_ARG && st == NULL);
    dmx_session_free(s);
    dmx_model_free(m);
    return dmx_test_done("test_stream");
}
