/*
 * test_hdemucs_errors.c - HDemucs checkpoints whose kwargs or state do not
 * describe a network demix can build give their own status and a message
 * naming the kwarg or tensor; and an amplitude model whose kwargs ask for
 * Wiener EM iterations (no official model does) runs them. The zoo fixtures
 * are patched in memory (same-length edits of data.pkl, CRC-32s recomputed
 * by testutil) so only the model builder can object.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "ckpt.h"
#include "demix/demix.h"
#include "net.h"
#include "testutil.h"

static unsigned char *orig;
static size_t orig_len;

/* Applies same-length edits (from, to, n) x k to a copy of the fixture. */
static unsigned char *patched(int k, const char *const *from, const char *const *to, const size_t *n) {
    unsigned char *b = tu_memdup(orig, orig_len);
    for (int i = 0; i < k; i++) tu_patch(b, orig_len, from[i], to[i], n[i], NULL);
    tu_zip_fix_pkl_crc(b, orig_len);
    return b;
}

static unsigned char *patch1(const char *from, const char *to, size_t n) { return patched(1, &from, &to, &n); }

static void expect(unsigned char *buf, dmx_status want, const char *phrase, const char *what) {
    tu_expect_load_error(buf, orig_len, want, phrase, what);
}

/* Forward of a (patched) checkpoint on the first `len` samples of mix_3s. */
static float *forward_len(unsigned char *buf, int len, int *n) {
    char path[] = "/tmp/demix_test_hdemucs_XXXXXX";
    tu_write_tmp(buf, orig_len, path);
    free(buf);
    dmx__ckpt *ck = NULL;
    REQUIRE(dmx__ckpt_load(path, &ck) == DMX_OK);
    unlink(path);
    dmx__net *net = NULL;
    dmx_status st = dmx__net_build(ck, &net);
    CHECK_MSG(st == DMX_OK, "build: %s", dmx_last_error());
    REQUIRE(st == DMX_OK);
    npy_array mix;
    REQUIRE(npy_load(golden_path("inputs/mix_3s.npy"), &mix) == 0);
    const int full = (int)mix.shape[1], A = net->desc.audio_channels;
    float *x = malloc(sizeof(float) * A * len);
    for (int c = 0; c < A; c++) memcpy(x + (size_t)c * len, mix.data + (size_t)c * full, sizeof(float) * len);
    *n = net->desc.n_sources * A * len;
    float *out = malloc(sizeof(float) * *n);
    dmx__arena ar;
    dmx__arena_init(&ar);
    st = dmx__net_forward(net, &ar, x, len, out, NULL, NULL);
    CHECK_MSG(st == DMX_OK, "forward: %s", dmx_last_error());
    dmx__arena_free(&ar);
    dmx__net_free(net);
    npy_free(&mix);
    free(x);
    return out;
}

static float *forward(unsigned char *buf, int *n) { return forward_len(buf, 44100, n); }

/* Chunks of any length run (upstream runs each chunk at its own length):
 * shorter than the padding, than a hop, not a multiple of anything. */
static void short_chunks(void) {
    static const int lens[] = {1, 7, 1023, 1025, 5000};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        unsigned char *b = tu_memdup(orig, orig_len);
        int n;
        float *out = forward_len(b, lens[i], &n);
        int finite = 1;
        for (int k = 0; k < n; k++) finite &= isfinite(out[k]) != 0;
        CHECK_MSG(finite, "chunk of %d samples: non-finite output", lens[i]);
        free(out);
    }
}

static void wiener_em_runs(void) {
    orig = read_file(golden_path("zoo/models/mdx_hdemucs_mask_tiny.th"), &orig_len);
    REQUIRE(orig);
    int n0, n1, n2;
    float *plain = forward(patch1("cacq\x16\x89", "cacq\x16\x89", 6), &n0);
    const char *from[] = {"wiener_itersq\x13K\x00", "end_itersq\x14K\x00", "wiener_residualq\x15\x89"};
    const char *to1[] = {"wiener_itersq\x13K\x01", "end_itersq\x14K\x01", "wiener_residualq\x15\x89"};
    const char *to2[] = {"wiener_itersq\x13K\x02", "end_itersq\x14K\x02", "wiener_residualq\x15\x88"};
    const size_t len[] = {16, 13, 18};
    float *em = forward(patched(3, from, to1, len), &n1);
    float *emr = forward(patched(3, from, to2, len), &n2);
    REQUIRE(n0 == n1 && n0 == n2);
    double mx = 0, d1 = 0, d2 = 0;
    int finite = 1;
    for (int i = 0; i < n0; i++) {
        finite &= isfinite(em[i]) && isfinite(emr[i]);
        mx = fmax(mx, fabs(plain[i]));
        d1 = fmax(d1, fabs(em[i] - plain[i]));
        d2 = fmax(d2, fabs(emr[i] - em[i]));
    }
    printf("Wiener EM: 1 iteration moves the output by %.3e of max|out|, 2 with residual by %.3e more\n", d1 / mx,
           d2 / mx);
    CHECK(finite);
    CHECK(d1 > 1e-3 * mx && d1 < mx);
    CHECK(d2 > 1e-3 * mx);
    free(plain);
    free(em);
    free(emr);
    free(orig);
}

int main(void) {
    orig = read_file(golden_path("zoo/models/hdemucs_mmi_tiny.th"), &orig_len);
    REQUIRE(orig);
    expect(patch1("hybridq\x19\x88", "hybridq\x19\x89", 9), DMX_ERR_UNSUPPORTED, "hybrid=False", "hybrid=False");
    expect(patch1("wiener_itersq\x13K\x00", "wiener_itersq\x13K\x01", 16), DMX_ERR_MODEL,
           "wiener_iters == end_iters", "wiener != end iters");
    expect(patch1("\x07\x00\x00\x00rescale", "\x07\x00\x00\x00rescalf", 11), DMX_ERR_UNSUPPORTED, "'rescalf'",
           "unknown kwarg");
    expect(patch1("encoder.4.norm1.bias", "encoder.4.norm1.biaz", 20), DMX_ERR_MODEL,
           "missing tensor 'encoder.4.norm1.bias'", "missing tensor");
    /* cac=False: the input layer takes magnitudes, one channel per audio channel */
    expect(patch1("cacq\x16\x88", "cacq\x16\x89", 6), DMX_ERR_MODEL,
           "tensor 'encoder.0.conv.weight' has shape (4, 4, 8, 1) but the architecture expects (4, 2, 8, 1)",
           "cac=False");
    /* norm_starts=5: layer 4's GroupNorm tensors are left over */
    expect(patch1("norm_startsq&K\x04", "norm_startsq&K\x05", 15), DMX_ERR_MODEL, "encoder.4.norm1.weight",
           "unexpected tensor");
    /* and the unpatched bytes, through the same path, load fine */
    tu_expect_load_ok(orig, orig_len);
    short_chunks();
    free(orig);
    wiener_em_runs();
    return dmx_test_done("test_hdemucs_errors");
}
