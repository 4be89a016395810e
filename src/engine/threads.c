/*
 * threads.c - how many threads the engine computes with (demix.h, threads).
 *
 * OpenBLAS 0.3.21 (Debian 12) has one thread count for the whole process
 * (openblas_set_num_threads; the per-thread variant came in 0.3.27), so a
 * run that set it would change the threads of every other run in the
 * process. The engine therefore sets it to 1 once, before its first
 * evaluation, and parallelises by running evaluations side by side; the
 * callers that run several jobs at once divide the CPUs with
 * dmx_threads_divide, the one rule for that.
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "demix/demix.h"
#include "threads.h"

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_single(void) { openblas_set_num_threads(1); }

void dmx__blas_init(void) { pthread_once(&blas_once, blas_single); }

int32_t dmx_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int32_t)n : 1;
}

dmx_thread_plan dmx_threads_divide(int32_t cpus, int32_t jobs, int32_t threads) {
    if (cpus < 1) cpus = 1;
    int32_t total = threads > 0 && threads < cpus ? threads : cpus;
    dmx_thread_plan p;
    p.jobs = jobs < 1 ? 1 : jobs > total ? total : jobs;
    p.threads_per_job = total / p.jobs;
    return p;
}
