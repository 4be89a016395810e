/*
 * test_golden_layers.c - layer-by-layer parity of tiny4s on mix_7s8 against
 * upstream's activations in ../shared/golden/intermediates/tiny4s, so that a
 * regression names the first layer that drifts. Each reference holds
 * t[..., ::stride] with the stride from manifest.json.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "demix/demix.h"
#include "net.h"
#include "testutil.h"

static char *manifest;
static int checked;

/* Reads "name": {"full_shape": [...], "last_axis_stride": N} from the manifest. */
static int manifest_stride(const char *name) {
    char key[96];
    snprintf(key, sizeof key, "\"%s\": {", name);
    const char *p = strstr(manifest, key);
    if (!p) return -1;
    p = strstr(p, "\"last_axis_stride\":");
    if (!p) return -1;
    return atoi(p + strlen("\"last_axis_stride\":"));
}

static void tap(void *user, const char *name, const float *data, int c, int h, int w) {
    (void)user;
    char rel[128];
    snprintf(rel, sizeof rel, "intermediates/tiny4s/%s.npy", name);
    npy_array ref;
    FILE *f = fopen(golden_path(rel), "rb");
    if (!f) return; /* not every tap has a reference */
    fclose(f);
    REQUIRE(npy_load(golden_path(rel), &ref) == 0);
    int stride = manifest_stride(name);
    REQUIRE(stride > 0);
    int ws = (w + stride - 1) / stride;
    size_t n = ref.numel;
    float *ours = malloc(sizeof(float) * n);
    size_t k = 0;
    if (!strcmp(name, "spec")) {
        /* reference (re/im, 1, channels, F, T); ours (channels, re/im, F, T) */
        int A = c / 2;
        for (int ri = 0; ri < 2; ri++)
            for (int a = 0; a < A; a++)
                for (int f = 0; f < h; f++)
                    for (int t = 0; t < ws; t++)
                        ours[k++] = data[(((size_t)a * 2 + ri) * h + f) * w + (size_t)t * stride];
    } else {
        for (int ci = 0; ci < c; ci++)
            for (int f = 0; f < h; f++)
                for (int t = 0; t < ws; t++) ours[k++] = data[((size_t)ci * h + f) * w + (size_t)t * stride];
    }
    CHECK_MSG(k == n, "%s: %zu values vs reference %zu", name, k, n);
    if (k == n) {
        double mad, mref;
        double r = rel_max_err(ours, ref.data, n, &mad, &mref);
        printf("%-20s (%d, %d, %d)  ratio = %.3e\n", name, c, h, w, r);
        CHECK_MSG(r <= 1e-4, "layer %s drifts: ratio %.3e", name, r);
        checked++;
    }
    free(ours);
    npy_free(&ref);
}

int main(void) {
    size_t len;
    manifest = (char *)read_file(golden_path("manifest.json"), &len);
    REQUIRE(manifest);
    manifest = realloc(manifest, len + 1);
    manifest[len] = 0;
    dmx_model *m = NULL;
    dmx_status st = dmx_model_load(golden_path("models/tiny4s.th"), &m);
    if (st != DMX_OK) fprintf(stderr, "load: %s\n", dmx_last_error());
    REQUIRE(st == DMX_OK);
    npy_array mix;
    REQUIRE(npy_load(golden_path("inputs/mix_7s8.npy"), &mix) == 0);
    const dmx__net *net = m->members[0];
    int n = (int)mix.shape[1];
    float *out = malloc(sizeof(float) * (size_t)net->desc.n_sources * net->desc.audio_channels * n);
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__net_forward(net, &ar, mix.data, n, out, tap, NULL) == DMX_OK);
    /* spec, 4 encoders, 4 time encoders, 2 transformer outputs, 4+4 decoders */
    CHECK_MSG(checked == 19, "compared %d layers, expected 19", checked);
    dmx__arena_free(&ar);
    free(out);
    npy_free(&mix);
    dmx_model_free(m);
    free(manifest);
    return dmx_test_done("test_golden_layers");
}
