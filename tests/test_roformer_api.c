/*
 * test_roformer_api.c - a RoFormer through the public API (demix.h):
 * dmx_model_load_config and dmx_model_load(MSST yaml) load the golden
 * bs_roformer_tiny with the config's instruments as sources; dmx_separate
 * (a dmx_stream inside) runs MSST's chunking and matches MSST's demix()
 * on mix_3s, with the Demucs options (shifts, normalize, overlap) ignored;
 * progress ends at total = frames; a set cancel flag cancels; a missing
 * checkpoint is an error with no model.
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
