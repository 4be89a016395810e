/*
 * bench_forward.c - times one model evaluation (one segment) of a checkpoint,
 * in steady state (after a warm-up pass), with a per-layer breakdown taken
 * between the network's activation taps, and the sgemm peak of this machine
 * measured in the same run. Prints numbers; not a test.
 *
 * The evaluation runs as a lone segment does in a separation with
 * `threads` threads: single-threaded BLAS, the other threads helping with
 * its large matrix products (team.h). The peak is OpenBLAS's own
 * `threads`-threaded 2048^3 sgemm.
 *
 *   bench_forward MODEL.th [threads] [repeats]
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apply.h"
#include "demix/demix.h"
#include "net.h"
#include "ops.h"
#include "team.h"
#include "threads.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define MAXT 64
static const char *names[MAXT];
static double times[MAXT];
static double mem_in_use[MAXT], mem_high[MAXT];
static dmx__arena ar;
static int ntaps;
static double last;

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
        times[ntaps++] = t - last;
    }
    last = now();
}

static double sgemm_peak(int threads) {
    openblas_set_num_threads(threads > 0 ? threads : 1);
    int n = 2048;
    float *a = calloc((size_t)n * n, 4), *b = calloc((size_t)n * n, 4), *c = calloc((size_t)n * n, 4);
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = b[i] = 1e-3f * (i % 7);
    /* the best of several products after two warm-ups: a peak, steadier
     * from run to run than an average that catches a slow moment */
    double dt = 1e9;
    for (int r = 0; r < 9; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double d = now() - t0;
        if (r >= 2 && d < dt) dt = d;
    }
    free(a), free(b), free(c);
    openblas_set_num_threads(1); /* back to what runs use */
    return 2.0 * n * n * n / dt / 1e9;
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
    last = now();
    run_forward(threads, tap);
    times[ntaps] = now() - last;
    mem_in_use[ntaps] = ar.in_use / 1048576.0;
    mem_high[ntaps] = ar.high_water / 1048576.0;
    names[ntaps++] = "istft+output";
    double peak = sgemm_peak(threads);
    printf("segment %.2f s of audio: %.3f s per evaluation (%.2fx realtime), arena %.0f MB peak (%.0f MB reserved)\n",
           (double)n / net->desc.samplerate, best, best / ((double)n / net->desc.samplerate),
           arena_peak / 1048576.0, dmx__arena_reserved(&ar) / 1048576.0);
    printf("sgemm peak (2048^3): %.1f GFLOP/s\n", peak);
    printf("length rule: %s\n", net->desc.fixed_segment ? "fixed" : "valid_length");
    printf("matrix products: %.1f GFLOP per evaluation, %.1f GFLOP/s achieved (%.0f%% of peak)\n",
           flops / 1e9, flops / 1e9 / best, 100.0 * flops / 1e9 / best / peak);
    printf("per stage (a tapped run; time since the previous tap; arena MB in use after it / peak so\n"
           "so far; the tapped run keeps the last decoder's whole output, so its peak is higher):\n");
    for (int i = 0; i < ntaps; i++)
        printf("  %-20s %8.3f s %8.0f %8.0f\n", names[i], times[i], mem_in_use[i], mem_high[i]);
    dmx__arena_free(&ar);
    dmx_model_free(m);
    free(mix);
    free(out);
    return 0;
}
