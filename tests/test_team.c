/*
 * test_team.c - team.c: a batch smaller than the thread count lends its idle
 * threads to the busy ones' matrix products.
 *   - products of every transpose combination, cut along N or M, with
 *     leading dimensions wider than the matrices and beta != 0, equal the
 *     uncut cblas product (within rounding) and leave the padding untouched;
 *   - the result with helpers is bit-identical to the result without them
 *     (the cut depends on the shape only), and helpers really computed parts
 *     (runs repeated until one did: on a loaded machine the caller can finish
 *     every part before a helper wakes);
 *   - a batch of several jobs with more threads than jobs runs each once;
 *   - a pool runs every task it is given once, counts them finished, and
 *     its idle threads take parts of a busy one's products (bit-identical
 *     to the products alone); stopping it waits for queued tasks;
 *   - a direct short convolution (dirconv.h) and a Winograd one
 *     (winograd.h), cut into parts, give the same result bit for bit with
 *     helpers as alone, and helpers took parts.
 * The reference is OpenBLAS uncut; the parts run on gemm.c's own kernels
 * where the build has them.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dirconv.h"
#include "ops.h"
#include "team.h"
#include "winograd.h"
#include "testutil.h"
#include "threads.h"

typedef struct shape {
    int M, N, K, ta, tb;
} shape;

static const shape shapes[] = {
    {48, 3001, 96, 0, 0},  {48, 3001, 96, 0, 1},  {48, 3001, 96, 1, 0},  {48, 3001, 96, 1, 1},
    {1537, 200, 64, 0, 0}, {1537, 200, 64, 1, 1}, {1537, 200, 64, 1, 0}, {1537, 200, 64, 0, 1},
    {9, 1536, 384, 0, 1},  {700, 700, 40, 0, 0},  {16, 16, 16, 0, 0}, /* too small: uncut */
};
#define NS  (int)(sizeof shapes / sizeof shapes[0])
#define PAD 5 /* extra columns of every matrix: ld = cols + PAD */

/* Runs with helpers are repeated until one of them took a part, for up to
 * TRY_SECONDS (a loaded machine can keep helpers asleep for many runs). */
#define TRY_SECONDS 30.0

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct prod {
    shape s;
    float *A, *B, *C; /* inputs and the result of dmx__sgemm */
    int lda, ldb, ldc;
} prod;

static float frand(unsigned *st) {
    *st = *st * 1664525u + 1013904223u;
    return (float)((*st >> 8) & 0xffff) / 65536.0f - 0.5f;
}

static void prod_init(prod *p, shape s, unsigned seed) {
    p->s = s;
    int ar = s.ta ? s.K : s.M, ac = s.ta ? s.M : s.K;
    int br = s.tb ? s.N : s.K, bc = s.tb ? s.K : s.N;
    p->lda = ac + PAD, p->ldb = bc + PAD, p->ldc = s.N + PAD;
    p->A = malloc(sizeof(float) * (size_t)ar * p->lda);
    p->B = malloc(sizeof(float) * (size_t)br * p->ldb);
    p->C = malloc(sizeof(float) * (size_t)s.M * p->ldc);
    for (size_t i = 0; i < (size_t)ar * p->lda; i++) p->A[i] = frand(&seed);
    for (size_t i = 0; i < (size_t)br * p->ldb; i++) p->B[i] = frand(&seed);
    for (size_t i = 0; i < (size_t)s.M * p->ldc; i++) p->C[i] = frand(&seed);
}

static void prod_free(prod *p) {
    free(p->A);
    free(p->B);
    free(p->C);
}

static void prod_run(prod *p) {
    dmx__sgemm(p->s.ta, p->s.tb, p->s.M, p->s.N, p->s.K, 0.5f, p->A, p->lda, p->B, p->ldb, 0.25f,
               p->C, p->ldc);
}

typedef struct job {
    prod *p;
    int n;
    int runs;
} job;

static void *job_main(void *arg) {
    job *j = arg;
    for (int i = 0; i < j->n; i++) prod_run(&j->p[i]);
    j->runs++;
    return NULL;
}

typedef struct conv_job {
    dmx__conv_geom g;
    int H, W, rc;
    const float *x, *w, *b;
    float *y;
} conv_job;

static void *conv_main(void *arg) {
    conv_job *j = arg;
    dmx__arena ar;
    dmx__arena_init(&ar);
    j->rc = dmx__conv2d(&ar, &j->g, j->x, j->H, j->W, j->w, j->b, j->y);
    dmx__arena_free(&ar);
    return NULL;
}

/* conv2d of geometry g on (cin, H, W), alone and with two helpers: the
 * same result bit for bit, and (when `fast` says the geometry takes the
 * path whose parts go to helpers) a helper took a part. */
static void check_conv(const char *name, const dmx__conv_geom g, int H, int W, int fast) {
    const int Ho = dmx__conv_out(H, g.kh, g.sh, g.ph, g.dh),
              Wo = dmx__conv_out(W, g.kw, g.sw, g.pw, g.dw);
    const size_t nx = (size_t)g.cin * H * W, nw = (size_t)g.cout * g.cin * g.kh * g.kw,
                 ny = (size_t)g.cout * Ho * Wo;
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw),
          *b = malloc(sizeof(float) * g.cout), *y1 = malloc(sizeof(float) * ny),
          *y2 = malloc(sizeof(float) * ny);
    REQUIRE(x && w && b && y1 && y2);
    unsigned st = 5;
    for (size_t i = 0; i < nx; i++) x[i] = 2.0f * frand(&st);
    for (size_t i = 0; i < nw; i++) w[i] = 2.0f * frand(&st);
    for (int i = 0; i < g.cout; i++) b[i] = 0.1f * (float)i;
    conv_job alone = {g, H, W, -1, x, w, b, y1};
    dmx__team_run(1, 1, conv_main, &alone, sizeof alone);
    CHECK(alone.rc == 0);
    /* On a loaded machine the caller may finish every part before a helper
     * wakes: run again (each run checked) until a helper took a part. */
    const unsigned long long h0 = dmx__team_helped();
    const double t0 = now_s();
    int runs = 0;
    do {
        conv_job helped = {g, H, W, -1, x, w, b, y2};
        memset(y2, 0xff, sizeof(float) * ny);
        dmx__team_run(1, 3, conv_main, &helped, sizeof helped);
        CHECK(helped.rc == 0);
        CHECK_MSG(!memcmp(y1, y2, sizeof(float) * ny), "%s: helpers changed the result (run %d)",
                  name, runs);
    } while (++runs && now_s() - t0 < TRY_SECONDS && fast && dmx__team_helped() == h0);
    if (fast) {
        CHECK_MSG(dmx__team_helped() > h0, "%s: no part ran on a helper in %d runs", name, runs);
        printf("%s: parts computed by helpers: %llu (in %d runs)\n", name, dmx__team_helped() - h0,
               runs);
    }
    free(x), free(w), free(b), free(y1), free(y2);
}

static void check_convs(void) {
    /* direct short convolution (dirconv.h): kernel 3 along W, 12 outputs */
    const dmx__conv_geom dc = {96, 12, 1, 3, 1, 1, 0, 2, 1, 2};
    check_conv("direct convolution", dc, 40, 300, dmx__dirconv_use(&dc, 40, 300));
    /* Winograd (winograd.h): channel counts not multiples of the 8 parts,
     * odd sizes; then products large enough to be cut themselves (a part
     * posting a nested job to the same team) */
    const dmx__conv_geom wg = {44, 36, 3, 3, 1, 1, 1, 1, 1, 1};
    check_conv("Winograd convolution", wg, 31, 45, dmx__wino_use(&wg, 31, 45));
    const dmx__conv_geom wl = {128, 128, 3, 3, 1, 1, 1, 1, 1, 1};
    check_conv("Winograd convolution, cut products", wl, 32, 64, dmx__wino_use(&wl, 32, 64));
}

static void task_main(void *arg) { job_main(arg); }

/* A pool of 3: one task with products leaves two threads idle to help; then
 * more tasks than threads; then a stop right after queueing. */
static void check_pool(prod *solo) {
    prod mine[NS];
    dmx__pool *p = dmx__pool_start(3);
    REQUIRE(p && dmx__pool_threads(p) == 3);
    const unsigned long long h0 = dmx__team_helped();
    const double t0 = now_s();
    unsigned long long seen = dmx__pool_finished(p);
    CHECK(seen == 0);
    int runs = 0;
    do {
        for (int i = 0; i < NS; i++) prod_init(&mine[i], shapes[i], 7u + (unsigned)i);
        job j = {mine, NS, 0};
        REQUIRE(dmx__pool_submit(p, task_main, &j) == 0);
        seen = dmx__pool_wait(p, seen);
        CHECK(j.runs == 1);
        for (int i = 0; i < NS; i++) {
            CHECK_MSG(!memcmp(mine[i].C, solo[i].C, sizeof(float) * (size_t)shapes[i].M * mine[i].ldc),
                      "pool: shape %d differs from the product alone", i);
            prod_free(&mine[i]);
        }
    } while (++runs && now_s() - t0 < TRY_SECONDS && dmx__team_helped() == h0);
    CHECK(seen == (unsigned long long)runs);
    CHECK_MSG(dmx__team_helped() > h0, "pool: no part was computed by an idle thread in %d runs",
              runs);
    /* more tasks than threads: each runs once, all are counted */
    job none[7];
    for (int i = 0; i < 7; i++) {
        none[i] = (job){solo, 0, 0};
        REQUIRE(dmx__pool_submit(p, task_main, &none[i]) == 0);
    }
    while (seen < (unsigned long long)runs + 7) seen = dmx__pool_wait(p, seen);
    CHECK(seen == (unsigned long long)runs + 7);
    for (int i = 0; i < 7; i++) CHECK(none[i].runs == 1);
    /* stop right after queueing: the queued tasks still run */
    for (int i = 0; i < 7; i++) REQUIRE(dmx__pool_submit(p, task_main, &none[i]) == 0);
    dmx__pool_stop(p);
    for (int i = 0; i < 7; i++) CHECK(none[i].runs == 2);
}

int main(void) {
    /* parts go through gemm.c's own kernels where the build has them (also
     * under AddressSanitizer, which otherwise uses OpenBLAS) */
    setenv("DEMIX_GEMM", "own", 1);
    dmx__blas_init(); /* single-threaded BLAS, as in every run */
    prod solo[NS], team[NS];
    for (int i = 0; i < NS; i++) {
        prod_init(&solo[i], shapes[i], 7u + (unsigned)i);
        prod_init(&team[i], shapes[i], 7u + (unsigned)i);
    }
    /* the reference: one uncut cblas call on a copy of C */
    float *ref[NS];
    for (int i = 0; i < NS; i++) {
        prod *p = &solo[i];
        size_t nc = (size_t)p->s.M * p->ldc;
        ref[i] = malloc(sizeof(float) * nc);
        memcpy(ref[i], p->C, sizeof(float) * nc);
        cblas_sgemm(CblasRowMajor, p->s.ta ? CblasTrans : CblasNoTrans,
                    p->s.tb ? CblasTrans : CblasNoTrans, p->s.M, p->s.N, p->s.K, 0.5f, p->A, p->lda,
                    p->B, p->ldb, 0.25f, ref[i], p->ldc);
    }
    job js = {solo, NS, 0};
    dmx__team_run(1, 1, job_main, &js, sizeof js); /* no helpers */
    CHECK(js.runs == 1);
    /* one job, two helpers; on a loaded machine the caller may compute every
     * part before a helper wakes, so run afresh until a helper took one */
    const unsigned long long h0 = dmx__team_helped();
    const double t0 = now_s();
    int runs = 0;
    do {
        if (runs)
            for (int i = 0; i < NS; i++) {
                prod_free(&team[i]);
                prod_init(&team[i], shapes[i], 7u + (unsigned)i);
            }
        job jt = {team, NS, 0};
        dmx__team_run(1, 3, job_main, &jt, sizeof jt);
        CHECK(jt.runs == 1);
    } while (++runs && now_s() - t0 < TRY_SECONDS && dmx__team_helped() == h0);
    const unsigned long long helped = dmx__team_helped() - h0;
    CHECK_MSG(helped > 0, "no part was computed by a helper in %d runs", runs);
    printf("parts computed by helpers: %llu (in %d runs)\n", helped, runs);
    for (int i = 0; i < NS; i++) {
        const shape s = shapes[i];
        size_t nc = (size_t)s.M * solo[i].ldc;
        CHECK_MSG(!memcmp(solo[i].C, team[i].C, sizeof(float) * nc),
                  "shape %d (M %d N %d K %d ta %d tb %d): helpers changed the result", i, s.M, s.N,
                  s.K, s.ta, s.tb);
        double err = 0, mx = 0;
        int pad_ok = 1;
        for (int r = 0; r < s.M; r++)
            for (int c = 0; c < solo[i].ldc; c++) {
                size_t k = (size_t)r * solo[i].ldc + c;
                if (c >= s.N) {
                    pad_ok &= ref[i][k] == solo[i].C[k];
                    continue;
                }
                err = fmax(err, fabs((double)ref[i][k] - solo[i].C[k]));
                mx = fmax(mx, fabs((double)ref[i][k]));
            }
        CHECK_MSG(pad_ok, "shape %d: columns beyond N written", i);
        CHECK_MSG(err <= 1e-5 * mx, "shape %d: max error %g (max %g) against the uncut product", i,
                  err, mx);
    }
    check_convs();
    check_pool(solo);
    /* several jobs, more threads than jobs: each job runs exactly once */
    job many[3] = {{team, 2, 0}, {team + 2, 2, 0}, {team + 4, 2, 0}};
    dmx__team_run(3, 5, job_main, many, sizeof many[0]);
    CHECK(many[0].runs == 1 && many[1].runs == 1 && many[2].runs == 1);
    for (int i = 0; i < NS; i++) {
        prod_free(&solo[i]);
        prod_free(&team[i]);
        free(ref[i]);
    }
    return dmx_test_done("test_team");
}
