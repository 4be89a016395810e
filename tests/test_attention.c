/*
 * test_attention.c - attention.c's fused softmax attention against a plain
 * double-precision reference, on shapes the models do not all have:
 *   - query and key counts that are not multiples of the kernel's strip and
 *     panel (1, 7, 45, 300 queries; 1, 33, 100, 2049 keys), head dimensions
 *     of one, two, three and four vectors and one that is none (D = 20: the
 *     two-sgemm path), several sequences with their own strides, leading
 *     dimensions wider than the rows, with and without per-row gains, large
 *     and spread scores (the softmax's shift);
 *   - the fused and two-sgemm paths agree; the output's padding columns are
 *     never written;
 *   - heads computed by a team with helpers equal heads computed alone, bit
 *     for bit (a head's result never depends on the thread that runs it).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "team.h"
#include "testutil.h"
#include "threads.h"

typedef struct shape {
    int nseq, Nq, Nk, D, gain;
    float spread; /* scale of the inputs: large makes peaked softmaxes */
    float offset; /* added to queries, taken from keys: every score about
                   * -offset^2 sqrt(D), so a row maximum that took in the
                   * zero scores of a padded key panel would underflow the
                   * whole row; scores of magnitude 100 round to about 1e-5,
                   * so such a shape gets a tolerance of 3e-5 */
} shape;

static const shape shapes[] = {
    {1, 45, 33, 16, 0, 1.0f, 0},  {1, 7, 100, 32, 1, 3.0f, 0},  {2, 300, 2049, 48, 0, 1.0f, 0},
    {3, 1, 1, 64, 1, 1.0f, 0},    {1, 64, 257, 48, 1, 8.0f, 0}, {2, 33, 65, 20, 1, 1.0f, 0},
    {1, 128, 129, 8, 0, 0.5f, 0}, {1, 20, 40, 16, 1, 1.0f, 5.0f}, {2, 50, 70, 24, 1, 1.0f, 0},
    {1, 30, 70, 64, 1, 1.0f, 0},  {1, 20, 96, 48, 1, 1.0f, 0}, /* keys a whole number of panels */
};
#define NS    (int)(sizeof shapes / sizeof shapes[0])
#define HEADS 3
#define PAD   3

static float frand(unsigned *st) {
    *st = *st * 1664525u + 1013904223u;
    return (float)((*st >> 8) & 0xffff) / 65536.0f - 0.5f;
}

typedef struct buf {
    float *qkv, *g, *out;
    size_t nqkv, nout;
    int ld, ldo;
    dmx__attn a;
} buf;

/* HEADS heads interleaved in rows of ld = 3 * HEADS * D + PAD floats (q,
 * k, v of every head side by side, as a fused projection lays them out);
 * out rows of HEADS * D + PAD. */
static void buf_init(buf *b, shape s, unsigned seed) {
    int inner = HEADS * s.D, L = s.Nq > s.Nk ? s.Nq : s.Nk;
    b->ld = 3 * inner + PAD;
    b->ldo = inner + PAD;
    b->nqkv = (size_t)s.nseq * L * b->ld;
    b->nout = (size_t)s.nseq * s.Nq * b->ldo;
    b->qkv = malloc(sizeof(float) * b->nqkv);
    b->g = malloc(sizeof(float) * (size_t)s.nseq * s.Nq * HEADS);
    b->out = malloc(sizeof(float) * b->nout);
    for (size_t i = 0; i < b->nqkv; i++) {
        size_t c = i % (size_t)b->ld; /* q, k or v of some head */
        float off = c < (size_t)inner ? s.offset : c < (size_t)2 * inner ? -s.offset : 0.0f;
        b->qkv[i] = s.spread * frand(&seed) + off;
    }
    for (size_t i = 0; i < (size_t)s.nseq * s.Nq * HEADS; i++) b->g[i] = 0.5f + frand(&seed);
    for (size_t i = 0; i < b->nout; i++) b->out[i] = 12345.0f; /* padding sentinel */
    b->a = (dmx__attn){.heads = HEADS, .nseq = s.nseq, .Nq = s.Nq, .Nk = s.Nk, .D = s.D,
                       .scale = 1.0f / sqrtf((float)s.D), .q = b->qkv, .k = b->qkv + inner,
                       .v = b->qkv + 2 * inner, .ldq = b->ld, .ldk = b->ld, .ldv = b->ld,
                       .seq_q = (size_t)L * b->ld, .seq_k = (size_t)L * b->ld,
                       .seq_v = (size_t)L * b->ld, .out = b->out, .ldo = b->ldo,
                       .seq_o = (size_t)s.Nq * b->ldo, .gain = s.gain ? b->g : NULL,
                       .ld_gain = HEADS, .seq_gain = (size_t)s.Nq * HEADS};
}

static void buf_free(buf *b) {
    free(b->qkv);
    free(b->g);
    free(b->out);
}

static void run(buf *b) {
    float *scratch = malloc(sizeof(float) * dmx__attn_scratch(&b->a) * HEADS);
    REQUIRE(scratch);
    dmx__attn_run(&b->a, scratch);
    free(scratch);
}

/* max |out - reference| / max |reference| over every head; padding checked */
static double check_ref(const buf *b, shape s, int *pad_ok) {
    double err = 0, mx = 0;
    double *p = malloc(sizeof(double) * (size_t)s.Nk);
    *pad_ok = 1;
    const dmx__attn *a = &b->a;
    for (int h = 0; h < HEADS; h++) {
        const size_t hd = (size_t)h * s.D; /* head h: its D columns of each row */
        for (int sq = 0; sq < s.nseq; sq++)
            for (int i = 0; i < s.Nq; i++) {
                const float *q = a->q + sq * a->seq_q + (size_t)i * a->ldq + hd;
                double m = -INFINITY, sum = 0;
                for (int j = 0; j < s.Nk; j++) {
                    const float *k = a->k + sq * a->seq_k + (size_t)j * a->ldk + hd;
                    double d = 0;
                    for (int c = 0; c < s.D; c++) d += (double)q[c] * k[c];
                    p[j] = d / sqrt((double)s.D);
                    m = fmax(m, p[j]);
                }
                for (int j = 0; j < s.Nk; j++) sum += (p[j] = exp(p[j] - m));
                double gn = a->gain ? a->gain[sq * a->seq_gain + (size_t)i * a->ld_gain + h] : 1.0;
                const float *o = a->out + sq * a->seq_o + (size_t)i * a->ldo + hd;
                for (int c = 0; c < s.D; c++) {
                    double r = 0;
                    for (int j = 0; j < s.Nk; j++)
                        r += p[j] * a->v[sq * a->seq_v + (size_t)j * a->ldv + hd + c];
                    r *= gn / sum;
                    err = fmax(err, fabs(r - o[c]));
                    mx = fmax(mx, fabs(r));
                }
            }
    }
    for (size_t r = 0; r < (size_t)s.nseq * s.Nq; r++)
        for (int c = HEADS * s.D; c < b->ldo; c++) *pad_ok &= b->out[r * b->ldo + c] == 12345.0f;
    free(p);
    return err / (mx > 0 ? mx : 1);
}

typedef struct teamjob {
    buf *b;
} teamjob;

static void *team_main(void *arg) {
    run(((teamjob *)arg)->b);
    return NULL;
}

int main(void) {
    dmx__blas_init();
    for (int i = 0; i < NS; i++) {
        const shape s = shapes[i];
        buf fused, gemm, team;
        buf_init(&fused, s, 11u + (unsigned)i);
        buf_init(&gemm, s, 11u + (unsigned)i);
        buf_init(&team, s, 11u + (unsigned)i);
        run(&fused);
        dmx__attn_set_fused(0);
        run(&gemm);
        dmx__attn_set_fused(1);
        /* one evaluation, two helper threads: heads shared out */
        teamjob tj = {&team};
        dmx__team_run(1, 3, team_main, &tj, sizeof tj);
        int pad_ok;
        double e1 = check_ref(&fused, s, &pad_ok);
        printf("nseq %d Nq %4d Nk %4d D %2d gain %d: fused error %.2e", s.nseq, s.Nq, s.Nk, s.D,
               s.gain, e1);
        CHECK_MSG(pad_ok, "shape %d: fused path wrote padding columns", i);
        const double tol = s.offset ? 3e-5 : 2e-6;
        CHECK_MSG(e1 < tol, "shape %d: fused error %g", i, e1);
        double e2 = check_ref(&gemm, s, &pad_ok);
        printf(", two-sgemm error %.2e\n", e2);
        CHECK_MSG(pad_ok, "shape %d: two-sgemm path wrote padding columns", i);
        CHECK_MSG(e2 < tol, "shape %d: two-sgemm error %g", i, e2);
        CHECK_MSG(!memcmp(fused.out, team.out, sizeof(float) * fused.nout),
                  "shape %d: heads on a team differ from heads alone", i);
        buf_free(&fused);
        buf_free(&gemm);
        buf_free(&team);
    }
    return dmx_test_done("test_attention");
}
