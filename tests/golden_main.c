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
    tu_compare_npy(name, 34, golden_path(rel), ours, n, TOL);
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
    float *out = tu_separate(m, mix.data, len, normalize);
    compare(name, out, (size_t)S * A * len);
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
