/*
 * team.h - internal: runs segment evaluations on threads (a batch, or a
 * pool that takes them one by one), and lets idle threads share the matrix
 * products of the busy ones.
 *
 * A run with T threads evaluates up to T segments at once, one per thread,
 * with single-threaded BLAS (threads.c). A batch of n < T evaluations (a
 * song of one segment, the last batch of a song) would leave T - n cores
 * idle; dmx__team_run starts them as helpers instead: a large enough
 * dmx__sgemm of a busy thread is cut into column (or row) blocks that the
 * helpers and the caller compute side by side. OpenBLAS's kernels round a
 * block's elements differently depending on where the block boundaries
 * fall, so products are cut by their shape alone, with or without helpers:
 * each element is computed by the same single-threaded call whoever runs
 * it, and results do not depend on the thread count.
 *
 * Leaf module: knows nothing of models or streams.
 */
#ifndef DMX_ENGINE_TEAM_H
#define DMX_ENGINE_TEAM_H

#include "gemm.h"

#include <stddef.h>

/* Runs fn(args + i * size) for i < n, each on its own thread (the caller's
 * thread runs i = 0), and returns when all have returned. With threads > n,
 * threads - n more threads serve as matrix-product helpers meanwhile. If a
 * thread cannot be created its work runs on the caller's thread. */
void dmx__team_run(int n, int threads, void *(*fn)(void *), void *args, size_t size);

/* A pool: `threads` threads that live until dmx__pool_stop, each running
 * whole tasks from a queue (first come, first served) and, while none is
 * queued, parts of the products the busy ones cut (as dmx__team_run's
 * helpers). For a stream of evaluations that should not wait for each
 * other: the owner submits a task whenever a thread is free and waits for
 * any to finish. Results do not depend on which thread ran what.
 * dmx__pool_start returns NULL when no thread can be started. */
typedef struct dmx__pool dmx__pool;
dmx__pool *dmx__pool_start(int threads);
int dmx__pool_threads(const dmx__pool *p); /* threads started (<= asked) */
/* Queues fn(arg); -1 when the queue (64 tasks) is full. */
int dmx__pool_submit(dmx__pool *p, void (*fn)(void *), void *arg);
/* Tasks that have returned so far; dmx__pool_wait blocks until that count
 * differs from `seen` and returns it. A task's writes are visible to the
 * caller once the count includes it. */
unsigned long long dmx__pool_finished(dmx__pool *p);
unsigned long long dmx__pool_wait(dmx__pool *p, unsigned long long seen);
/* Waits for every queued task, then ends the threads and frees the pool
 * (NULL: nothing). */
void dmx__pool_stop(dmx__pool *p);

/* Called by dmx__sgemm (ops.c): a product large enough is computed in
 * blocks (on the calling thread's team, if it has one) and 1 returned; 0
 * for one too small to cut, which the caller computes whole. epi: gemm.h's
 * epilogue (NULL: none), each block given its part of the bias. */
int dmx__team_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc,
                    const dmx__gemm_epi *epi);

/* Runs fn(ctx, i) for every i < n and returns when all have returned: on
 * the calling thread's team if it has one (helpers take parts), else on the
 * calling thread in order. Parts must not depend on which thread runs them
 * or in what order. */
void dmx__team_for(int n, void (*fn)(void *ctx, int i), void *ctx);

/* Part p of `parts` nearly equal shares of [0, n) (for dmx__team_for's
 * parts): [*lo, *hi). */
static inline void dmx__team_share(int n, int parts, int p, int *lo, int *hi) {
    *lo = (int)((long)n * p / parts);
    *hi = (int)((long)n * (p + 1) / parts);
}

/* Parts computed by helper threads since the process started (tests). */
unsigned long long dmx__team_helped(void);

#endif
