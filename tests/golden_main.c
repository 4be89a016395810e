/*
 * golden_main.c - parity with upstream PyTorch Demucs on the fixtures in
 * ../shared/golden (see its README). One executable, one ctest per case:
 *   golden <case>    compares our output for <case> with outputs/<case>.npy
 * and prints the measured max|ours - ref| / max|ref| (must be <= 1e-4).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "ckpt.h"
#include "demix/demix.h"
#include "net.h"
#include "testutil.h"

#define TOL 1e-4

static dmx_model *load(const char *rel) {
    dmx_model *m = NULL;
    dmx_status st = dmx_model_load(golden_path(rel), &m);
    if (st != DMX_OK) {
        fprintf(stderr, "cannot load %s: %s: %s\n", rel, dmx_status_str(st), dmx_last_error());
        exit(1);
    }
    return m;
}

static void compare(const char *name, const float *ours, size_t n) {
    char rel[256];
    snprintf(rel, sizeof rel, "outputs/%s.npy", name);
    npy_array ref;
    REQUIRE(npy_load(golden_path(rel), &ref) == 0);
    REQUIRE(ref.numel == n);
    double mad, mref;
    double r = rel_max_err(ours, ref.data, n, &mad, &mref);
    printf("%-34s max|ours-ref| = %.3e  max|ref| = %.3e  ratio = %.3e (tolerance %.0e)\n", name, mad,
           mref, r, TOL);
    CHECK_MSG(r <= TOL, "%s: ratio %.3e exceeds %.0e", name, r, TOL);
    npy_free(&ref);
}

/* model(mix[None]) for one model: the network's own forward. */
static void case_forward(const char *model_rel, const char *input, const char *name) {
    dmx_model *m = load(model_rel);
    npy_array mix;
    char rel[256];
    snprintf(rel, sizeof rel, "inputs/%s.npy", input);
    REQUIRE(npy_load(golden_path(rel), &mix) == 0);
    int len = (int)mix.shape[1];
    const dmx__net *net = m->members[0];
    float *out = malloc(sizeof(float) * (size_t)net->desc.n_sources * net->desc.audio_channels * len);
    dmx__arena ar;
    dmx__arena_init(&ar);
    dmx_status st = dmx__net_forward(net, &ar, mix.data, len, out, NULL, NULL);
    CHECK_MSG(st == DMX_OK, "forward: %s", dmx_last_error());
    compare(name, out, (size_t)net->desc.n_sources * net->desc.audio_channels * len);
    dmx__arena_free(&ar);
    free(out);
    npy_free(&mix);
    dmx_model_free(m);
}

/* apply_model(...) (normalize=0) or the separator pipeline (normalize=1). */
static void case_apply(const char *model_rel, const char *input, const char *name, int normalize) {
    dmx_model *m = load(model_rel);
    npy_array mix;
    char rel[256];
    snprintf(rel, sizeof rel, "inputs/%s.npy", input);
    REQUIRE(npy_load(golden_path(rel), &mix) == 0);
    int64_t len = mix.shape[1];
    int S = dmx_model_n_sources(m), A = dmx_model_channels(m);
    float *out = malloc(sizeof(float) * (size_t)S * A * len);
    float *outp[64];
    const float *inp[8];
    for (int k = 0; k < S * A; k++) outp[k] = out + (size_t)k * len;
    for (int c = 0; c < A; c++) inp[c] = mix.data + (size_t)c * len;
    dmx_session *s = NULL;
    REQUIRE(dmx_session_new(m, &s) == DMX_OK);
    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.shifts = 0;
    o.overlap = 0.25;
    o.normalize = normalize;
    dmx_status st = dmx_separate(s, inp, len, outp, &o);
    CHECK_MSG(st == DMX_OK, "separate: %s", dmx_last_error());
    compare(name, out, (size_t)S * A * len);
    dmx_session_free(s);
    free(out);
    npy_free(&mix);
    dmx_model_free(m);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: golden CASE\n");
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "tiny4s_forward_7s8")) case_forward("models/tiny4s.th", "mix_7s8", c);
    else if (!strcmp(c, "tiny4s_forward_3s")) case_forward("models/tiny4s.th", "mix_3s", c);
    else if (!strcmp(c, "tiny6s_forward_3s")) case_forward("models/tiny6s.th", "mix_3s", c);
    else if (!strcmp(c, "htdemucs_6s_random_forward_3s")) case_forward("models/htdemucs_6s_random.th", "mix_3s", c);
    else if (!strcmp(c, "tiny4s_apply_12s")) case_apply("models/tiny4s.th", "mix_12s", c, 0);
    else if (!strcmp(c, "tiny4s_apply_3s")) case_apply("models/tiny4s.th", "mix_3s", c, 0);
    else if (!strcmp(c, "tinybag_apply_3s")) case_apply("models/tinybag.yaml", "mix_3s", c, 0);
    else if (!strcmp(c, "tiny4s_separate_12s")) case_apply("models/tiny4s.th", "mix_12s", c, 1);
    else if (!strcmp(c, "tiny6s_separate_3s")) case_apply("models/tiny6s.th", "mix_3s", c, 1);
    else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    return dmx_test_done(c);
}
