/*
 * test_roformer_stream.c - MSST's whole-track chunking as a stream
 * (roformer_demix.c): fed in pieces of any size it gives bit-identically the
 * same stems as a direct transcription of MSST's demix() loop below (whole
 * padded buffers), for several num_overlap values and lengths (padded,
 * unpadded, a last chunk under half a chunk) and any number of worker
 * threads, with a footprint that does not grow with the track; and misuse
 * is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demix/demix.h"
#include "threads.h"
#include "roformer.h"
#include "roformer_demix.h"
#include "testutil.h"

static int64_t refl(int64_t i, int64_t n) {
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

/* MSST utils/model_utils.py demix(), generic mode, batch_size 1, transcribed
 * on whole buffers. */
static void msst_demix(const dmx__roformer *n, const float *mix, int64_t T, float *out) {
    const dmx__rf_config *c = dmx__roformer_config(n);
    int A = 2, S = c->num_stems;
    int64_t C = c->chunk_size, step = C / c->num_overlap, fade = C / 10, border = C - step;
    (void)fade;
    int padded = T > 2 * border && border > 0;
    int64_t B = padded ? border : 0, P = T + 2 * B;
    float *pm = malloc(sizeof(float) * A * P);
    for (int a = 0; a < A; a++)
        for (int64_t i = 0; i < P; i++) pm[a * P + i] = mix[a * T + refl(i - B, T)];
    float *res = calloc((size_t)S * A * P, sizeof(float)), *cnt = calloc((size_t)P, sizeof(float));
    float *part = malloc(sizeof(float) * A * C), *y = malloc(sizeof(float) * S * A * C), *w = malloc(sizeof(float) * C);
    dmx__rf_plan p;
    REQUIRE(dmx__rf_plan_make(c, T, &p) == DMX_OK);
    dmx__arena ar;
    dmx__arena_init(&ar);
    int64_t k = 0;
    for (int64_t i = 0; i < P; i += step, k++) {
        int64_t L = P - i < C ? P - i : C;
        for (int a = 0; a < A; a++) {
            for (int64_t j = 0; j < L; j++) part[a * C + j] = pm[a * P + i + j];
            for (int64_t j = L; j < C; j++) part[a * C + j] = L > C / 2 ? part[a * C + refl(j, L)] : 0.0f;
        }
        REQUIRE(dmx__roformer_forward(n, &ar, part, (int)C, y, NULL, NULL) == DMX_OK);
        dmx__rf_plan_window(&p, k, w);
        for (int q = 0; q < S * A; q++)
            for (int64_t j = 0; j < L; j++) res[q * P + i + j] += y[q * C + j] * w[j];
        for (int64_t j = 0; j < L; j++) cnt[i + j] += w[j];
    }
    for (int q = 0; q < S * A; q++)
        for (int64_t j = 0; j < T; j++) out[q * T + j] = cnt[B + j] != 0 ? res[q * P + B + j] / cnt[B + j] : 0.0f;
    dmx__arena_free(&ar);
    free(pm), free(res), free(cnt), free(part), free(y), free(w);
}

typedef struct sink {
    float *out;
    int64_t T, pos;
    int SA;
    int fail_after; /* -1: never */
} sink;

static dmx_status sink_write(void *user, const float *const *stems, int64_t frames) {
    sink *s = user;
    if (s->fail_after >= 0 && s->pos + frames > s->fail_after) return DMX_ERR_IO;
    REQUIRE(s->pos + frames <= s->T);
    for (int q = 0; q < s->SA; q++) memcpy(s->out + q * s->T + s->pos, stems[q], sizeof(float) * frames);
    s->pos += frames;
    return DMX_OK;
}

/* open: the stream is not told the length (dmx_model_single_pass's form). */
static size_t stream_run_ex(const dmx__roformer *n, const float *mix, int64_t T, int64_t piece,
                            int threads, int open, float *out) {
    sink sk = {out, T, 0, dmx__roformer_config(n)->num_stems * 2, -1};
    dmx__rf_stream *st = NULL;
    REQUIRE(dmx__rf_stream_new(n, open ? -1 : T, threads, sink_write, &sk, &st) == DMX_OK);
    for (int64_t i = 0; i < T; i += piece) {
        int64_t m = T - i < piece ? T - i : piece;
        const float *in[2] = {mix + i, mix + T + i};
        REQUIRE(dmx__rf_stream_feed(st, in, m) == DMX_OK);
    }
    REQUIRE(dmx__rf_stream_finish(st) == DMX_OK);
    CHECK(sk.pos == T);
    size_t fp = dmx__rf_stream_footprint(st);
    dmx__rf_stream_free(st);
    return fp;
}

static size_t stream_run(const dmx__roformer *n, const float *mix, int64_t T, int64_t piece, int threads,
                         float *out) {
    return stream_run_ex(n, mix, T, piece, threads, 0, out);
}

int main(void) {
    /* the engine computes with one BLAS thread per forward pass (threads.c):
     * so does the reference loop here */
    dmx__blas_init();
    dmx__rf_config c;
    REQUIRE(dmx__rf_config_load(golden_path("roformer/models/bs_roformer_4stem_tiny.yaml"), &c) == DMX_OK);
    npy_array mix12;
    REQUIRE(npy_load(golden_path("inputs/mix_12s.npy"), &mix12) == 0);
    const int64_t T12 = mix12.shape[1];
    static const struct {
        int chunk, overlap;
        int64_t T;
    } cases[] = {
        {22050, 2, 100000}, {22050, 3, 100000}, {22050, 4, 77777}, {22050, 2, 30000}, /* 30000 <= 2 border: unpadded */
        {22050, 4, 12000},  /* shorter than one chunk, last chunk under half a chunk */
        /* an unknown length's edges: exactly 2 border (unpadded) and one more,
         * and lengths ending exactly on a step (the last full chunk's end) */
        {22050, 2, 22050},  {22050, 2, 22051}, {22050, 2, 77175}, {22050, 4, 49608},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        c.chunk_size = cases[ci].chunk;
        c.num_overlap = cases[ci].overlap;
        dmx__ckpt *ck = NULL;
        REQUIRE(dmx__ckpt_load_state_dict(golden_path("roformer/models/bs_roformer_4stem_tiny.ckpt"), &ck) == DMX_OK);
        dmx__roformer *n = NULL;
        REQUIRE(dmx__roformer_build(&c, ck, &n) == DMX_OK);
        int64_t T = cases[ci].T;
        float *mix = malloc(sizeof(float) * 2 * T);
        for (int a = 0; a < 2; a++) memcpy(mix + a * T, mix12.data + a * T12, sizeof(float) * T);
        size_t SAT = (size_t)4 * 2 * T;
        float *ref = malloc(sizeof(float) * SAT), *o1 = malloc(sizeof(float) * SAT), *o2 = malloc(sizeof(float) * SAT);
        msst_demix(n, mix, T, ref);
        size_t fp1 = stream_run(n, mix, T, 12345, 1, o1);
        REQUIRE(dmx__rf_demix(n, mix, T, 3, o2) == DMX_OK); /* 3 workers, whole input at once */
        for (size_t z = 0; z < SAT; z++)
            if (ref[z] != o1[z]) {
                fprintf(stderr, "first diff at %zu (stem-ch %zu, t %zu): %g vs %g\n", z, z / T, z % T, ref[z], o1[z]);
                break;
            }
        CHECK_MSG(!memcmp(ref, o1, sizeof(float) * SAT), "chunk %d overlap %d T %lld: stream in pieces differs",
                  cases[ci].chunk, cases[ci].overlap, (long long)T);
        CHECK_MSG(!memcmp(ref, o2, sizeof(float) * SAT), "chunk %d overlap %d T %lld: whole with 3 threads differs",
                  cases[ci].chunk, cases[ci].overlap, (long long)T);
        /* the length unknown until finish (the pipeline's single decoding
         * pass): the same bits, in any pieces, with any threads */
        static const struct {
            int64_t piece;
            int threads;
        } op[] = {{12345, 1}, {1000, 3}, {1, 2}, {1 << 20, 2}};
        for (size_t k = 0; k < sizeof op / sizeof op[0]; k++) {
            if (op[k].piece == 1 && T > 30000) continue; /* slow, and the short cases cover it */
            memset(o2, 0, sizeof(float) * SAT);
            size_t fpo = stream_run_ex(n, mix, T, op[k].piece, op[k].threads, 1, o2);
            CHECK_MSG(!memcmp(ref, o2, sizeof(float) * SAT),
                      "chunk %d overlap %d T %lld: unknown length, pieces %lld, %d threads: differs",
                      cases[ci].chunk, cases[ci].overlap, (long long)T, (long long)op[k].piece,
                      op[k].threads);
            if (ci == 0 && k == 0) {
                float *big = malloc(sizeof(float) * (size_t)4 * 2 * T12);
                size_t fpb = stream_run_ex(n, mix12.data, T12, 65536, 1, 1, big);
                CHECK_MSG(fpb == fpo, "unknown length: footprint grows with the track: %zu vs %zu",
                          fpb, fpo);
                free(big);
            }
        }
        printf("chunk %d overlap %d T %lld: %s MSST's loop, footprint %zu floats\n", cases[ci].chunk,
               cases[ci].overlap, (long long)T,
               !memcmp(ref, o1, sizeof(float) * SAT) ? "bit-identical to" : "DIFFERS from", fp1);
        if (ci == 0) {
            /* flat in length: the same footprint for the 12 s track */
            float *big = malloc(sizeof(float) * (size_t)4 * 2 * T12);
            size_t fp2 = stream_run(n, mix12.data, T12, 65536, 1, big);
            CHECK_MSG(fp2 == fp1, "footprint grows with the track: %zu vs %zu", fp2, fp1);
            free(big);
            /* misuse */
            sink sk = {o1, T, 0, 8, -1};
            dmx__rf_stream *st = NULL;
            REQUIRE(dmx__rf_stream_new(n, T, 1, sink_write, &sk, &st) == DMX_OK);
            const float *in[2] = {mix, mix + T};
            CHECK(dmx__rf_stream_feed(st, in, 1000) == DMX_OK);
            CHECK(dmx__rf_stream_finish(st) == DMX_ERR_INVALID_ARG);
            CHECK(dmx__rf_stream_feed(st, in, T) == DMX_ERR_INVALID_ARG && strstr(dmx_last_error(), "past"));
            dmx__rf_stream_free(st);
            /* a failing writer aborts the stream with its status */
            sink bad = {o1, T, 0, 8, 5000};
            REQUIRE(dmx__rf_stream_new(n, T, 2, sink_write, &bad, &st) == DMX_OK);
            CHECK(dmx__rf_stream_feed(st, in, T) == DMX_ERR_IO);
            CHECK(dmx__rf_stream_finish(st) == DMX_ERR_IO);
            dmx__rf_stream_free(st);
            CHECK(dmx__rf_stream_new(n, 0, 1, sink_write, &bad, &st) == DMX_ERR_BAD_INPUT && !st);
            /* threads in a stream fed in small pieces: same bits */
            float *o3 = malloc(sizeof(float) * SAT);
            stream_run(n, mix, T, 1000, 4, o3);
            CHECK_MSG(!memcmp(ref, o3, sizeof(float) * SAT), "4 threads, pieces of 1000: differs");
            free(o3);
        }
        free(ref), free(o1), free(o2), free(mix);
        dmx__roformer_free(n);
    }
    npy_free(&mix12);
    return dmx_test_done("test_roformer_stream");
}
