/*
 * test_roformer_api.c - a RoFormer through the public API (demix.h):
 * dmx_model_load_config and dmx_model_load(MSST yaml) load the golden
 * bs_roformer_tiny with the config's instruments as sources; dmx_separate
 * (a dmx_stream inside) runs MSST's chunking and matches MSST's demix()
 * on mix_3s, with the Demucs options (shifts, normalize, overlap) ignored;
 * progress ends at total = frames; the stream with the length unknown
 * (dmx_model_single_pass) gives the same bits, a Demucs model refuses it;
 * a set cancel flag cancels; a missing checkpoint is an error with no model.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demix/demix.h"
#include "testutil.h"

static int64_t last_done, last_total, calls;
static int on_progress(void *user, int64_t done, int64_t total) {
    (void)user;
    last_done = done;
    last_total = total;
    calls++;
    return 0;
}

/* writes (1 stem, 2 channels) into a planar buffer of T frames per channel */
static dmx_status stream_sink(void *user, const float *const *stems, int64_t frames) {
    struct {
        float *o;
        int64_t T, pos;
    } *k = user;
    if (k->pos + frames > k->T) return DMX_ERR_INTERNAL;
    memcpy(k->o + k->pos, stems[0], sizeof(float) * (size_t)frames);
    memcpy(k->o + k->T + k->pos, stems[1], sizeof(float) * (size_t)frames);
    k->pos += frames;
    return DMX_OK;
}

int main(void) {
    char yaml[1024], ckpt[1024];
    snprintf(yaml, sizeof yaml, "%s", golden_path("roformer/models/bs_roformer_tiny.yaml"));
    snprintf(ckpt, sizeof ckpt, "%s", golden_path("roformer/models/bs_roformer_tiny.ckpt"));

    dmx_model *m = NULL, *m2 = NULL, *bad = (dmx_model *)1;
    REQUIRE(dmx_model_load_config(yaml, ckpt, &m) == DMX_OK);
    CHECK(dmx_model_n_sources(m) == 1);
    CHECK(dmx_model_source_name(m, 0) && !strcmp(dmx_model_source_name(m, 0), "vocals"));
    CHECK(dmx_model_source_index(m, "vocals") == 0);
    CHECK(dmx_model_samplerate(m) == 44100);
    CHECK(dmx_model_channels(m) == 2);
    CHECK(dmx_model_n_members(m) == 1);
    CHECK(dmx_model_n_params(m) > 0);
    /* the registry's rule: NAME.yaml with a model: section + NAME.ckpt */
    REQUIRE(dmx_model_load(yaml, &m2) == DMX_OK);
    CHECK(dmx_model_n_sources(m2) == 1 && !strcmp(dmx_model_source_name(m2, 0), "vocals"));
    CHECK(dmx_model_n_params(m2) == dmx_model_n_params(m));
    dmx_model_free(m2);
    CHECK(dmx_model_load_config(yaml, "/nonexistent/x.ckpt", &bad) != DMX_OK && bad == NULL);
    CHECK(strstr(dmx_last_error(), "x.ckpt") != NULL);

    npy_array mix, ref;
    REQUIRE(npy_load(golden_path("inputs/mix_3s.npy"), &mix) == 0);
    REQUIRE(npy_load(golden_path("roformer/outputs/bs_roformer_tiny_demix_3s.npy"), &ref) == 0);
    int64_t T = mix.shape[1];
    REQUIRE(ref.numel == (size_t)(2 * T));
    const float *in[2] = {mix.data, mix.data + T};
    float *out = malloc(sizeof(float) * 2 * T);
    float *outp[2] = {out, out + T};

    dmx_session *s = NULL;
    REQUIRE(dmx_session_new(m, &s) == DMX_OK);
    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.shifts = 2;      /* Demucs-only options: ignored for a RoFormer */
    o.overlap = 0.5;
    o.normalize = 1;
    o.n_threads = 2;
    o.progress = on_progress;
    REQUIRE(dmx_separate(s, in, T, outp, &o) == DMX_OK);
    double e = rel_max_err(out, ref.data, ref.numel, NULL, NULL);
    CHECK_MSG(e <= 1e-4, "relative error %g", e);
    CHECK(calls > 0 && last_done == T && last_total == T);

    /* One pass: a RoFormer stream started with the length unknown (the
     * pipeline's form) gives the same bits; progress uses the expected
     * length until the end, never past what was written. */
    CHECK(dmx_model_single_pass(m) == 1);
    float *out2 = malloc(sizeof(float) * 2 * T);
    struct {
        float *o;
        int64_t T, pos;
    } sk = {out2, T, 0};
    dmx_stream *st = NULL;
    o.progress = on_progress;
    REQUIRE(dmx_stream_new(s, &o, stream_sink, &sk, &st) == DMX_OK);
    CHECK(dmx_stream_expect(st, T / 2) == DMX_OK); /* a short hint */
    REQUIRE(dmx_stream_start(st, DMX_FRAMES_UNKNOWN) == DMX_OK);
    calls = 0;
    for (int64_t i = 0; i < T; i += 10000) {
        int64_t n = T - i < 10000 ? T - i : 10000;
        const float *pin[2] = {in[0] + i, in[1] + i};
        REQUIRE(dmx_stream_feed(st, pin, n) == DMX_OK);
        if (calls) CHECK(last_done <= last_total && last_total >= T / 2);
    }
    REQUIRE(dmx_stream_finish(st) == DMX_OK);
    dmx_stream_free(st);
    CHECK(sk.pos == T && last_done == T && last_total == T);
    CHECK_MSG(!memcmp(out, out2, sizeof(float) * 2 * T), "unknown length: different output");
    free(out2);
    /* a Demucs model needs its length: refused, and expect is a no-op */
    dmx_model *dm = NULL;
    REQUIRE(dmx_model_load(golden_path("models/tiny4s.th"), &dm) == DMX_OK);
    CHECK(dmx_model_single_pass(dm) == 0);
    dmx_session *ds = NULL;
    REQUIRE(dmx_session_new(dm, &ds) == DMX_OK);
    dmx_separate_opts od;
    dmx_separate_opts_init(&od);
    od.normalize = 0;
    REQUIRE(dmx_stream_new(ds, &od, stream_sink, &sk, &st) == DMX_OK);
    CHECK(dmx_stream_expect(st, 12345) == DMX_OK);
    CHECK(dmx_stream_start(st, DMX_FRAMES_UNKNOWN) == DMX_ERR_INVALID_ARG);
    CHECK(strstr(dmx_last_error(), "needs the song's length") != NULL);
    dmx_stream_free(st);
    dmx_session_free(ds);
    dmx_model_free(dm);

    atomic_int cancel = 1;
    o.cancel = &cancel;
    CHECK(dmx_separate(s, in, T, outp, &o) == DMX_ERR_CANCELLED);

    dmx_session_free(s);
    free(out);
    npy_free(&mix);
    npy_free(&ref);
    dmx_model_free(m);
    return dmx_test_done("test_roformer_api");
}
