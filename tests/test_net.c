/*
 * test_net.c - the network seam (net.h) and the HTDemucs rules it carries:
 *   - dmx__segment_length, upstream's int(segment * samplerate): exact for
 *     Fractions, float truncation for floats;
 *   - dispatch on the checkpoint class (unknown class: its name and the
 *     known ones);
 *   - the bag `segment:` override never touching an HTDemucs member;
 *   - HTDemucs kwargs upstream runs: t_emb='scaled', a float `segment`, and
 *     use_train_segment=False (every chunk at its own length), amplitude
 *     models (cac=False: magnitudes in, masks out, Wiener filtering with
 *     wiener_iters 0, and 2 with a residual source), against references
 *     tools/refgen/gen.py makes with upstream's code, when DEMIX_REFGEN_DIR
 *     names them (tests/data/refgen/README.md).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apply.h"
#include "demix/demix.h"
#include "net.h"
#include "testutil.h"

/* The upstream references tools/refgen/gen.py makes (tests/data/refgen/
 * README.md: the exact commands). They need upstream's code and PyTorch, so
 * they are not in the repository and not in ../shared/golden: the checks
 * against them run when DEMIX_REFGEN_DIR names the folder holding them. */
static const char *refgen_dir(void) {
    const char *d = getenv("DEMIX_REFGEN_DIR");
    return d && *d ? d : NULL;
}

static const char *refgen_path(const char *file) {
    static char buf[2][1024];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof buf[k], "%s/%s", refgen_dir(), file);
    return buf[k];
}

/* tools/refgen/gen.py's sines_input(): the same formula in float64, rounded. */
static float *sines_input(int A, int64_t L) {
    float *x = malloc(sizeof(float) * (size_t)A * L);
    REQUIRE(x);
    for (int c = 0; c < A; c++)
        for (int64_t i = 0; i < L; i++) {
            double t = (double)i / 44100.0;
            x[(size_t)c * L + i] =
                (float)(0.1 * sin(2 * M_PI * 97.5 * (c + 1) * t) + 0.05 * sin(2 * M_PI * 1201.0 * t + c));
        }
    return x;
}

/* tools/refgen/gen.py's noise_input(): a 64-bit LCG's top 24 bits, channel
 * after channel, scaled in float64 to [-0.1, 0.1) and rounded. */
static float *noise_input(int A, int64_t L) {
    float *x = malloc(sizeof(float) * (size_t)A * L);
    REQUIRE(x);
    uint64_t st = 12345;
    for (int64_t i = 0; i < A * L; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)(((double)(st >> 40) / 16777216.0 - 0.5) * 0.2);
    }
    return x;
}

static void test_segment_length(void) {
    /* a float: Python's int(5.6 * 44100) is 246959, not 246960 */
    CHECK(dmx__segment_length(0, 0, 5.6, 44100) == 246959);
    CHECK(dmx__segment_length(0, 0, 0.35, 44100) == 15434);
    CHECK(dmx__segment_length(0, 0, 7.8, 44100) == 343980);
    CHECK(dmx__segment_length(0, 0, 44.0, 44100) == 1940400);
    /* a Fraction: exact */
    CHECK(dmx__segment_length(28, 5, 5.6, 44100) == 246960);
    CHECK(dmx__segment_length(39, 5, 7.8, 44100) == 343980);
    CHECK(dmx__segment_length(7, 20, 0.35, 44100) == 15435);
    CHECK(dmx__segment_length(1, 3, 1.0 / 3, 44100) == 14700);
    CHECK(dmx__segment_length(1, 7, 1.0 / 7, 44100) == 6300);
    CHECK(dmx__segment_length(2, 7, 2.0 / 7, 48000) == 13714); /* 96000/7 = 13714.28 */
    /* out of range */
    CHECK(dmx__segment_length(0, 0, -1.0, 44100) == -1);
    CHECK(dmx__segment_length(0, 0, NAN, 44100) == -1);
    CHECK(dmx__segment_length(0, 0, 1e300, 44100) == -1);
    CHECK(dmx__segment_length(INT64_MAX, 1, 0, 44100) == -1);
}

static dmx_model *load(const char *path) {
    dmx_model *m = NULL;
    dmx_status st = dmx_model_load(path, &m);
    CHECK_MSG(st == DMX_OK, "load %s: %s", path, dmx_last_error());
    REQUIRE(m);
    return m;
}

static void test_dispatch(void) {
    size_t len;
    unsigned char *b = read_file(golden_path("models/tiny4s.th"), &len);
    REQUIRE(b);
    dmx__ckpt *ck = NULL;
    REQUIRE(dmx__ckpt_load_mem(b, len, "tiny4s.th", &ck) == DMX_OK);
    dmx__net *n = NULL;
    REQUIRE(dmx__net_build(ck, &n) == DMX_OK); /* takes ck */
    CHECK(strcmp(n->desc.klass, "HTDemucs") == 0);
    CHECK(n->desc.fixed_segment == 1 && n->desc.use_train_segment == 1);
    CHECK(n->desc.seg_num == 39 && n->desc.seg_den == 5 && n->desc.training_length == 343980);
    CHECK(n->desc.rand_draws_per_forward == 1); /* t_emb='sin': randrange(1) per pass */
    CHECK(dmx__net_valid_length(n, 1000) == 343980);
    dmx__net_free(n);
    free(b);
}

/* A bag's larger `segment:` does not raise an HTDemucs member's. */
static void test_bag_segment_fixed(void) {
    char dir[] = "/tmp/demix_test_net_XXXXXX";
    REQUIRE(mkdtemp(dir));
    char p[1200], y[1200];
    snprintf(p, sizeof p, "%s/a.th", dir);
    REQUIRE(symlink(golden_path("models/tinybag_a.th"), p) == 0);
    snprintf(y, sizeof y, "%s/bag.yaml", dir);
    const char *yaml = "models: ['a', 'a']\nsegment: 44\n";
    REQUIRE(write_file(y, yaml, strlen(yaml)) == 0);
    dmx_model *m = load(y);
    CHECK(fabs(dmx_model_segment(m) - 7.8) < 1e-9);
    CHECK(fabs(dmx_model_max_segment(m) - 7.8) < 1e-9);
    for (int k = 0; k < m->n_members; k++) CHECK(m->members[k]->desc.training_length == 343980);
    dmx_model_free(m);
    unlink(y);
    unlink(p);
    rmdir(dir);
}

/* t_emb='scaled' (learned positions) and a float segment kwarg (0.35 s:
 * 15434 samples, where rounding would give 15435): the forward pass. */
static void test_scaled_float_segment(void) {
    dmx_model *m = load(refgen_path("htd_scaled.th"));
    const dmx__net *net = m->members[0];
    CHECK_MSG(net->desc.training_length == 15434, "training length %lld, upstream's int(0.35 * 44100) is 15434",
              (long long)net->desc.training_length);
    CHECK(net->desc.seg_den == 0 && fabs(net->desc.segment - 0.35) < 1e-12);
    CHECK(net->desc.rand_draws_per_forward == 0); /* no random shift outside t_emb='sin' */
    const int A = 2, S = 4, L = 8820, SUB = 9;
    float *x = sines_input(A, L);
    float *out = malloc(sizeof(float) * S * A * L);
    dmx__arena ar;
    dmx__arena_init(&ar);
    dmx_status st = dmx__net_forward(net, &ar, x, L, out, NULL, NULL);
    CHECK_MSG(st == DMX_OK, "forward: %s", dmx_last_error());
    tu_compare_strided("htd_scaled forward", 26, refgen_path("htd_scaled_out.npy"), out, S * A, L, SUB, 1e-4);
    dmx__arena_free(&ar);
    free(out);
    free(x);
    dmx_model_free(m);
}

/* use_train_segment=False: apply_model runs every chunk at its own length
 * (0.25 s segments over 1 s: the last chunks are shorter). */
static void test_no_train_segment(void) {
    dmx_model *m = load(refgen_path("htd_no_train_seg.th"));
    const dmx__net *net = m->members[0];
    CHECK(net->desc.use_train_segment == 0 && net->desc.training_length == 11025);
    CHECK(dmx__net_valid_length(net, 5000) == 5000);
    const int A = 2, S = 4, L = 44100, SUB = 21;
    float *x = sines_input(A, L);
    float *out = malloc(sizeof(float) * S * A * L);
    const float *inp[2] = {x, x + L};
    float *outp[8];
    for (int k = 0; k < S * A; k++) outp[k] = out + (size_t)k * L;
    dmx_session *s = NULL;
    REQUIRE(dmx_session_new(m, &s) == DMX_OK);
    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.normalize = 0;
    o.n_threads = 2;
    dmx_status st = dmx_separate(s, inp, L, outp, &o);
    CHECK_MSG(st == DMX_OK, "separate: %s", dmx_last_error());
    tu_compare_strided("htd_no_train_seg apply", 26, refgen_path("htd_no_train_seg_out.npy"), out, S * A, L, SUB, 1e-4);
    /* a run without splitting takes the whole input at its length too */
    o.split = 0;
    st = dmx_separate(s, inp, L, outp, &o);
    CHECK_MSG(st == DMX_OK, "separate without split: %s", dmx_last_error());
    dmx_session_free(s);
    free(out);
    free(x);
    dmx_model_free(m);
}

/* cac=False: upstream's _magnitude in, _mask (openunmix's wiener) out; a
 * 0.25 s training length, so the 8820-sample input is padded and the iSTFT
 * runs at the training length. */
static void test_mask_forward(const char *name, int wiener_iters, int residual) {
    char th[64], npy[64];
    snprintf(th, sizeof th, "%s.th", name);
    snprintf(npy, sizeof npy, "%s_out.npy", name);
    dmx_model *m = load(refgen_path(th));
    const dmx__net *net = m->members[0];
    CHECK(net->desc.training_length == 11025);
    const int A = 2, S = 4, L = 8820, SUB = 9;
    /* noise, not sines: the masks take the mixture's phase, which is
     * ill-conditioned (FFT rounding) in the near-empty bins of pure tones */
    float *x = noise_input(A, L);
    float *out = malloc(sizeof(float) * S * A * L);
    dmx__arena ar;
    dmx__arena_init(&ar);
    dmx_status st = dmx__net_forward(net, &ar, x, L, out, NULL, NULL);
    CHECK_MSG(st == DMX_OK, "%s forward: %s", name, dmx_last_error());
    npy_array ref;
    REQUIRE(npy_load(refgen_path(npy), &ref) == 0);
    int n_sub = (L + SUB - 1) / SUB;
    REQUIRE(ref.numel == (size_t)S * A * n_sub);
    float *sub = malloc(sizeof(float) * ref.numel);
    for (int k = 0; k < S * A; k++)
        for (int i = 0; i < n_sub; i++) sub[(size_t)k * n_sub + i] = out[(size_t)k * L + (size_t)i * SUB];
    double mad, mref, r = rel_max_err(sub, ref.data, ref.numel, &mad, &mref);
    printf("%-12s cac=False wiener_iters=%d residual=%d ratio = %.3e (max|ref| %.3e)\n", name, wiener_iters,
           residual, r, mref);
    CHECK_MSG(r <= 1e-4, "%s (cac=False) forward: ratio %.3e", name, r);
    dmx__arena_free(&ar);
    free(sub);
    free(out);
    free(x);
    npy_free(&ref);
    dmx_model_free(m);
}

/* HTDemucs.__init__ asserts wiener_iters == end_iters: a checkpoint that
 * breaks it is refused by name (end_iters patched 2 -> 3 in the pickle). */
static void test_mask_bad_end_iters(void) {
    size_t n = 0;
    unsigned char *buf = read_file(refgen_path("htd_wiener.th"), &n);
    REQUIRE(buf);
    /* the kwarg's key, a memo put (q, one byte), then BININT1 2 (K \x02) */
    unsigned char *p = memmem(buf, n, "end_iters", 9);
    REQUIRE(p && p + 13 <= buf + n && p[9] == 'q' && p[11] == 'K' && p[12] == 2);
    p[12] = 3;
    tu_zip_fix_pkl_crc(buf, n);
    char path[] = "/tmp/demix_test_net_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0 && write(fd, buf, n) == (ssize_t)n);
    close(fd);
    dmx_model *m = NULL;
    dmx_status st = dmx_model_load(path, &m);
    printf("end_iters 3, wiener_iters 2 -> %s: %s\n", dmx_status_name(st), dmx_last_error());
    CHECK(st == DMX_ERR_MODEL && m == NULL && strstr(dmx_last_error(), "wiener_iters == end_iters"));
    unlink(path);
    free(buf);
}

int main(void) {
    test_segment_length();
    test_dispatch();
    test_bag_segment_fixed();
    if (refgen_dir()) {
        test_scaled_float_segment();
        test_no_train_segment();
        test_mask_forward("htd_mask", 0, 0);
        test_mask_forward("htd_wiener", 2, 1);
        test_mask_bad_end_iters();
    } else {
        printf("upstream references not checked: DEMIX_REFGEN_DIR is unset "
               "(tests/data/refgen/README.md makes them)\n");
    }
    return dmx_test_done("test_net");
}
