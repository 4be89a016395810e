/*
 * test_ffn.c - ffn.c's feed-forward block by row blocks against the two
 * products it replaces (dmx__linear_act, then dmx__linear), bit for bit:
 *   - token counts below one row block, of several blocks and a partial
 *     last one (the block follows L2 and the kernel's rows: 1000 tokens
 *     of 1536 hidden take several where L2 is up to about 3 MiB, and one
 *     shape takes nine and a part whatever L2 is, more than the eight
 *     parts, so a part runs several), input and output widths
 *     that differ, hidden widths off the kernel's panels, GELU and ReLU,
 *     with both biases, one or none;
 *   - y over x itself (each block reads its rows before writing them);
 *   - blocks shared by a team with helpers give the same bits (and a
 *     helper took one, where there are several);
 *   - the arena is left as it was;
 *   - against a float64 reference, as a check of the pair itself;
 *   - DEMIX_GEMM=openblas (a second ctest run): the two products as they
 *     are, the hidden whole.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ffn.h"
#include "ops.h"
#include "team.h"
#include "testutil.h"
#include "threads.h"

typedef struct shape {
    int N, in, hid, out;
    dmx__act act;
    int b1, b2;
} shape;

static shape shapes[] = {
    {1, 8, 16, 8, DMX__ACT_GELU, 1, 1},       {7, 48, 96, 48, DMX__ACT_RELU, 1, 0},
    {300, 64, 256, 64, DMX__ACT_GELU, 0, 0},  {1000, 384, 1536, 384, DMX__ACT_GELU, 1, 1},
    {513, 40, 2000, 24, DMX__ACT_GELU, 0, 1}, {97, 33, 70, 50, DMX__ACT_RELU, 1, 1},
    {0, 32, 1536, 40, DMX__ACT_GELU, 1, 1}, /* more blocks than parts: N set in main */
};
#define NS (int)(sizeof shapes / sizeof shapes[0])

static float frand(unsigned *st) {
    *st = *st * 1664525u + 1013904223u;
    return (float)((*st >> 8) & 0xffff) / 65536.0f - 0.5f;
}

static float *rnd(size_t n, unsigned *st, float scale) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    REQUIRE(p);
    for (size_t i = 0; i < n; i++) p[i] = scale * frand(st);
    return p;
}

typedef struct job {
    const shape *s;
    const float *x, *w1, *b1, *w2, *b2;
    float *y;
    int rc;
} job;

static void *team_main(void *arg) {
    job *j = arg;
    dmx__arena ar;
    dmx__arena_init(&ar);
    j->rc = dmx__ffn(&ar, j->x, j->s->N, j->s->in, j->w1, j->b1, j->s->hid, j->s->act, j->w2,
                     j->b2, j->s->out, j->y);
    dmx__arena_free(&ar);
    return NULL;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double act1(dmx__act a, double v) {
    return a == DMX__ACT_GELU ? 0.5 * v * (1.0 + erf(v / sqrt(2.0))) : v > 0 ? v : 0;
}

int main(void) {
    const char *forced = getenv("DEMIX_GEMM");
    if (!forced) setenv("DEMIX_GEMM", "own", 1);
    dmx__blas_init();
    if (forced && !strcmp(forced, "openblas"))
        CHECK_MSG(!dmx__gemm_pack_floats(DMX__GEMM_B, 8, 8),
                  "DEMIX_GEMM=openblas: weights packed all the same");
    /* nine blocks and a part of one, whatever this CPU's L2 */
    shapes[NS - 1].N = 9 * dmx__gemm_row_block(sizeof(float) * 1536) + 5;
    for (int i = 0; i < NS; i++) {
        const shape *s = &shapes[i];
        unsigned st = 7u + (unsigned)i;
        const size_t nx = (size_t)s->N * s->in, ny = (size_t)s->N * s->out;
        float *x = rnd(nx, &st, 2.0f), *w1 = rnd((size_t)s->hid * s->in, &st, 0.3f);
        float *w2 = rnd((size_t)s->out * s->hid, &st, 0.3f);
        float *b1 = s->b1 ? rnd((size_t)s->hid, &st, 1.0f) : NULL;
        float *b2 = s->b2 ? rnd((size_t)s->out, &st, 1.0f) : NULL;
        float *h = malloc(sizeof(float) * (size_t)s->N * s->hid);
        float *ref = malloc(sizeof(float) * ny), *y = malloc(sizeof(float) * ny);
        float *yt = malloc(sizeof(float) * ny);
        REQUIRE(h && ref && y && yt);
        dmx__linear_act(x, s->N, s->in, w1, b1, s->hid, h, s->act);
        dmx__linear(h, s->N, s->hid, w2, b2, s->out, ref);

        dmx__arena ar;
        dmx__arena_init(&ar);
        (void)dmx__arena_floats(&ar, 5); /* something below: restored to it */
        const size_t used = ar.in_use;
        for (size_t k = 0; k < ny; k++) y[k] = NAN;
        CHECK_MSG(!dmx__ffn(&ar, x, s->N, s->in, w1, b1, s->hid, s->act, w2, b2, s->out, y),
                  "shape %d: out of memory", i);
        CHECK_MSG(ar.in_use == used, "shape %d: arena left at %zu, not %zu", i, ar.in_use, used);
        CHECK_MSG(!memcmp(y, ref, sizeof(float) * ny), "shape %d: differs from the two products",
                  i);

        if (s->in == s->out) { /* over its own input */
            float *xy = malloc(sizeof(float) * nx);
            REQUIRE(xy);
            memcpy(xy, x, sizeof(float) * nx);
            CHECK(!dmx__ffn(&ar, xy, s->N, s->in, w1, b1, s->hid, s->act, w2, b2, s->out, xy));
            CHECK_MSG(!memcmp(xy, ref, sizeof(float) * ny), "shape %d: y over x differs", i);
            free(xy);
        }

        /* one caller, two helpers; where there are several blocks, again
         * until a helper took one (a loaded machine's caller may finish
         * them all before a helper wakes) */
        const int several = s->N > dmx__gemm_row_block(sizeof(float) * (size_t)s->hid) &&
                            dmx__gemm_pack_floats(DMX__GEMM_B, s->hid, s->in);
        const unsigned long long h0 = dmx__team_helped();
        const double t0 = now_s();
        int runs = 0;
        do {
            job j = {s, x, w1, b1, w2, b2, yt, -1};
            memset(yt, 0xff, sizeof(float) * ny);
            dmx__team_run(1, 3, team_main, &j, sizeof j);
            CHECK_MSG(j.rc == 0 && !memcmp(yt, ref, sizeof(float) * ny),
                      "shape %d: blocks on a team differ", i);
        } while (++runs < 50 && several && now_s() - t0 < 10 && dmx__team_helped() == h0);
        if (several)
            CHECK_MSG(dmx__team_helped() > h0, "shape %d: no block ran on a helper in %d runs", i,
                      runs);

        double err = 0, mx = 0;
        for (int r = 0; r < s->N; r += 1 + s->N / 16)
            for (int o = 0; o < s->out; o++) {
                double acc = b2 ? b2[o] : 0;
                for (int k = 0; k < s->hid; k++) {
                    double a = b1 ? b1[k] : 0;
                    for (int c = 0; c < s->in; c++)
                        a += (double)x[(size_t)r * s->in + c] * w1[(size_t)k * s->in + c];
                    acc += act1(s->act, a) * w2[(size_t)o * s->hid + k];
                }
                err = fmax(err, fabs(acc - y[(size_t)r * s->out + o]));
                mx = fmax(mx, fabs(acc));
            }
        printf("N %4d in %3d hid %4d out %3d: error %.2e of %.2e\n", s->N, s->in, s->hid, s->out,
               err, mx);
        CHECK_MSG(err <= 1e-5 * (mx > 1 ? mx : 1), "shape %d: error %g against float64", i, err);
        dmx__arena_free(&ar);
        free(x), free(w1), free(w2), free(b1), free(b2), free(h), free(ref), free(y), free(yt);
    }
    return dmx_test_done("test_ffn");
}
