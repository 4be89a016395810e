/*
 * bench_forward.c - times one model evaluation (one segment) of a checkpoint,
 * in steady state (after a warm-up pass), with a per-layer breakdown taken
 * between the network's activation taps, and the sgemm peak of this machine
 * measured in the same run. Prints numbers; not a test.
 *
 * The evaluation runs as a lone segment does in a separation with
 * `threads` threads: single-threaded BLAS, the other threads helping with
 * its large matrix products (team.h). The peak is OpenBLAS's own
 * `threads`-threaded 2048^3 sgemm; the vector FMA peak (independent
 * multiply-adds in registers at the build's widest vectors, on `threads`
 * threads) is the CPU's, which OpenBLAS's kernels may not reach (its AVX2
 * kernels on an AVX-512 CPU reach half) and demix's own kernels (fused
 * attention) may pass the sgemm peak against. Fused attention is listed as
 * shape "attn" (M queries, N keys, K head dimension, 4 M N K FLOPs).
 *
 *   bench_forward MODEL.th [threads] [repeats]
 *
 * BENCH_SHAPES=N lists N product shapes instead of 20.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apply.h"
#include "gemm.h"
#include "demix/demix.h"
#include "net.h"
#include "ops.h"
#include "simd.h"
#include "team.h"
#include "threads.h"

#if defined(VW) && VW == 16
#define OWN_ISA "AVX-512"
#else
#define OWN_ISA "AVX2"
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* L1d (level 1) or L2 size in KiB, 0 where the C library cannot tell */
static long cache_kib(int level) {
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    return sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : _SC_LEVEL2_CACHE_SIZE) / 1024;
#else
    (void)level;
    return 0;
#endif
}

#define MAXT 64
static const char *names[MAXT];
static double times[MAXT];
static double mem_in_use[MAXT], mem_high[MAXT];
static double gflop[MAXT], gemm_s[MAXT];
static uint64_t last_flops;
static double last_gemm;
static dmx__arena ar;
static int ntaps;
static double last;

/* The matrix products since the previous tap. */
static void mark(int i) {
    uint64_t f = dmx__flop_count();
    double g = dmx__gemm_seconds();
    gflop[i] = (double)(f - last_flops) / 1e9;
    gemm_s[i] = g - last_gemm;
    last_flops = f, last_gemm = g;
}

static void tap(void *user, const char *name, const float *d, int c, int h, int w) {
    (void)user, (void)d, (void)c, (void)h, (void)w;
    double t = now();
    if (ntaps < MAXT) {
        names[ntaps] = name; /* string literals or a static buffer: copy */
        char *cp = malloc(strlen(name) + 1);
        strcpy(cp, name);
        names[ntaps] = cp;
        mem_in_use[ntaps] = ar.in_use / 1048576.0;
        mem_high[ntaps] = ar.high_water / 1048576.0;
        mark(ntaps);
        times[ntaps++] = t - last;
    }
    last = now();
}

/* A 2048^3 product on `threads` threads: OpenBLAS's own threads, or (own)
 * the engine's products (gemm.c or OpenBLAS, one thread each, the team
 * sharing a cut product's blocks as during a lone evaluation). */
typedef struct peak_job {
    const float *a, *b;
    float *c;
    int n;
} peak_job;

static void *peak_main(void *arg) {
    peak_job *j = arg;
    dmx__sgemm(0, 0, j->n, j->n, j->n, 1, j->a, j->n, j->b, j->n, 0, j->c, j->n);
    return NULL;
}

static double sgemm_peak(int threads, int own) {
    if (!own) openblas_set_num_threads(threads > 0 ? threads : 1);
    int n = 2048;
    float *a = calloc((size_t)n * n, 4), *b = calloc((size_t)n * n, 4), *c = calloc((size_t)n * n, 4);
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = b[i] = 1e-3f * (i % 7);
    /* the best of several products after two warm-ups: a peak, steadier
     * from run to run than an average that catches a slow moment */
    double dt = 1e9;
    peak_job j = {a, b, c, n};
    for (int r = 0; r < 9; r++) {
        double t0 = now();
        if (own)
            dmx__team_run(1, threads, peak_main, &j, sizeof j);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double d = now() - t0;
        if (r >= 2 && d < dt) dt = d;
    }
    free(a), free(b), free(c);
    if (!own) openblas_set_num_threads(1); /* back to what runs use */
    return 2.0 * n * n * n / dt / 1e9;
}

#ifdef V_FMA
#define FMA_CHAINS 12 /* independent accumulators: hide the FMA latency */
static void *fma_main(void *arg) {
    double *gflops = arg;
    vf acc[FMA_CHAINS], m = V_SET1(0.999999f), a = V_SET1(1e-7f);
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = V_SET1((float)i);
    const long iters = 20000000;
    double t0 = now();
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
        for (int i = 0; i < FMA_CHAINS; i++) acc[i] = V_FMA(acc[i], m, a);
    double dt = now() - t0;
    float sink = 0;
    for (int i = 0; i < FMA_CHAINS; i++) sink += v_hsum(acc[i]);
    *gflops = 2.0 * VW * FMA_CHAINS * (double)iters / dt / 1e9 + (sink == 12345.0f);
    return NULL;
}

/* Sum over `threads` threads running FMA chains side by side (best of 3). */
static double fma_peak(int threads) {
    double best = 0, g[MAXT];
    if (threads > MAXT) threads = MAXT;
    for (int r = 0; r < 3; r++) {
        dmx__team_run(threads, threads, fma_main, g, sizeof g[0]);
        double t = 0;
        for (int i = 0; i < threads; i++) t += g[i];
        if (t > best) best = t;
    }
    return best;
}
#endif

/* GFLOP of a profiled shape over all its calls */
static double shape_gflop(const dmx__gemm_stat *s) {
    double per = s->ta == DMX__FFN_SHAPE ? 2e-9 * s->M * s->N * ((double)s->K + s->tb)
                 : (s->ta == DMX__ATTN_SHAPE ? 4e-9 : 2e-9) * s->M * s->N * s->K;
    return per * (double)s->calls;
}

static const dmx__net *net;
static float *mix, *out;
static int n;
static dmx__tap_fn run_tap;

static void *forward_main(void *arg) {
    (void)arg;
    dmx__net_forward(net, &ar, mix, n, out, run_tap, NULL);
    dmx__arena_fit(&ar); /* as the stream workers do after each evaluation */
    return NULL;
}

/* One evaluation as a lone segment of a `threads`-thread run. */
static void run_forward(int threads, dmx__tap_fn t) {
    run_tap = t;
    char unused;
    dmx__team_run(1, threads, forward_main, &unused, 1);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_forward MODEL.th [threads] [repeats]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    int reps = argc > 3 ? atoi(argv[3]) : 2;
    if (threads < 1) threads = 1;
    dmx__blas_init();
    dmx_model *m;
    if (dmx_model_load(argv[1], &m) != DMX_OK) {
        fprintf(stderr, "load: %s\n", dmx_last_error());
        return 1;
    }
    net = m->members[0];
    n = (int)net->desc.training_length;
    int A = net->desc.audio_channels;
    mix = malloc(sizeof(float) * A * n), out = malloc(sizeof(float) * net->desc.n_sources * A * n);
    srand(1);
    for (int i = 0; i < A * n; i++) mix[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.2f;
    dmx__arena_init(&ar);
    run_forward(threads, NULL);
    /* Timed and measured runs go without taps, as separations do (with a
     * tap the last decoder keeps its whole output for inspection); one
     * tapped run then gives the per-stage breakdown. */
    double best = 1e9;
    uint64_t flops = 0;
    size_t arena_peak = 0;
    for (int r = 0; r < reps; r++) {
        ar.high_water = ar.in_use; /* peak of this run only */
        uint64_t f0 = dmx__flop_count();
        double t0 = now();
        run_forward(threads, NULL);
        double dt = now() - t0;
        flops = dmx__flop_count() - f0;
        if (dt < best) best = dt;
        arena_peak = ar.high_water;
    }
    ntaps = 0;
    ar.high_water = ar.in_use;
    static dmx__gemm_stat shapes[1024];
    dmx__gemm_profile_start();
    last_flops = dmx__flop_count(), last_gemm = dmx__gemm_seconds();
    last = now();
    run_forward(threads, tap);
    times[ntaps] = now() - last;
    mem_in_use[ntaps] = ar.in_use / 1048576.0;
    mem_high[ntaps] = ar.high_water / 1048576.0;
    mark(ntaps);
    names[ntaps++] = "istft+output";
    int nshapes = dmx__gemm_profile_stop(shapes, 1024);
    double peak_blas = sgemm_peak(threads, 0);
    /* the peak of the products the engine runs: its own kernels' where
     * gemm.c computes them */
    double peak = dmx__gemm_own() ? sgemm_peak(threads, 1) : peak_blas;
    printf("segment %.2f s of audio: %.3f s per evaluation (%.2fx realtime), arena %.0f MB peak (%.0f MB reserved)\n",
           (double)n / net->desc.samplerate, best, best / ((double)n / net->desc.samplerate),
           arena_peak / 1048576.0, dmx__arena_reserved(&ar) / 1048576.0);
    if (dmx__gemm_own()) {
        int kc, mc, nc;
        dmx__gemm_blocks(&kc, &mc, &nc);
        printf("sgemm peak (2048^3): %.1f GFLOP/s (demix's own %s kernels, blocks KC %d MC %d NC %d "
               "from L1d %ld KiB, L2 %ld KiB; OpenBLAS's %s kernels: %.1f)\n",
               peak, OWN_ISA, kc, mc, nc, cache_kib(1), cache_kib(2), dmx_blas_core(), peak_blas);
    }
    else
        printf("sgemm peak (2048^3): %.1f GFLOP/s (OpenBLAS %s kernels)\n", peak, dmx_blas_core());
#ifdef V_FMA
    double fpeak = fma_peak(threads);
    printf("vector FMA peak (%d-float vectors, %d thread%s): %.1f GFLOP/s; the sgemm peak is %.0f%% of it\n",
           VW, threads, threads > 1 ? "s" : "", fpeak, 100 * peak / fpeak);
#endif
    printf("length rule: %s\n", net->desc.fixed_segment ? "fixed" : "valid_length");
    printf("matrix products: %.1f GFLOP per evaluation, %.1f GFLOP/s achieved (%.0f%% of peak)\n",
           flops / 1e9, flops / 1e9 / best, 100.0 * flops / 1e9 / best / peak);
    printf("per stage (a tapped run; time since the previous tap; GFLOP of matrix products and their\n"
           "rate against the peak; 'other' is the time outside matrix products; arena MB in use after\n"
           "it / peak so far; the tapped run keeps the last decoder's whole output, so its peak is higher):\n");
    printf("  %-20s %8s %8s %8s %6s %8s %8s %8s\n", "stage", "time_s", "GFLOP", "GFLOP/s", "%peak",
           "other_s", "MB_used", "MB_peak");
    double tot_t = 0, tot_f = 0, tot_g = 0;
    for (int i = 0; i < ntaps; i++) {
        double rate = gemm_s[i] > 0 ? gflop[i] / gemm_s[i] : 0;
        printf("  %-20s %8.3f %8.1f %8.1f %6.0f %8.3f %8.0f %8.0f\n", names[i], times[i], gflop[i], rate,
               100 * rate / peak, times[i] - gemm_s[i], mem_in_use[i], mem_high[i]);
        tot_t += times[i], tot_f += gflop[i], tot_g += gemm_s[i];
    }
    printf("  %-20s %8.3f %8.1f %8.1f %6.0f %8.3f\n", "total", tot_t, tot_f, tot_f / tot_g,
           100 * tot_f / tot_g / peak, tot_t - tot_g);
    /* the shapes that lose the most time against the peak */
    for (int i = 0; i < nshapes; i++)
        for (int k = i + 1; k < nshapes; k++) {
            double li = shapes[i].seconds - shape_gflop(&shapes[i]) / peak;
            double lk = shapes[k].seconds - shape_gflop(&shapes[k]) / peak;
            if (lk > li) {
                dmx__gemm_stat t = shapes[i];
                shapes[i] = shapes[k], shapes[k] = t;
            }
        }
    printf("matrix product shapes losing the most time against the peak (op(A) MxK, op(B) KxN;\n"
           "'at tn': fused attention, M queries, N keys, K head dimension; 'dc nn': direct\n"
           "short convolution, M output channels, N output columns, K input channels x taps;\n"
           "'ff nn': feed-forward block, M tokens, N hidden width, K input width):\n");
    printf("  %2s %2s %6s %6s %6s %6s %8s %8s %6s %8s\n", "tA", "tB", "M", "N", "K", "calls", "time_s",
           "GFLOP/s", "%peak", "lost_s");
    const char *ns = getenv("BENCH_SHAPES");
    for (int i = 0; i < nshapes && i < (ns ? atoi(ns) : 20); i++) {
        double f = shape_gflop(&shapes[i]);
        char ta[8], tb[8];
        snprintf(ta, sizeof ta, "%d", shapes[i].ta);
        snprintf(tb, sizeof tb, "%d", shapes[i].tb);
        int attn = shapes[i].ta == DMX__ATTN_SHAPE, dc = shapes[i].ta == DMX__DIRCONV_SHAPE,
            ff = shapes[i].ta == DMX__FFN_SHAPE;
        printf("  %2s %2s %6d %6d %6d %6llu %8.3f %8.1f %6.0f %8.3f\n",
               attn ? "at" : dc ? "dc" : ff ? "ff" : ta, attn ? "tn" : dc || ff ? "nn" : tb,
               shapes[i].M, shapes[i].N, shapes[i].K, shapes[i].calls, shapes[i].seconds,
               f / shapes[i].seconds, 100 * f / shapes[i].seconds / peak, shapes[i].seconds - f / peak);
    }
    dmx__arena_free(&ar);
    dmx_model_free(m);
    free(mix);
    free(out);
    return 0;
}
