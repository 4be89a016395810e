/*
 * team.c - threads evaluating segments, idle threads helping the busy ones
 * with their matrix products (see team.h).
 *
 * Large products are always cut the same way (team.h), with or without
 * helpers. A team is a list of posted jobs guarded by one mutex: a thread
 * whose sgemm is cut (or which calls dmx__team_for) posts a job (parts, next
 * part to take, parts finished), takes parts itself and waits until every
 * part is finished; helpers sleep on `work` until a job with parts left is
 * posted. The thread-local `mine` says which team (if any) the current
 * thread's products may use.
 *
 * Two ways to run a team: dmx__team_run, one batch on threads started for
 * it (the threads beyond the batch are a pool given no task: they only
 * help); and a pool, threads that live as long
 * as their owner and take whole tasks from a queue, helping with the posted
 * products whenever no task is queued. The pool's threads check the queue
 * before each part, so a task never waits for more than one part.
 */
#include "team.h"

#include "gemm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define MAX_THREADS 64
/* Products below this many multiply-adds run uncut (a wake-up costs ~10 us). */
#define MIN_CUT_MACS (4L << 20)
/* A product is cut into at most PARTS blocks along its longer side, none
 * narrower than MIN_BLOCK (multiples of the kernels' 16): enough parts to
 * balance a few threads. With gemm.c's own kernels the operand every part
 * needs whole is packed once for all of them (gemm.h); with OpenBLAS each
 * part re-packs it, which the part count keeps a small cost. */
#define PARTS     8
#define MIN_BLOCK 256

typedef struct product {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int by_cols, block; /* cut along N (else M) into blocks of `block` */
    const float *shared; /* the operand every part uses whole (B when cut
                          * along M, else A), packed once; or NULL */
    const dmx__gemm_epi *epi; /* the whole product's epilogue, or NULL */
} product;

/* Work posted to a team: run(ctx, i) for every part i < parts. */
typedef struct job {
    void (*run)(void *ctx, int i);
    void *ctx;
    int parts;
    int next, finished; /* guarded by the team's lock */
    struct job *link;
} job;

typedef struct team {
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    job *posted; /* jobs with parts not yet taken */
    int stop;
} team;

/* A pool's queue of whole tasks: a ring of QCAP. */
#define QCAP 64
typedef struct task {
    void (*fn)(void *);
    void *arg;
} task;

struct dmx__pool {
    team t; /* first: its lock guards the queue and the counts too */
    pthread_cond_t fin;
    task q[QCAP];
    int q_head, q_len;
    unsigned long long finished; /* tasks that have returned */
    int n;
    pthread_t tid[];
};

static _Thread_local team *mine;
static atomic_ullong helped; /* parts computed by helpers, ever */

unsigned long long dmx__team_helped(void) { return atomic_load(&helped); }

static void run_part(void *ctx, int i) {
    const product *p = ctx;
    int lo = i * p->block, n = p->block;
    int len = p->by_cols ? p->N : p->M;
    if (lo + n > len) n = len - lo;
    const float *A = p->A, *B = p->B;
    float *C = p->C;
    int M = p->M, N = p->N;
    dmx__gemm_epi e, *epi = NULL;
    if (p->epi) { /* the part's own rows or columns of the bias */
        e = *p->epi;
        epi = &e;
    }
    if (p->by_cols) {
        B += p->tb ? (size_t)lo * p->ldb : (size_t)lo;
        C += lo;
        N = n;
        if (epi && e.col_bias) e.col_bias += lo;
    } else {
        A += p->ta ? (size_t)lo : (size_t)lo * p->lda;
        C += (size_t)lo * p->ldc;
        M = n;
        if (epi && e.row_bias) e.row_bias += lo;
    }
    dmx__gemm_packed(p->ta, p->tb, M, N, p->K, p->alpha, A, p->lda, p->by_cols ? p->shared : NULL,
                     B, p->ldb, p->by_cols ? NULL : p->shared, p->beta, C, p->ldc, epi);
}

/* Takes the next part of the first posted job (lock held); -1 if none. */
static int take(team *t, job **out) {
    job *p = t->posted;
    if (!p) return -1;
    int i = p->next++;
    if (p->next == p->parts) t->posted = p->link; /* every part taken */
    *out = p;
    return i;
}

static void finish(team *t, job *p) {
    if (++p->finished == p->parts) pthread_cond_broadcast(&t->done);
}

/* Runs every part of `p`: on the calling thread alone without a team,
 * else posted for the helpers while the caller takes parts too. */
static void run_job(job *p) {
    team *t = mine;
    if (!t) {
        for (int i = 0; i < p->parts; i++) p->run(p->ctx, i);
        return;
    }
    pthread_mutex_lock(&t->lock);
    job **end = &t->posted;
    while (*end) end = &(*end)->link;
    *end = p;
    pthread_cond_broadcast(&t->work);
    /* take parts of this job (others' parts are left to the helpers) */
    while (p->next < p->parts) {
        int i = p->next++;
        if (p->next == p->parts) { /* unlink it: every part taken */
            job **q = &t->posted;
            while (*q != p) q = &(*q)->link;
            *q = p->link;
        }
        pthread_mutex_unlock(&t->lock);
        p->run(p->ctx, i);
        pthread_mutex_lock(&t->lock);
        finish(t, p);
    }
    while (p->finished < p->parts) pthread_cond_wait(&t->done, &t->lock);
    pthread_mutex_unlock(&t->lock);
}

void dmx__team_for(int n, void (*fn)(void *ctx, int i), void *ctx) {
    if (n < 1) return;
    job j = {fn, ctx, n, 0, 0, NULL};
    run_job(&j);
}

int dmx__team_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc,
                    const dmx__gemm_epi *epi) {
    /* The cut depends on the shape only, never on the team: each element is
     * computed by the same single-threaded call whoever runs it, so results
     * do not depend on the thread count. */
    const int by_cols = N >= M;
    const int len = by_cols ? N : M;
    if ((long)M * N * K < MIN_CUT_MACS || len < 2 * MIN_BLOCK) return 0;
    int block = ((len + PARTS - 1) / PARTS + 15) / 16 * 16;
    if (block < MIN_BLOCK) block = MIN_BLOCK;
    /* the operand every part needs whole is packed once, not by each part */
    const float *shared = by_cols ? dmx__gemm_pack(DMX__GEMM_A, ta, M, K, A, lda)
                                  : dmx__gemm_pack(DMX__GEMM_B, tb, N, K, B, ldb);
    product p = {ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C, by_cols, block, shared, epi};
    job j = {run_part, &p, (len + block - 1) / block, 0, 0, NULL};
    run_job(&j);
    return 1;
}

/* ------------------------------------------------------------------ pool */

static void *pool_main(void *arg) {
    dmx__pool *p = arg;
    team *t = &p->t;
    mine = t;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        if (p->q_len > 0) { /* a whole task first */
            task k = p->q[p->q_head];
            p->q_head = (p->q_head + 1) % QCAP;
            p->q_len--;
            pthread_mutex_unlock(&t->lock);
            k.fn(k.arg);
            pthread_mutex_lock(&t->lock);
            p->finished++;
            pthread_cond_broadcast(&p->fin);
            continue;
        }
        job *j;
        int i = take(t, &j);
        if (i >= 0) { /* else a part of a busy thread's product */
            pthread_mutex_unlock(&t->lock);
            j->run(j->ctx, i);
            atomic_fetch_add_explicit(&helped, 1, memory_order_relaxed);
            pthread_mutex_lock(&t->lock);
            finish(t, j);
            continue;
        }
        if (t->stop) break;
        pthread_cond_wait(&t->work, &t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    mine = NULL;
    return NULL;
}

dmx__pool *dmx__pool_start(int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    dmx__pool *p = calloc(1, sizeof *p + sizeof(pthread_t) * (size_t)threads);
    if (!p) return NULL;
    pthread_mutex_init(&p->t.lock, NULL);
    pthread_cond_init(&p->t.work, NULL);
    pthread_cond_init(&p->t.done, NULL);
    pthread_cond_init(&p->fin, NULL);
    for (; p->n < threads; p->n++)
        if (pthread_create(&p->tid[p->n], NULL, pool_main, p) != 0) break;
    if (p->n == 0) {
        dmx__pool_stop(p);
        return NULL;
    }
    return p;
}

int dmx__pool_threads(const dmx__pool *p) { return p->n; }

int dmx__pool_submit(dmx__pool *p, void (*fn)(void *), void *arg) {
    pthread_mutex_lock(&p->t.lock);
    int ok = p->q_len < QCAP;
    if (ok) {
        p->q[(p->q_head + p->q_len) % QCAP] = (task){fn, arg};
        p->q_len++;
        pthread_cond_broadcast(&p->t.work);
    }
    pthread_mutex_unlock(&p->t.lock);
    return ok ? 0 : -1;
}

unsigned long long dmx__pool_finished(dmx__pool *p) {
    pthread_mutex_lock(&p->t.lock);
    unsigned long long f = p->finished;
    pthread_mutex_unlock(&p->t.lock);
    return f;
}

unsigned long long dmx__pool_wait(dmx__pool *p, unsigned long long seen) {
    pthread_mutex_lock(&p->t.lock);
    while (p->finished == seen) pthread_cond_wait(&p->fin, &p->t.lock);
    unsigned long long f = p->finished;
    pthread_mutex_unlock(&p->t.lock);
    return f;
}

void dmx__pool_stop(dmx__pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->t.lock);
    p->t.stop = 1; /* the threads leave once the queue and the parts are done */
    pthread_cond_broadcast(&p->t.work);
    pthread_mutex_unlock(&p->t.lock);
    for (int i = 0; i < p->n; i++) pthread_join(p->tid[i], NULL);
    pthread_cond_destroy(&p->fin);
    pthread_cond_destroy(&p->t.done);
    pthread_cond_destroy(&p->t.work);
    pthread_mutex_destroy(&p->t.lock);
    free(p);
}

/* ----------------------------------------------------------------- batch */

typedef struct runner {
    void *(*fn)(void *);
    void *arg;
    team *t;
} runner;

static void *runner_main(void *arg) {
    runner *r = arg;
    mine = r->t;
    r->fn(r->arg);
    mine = NULL;
    return NULL;
}

void dmx__team_run(int n, int threads, void *(*fn)(void *), void *args, size_t size) {
    if (n < 1) return;
    if (n > MAX_THREADS) n = MAX_THREADS;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    /* the threads beyond n: a pool given no task, so they only help */
    dmx__pool *helpers = threads > n ? dmx__pool_start(threads - n) : NULL;
    runner r[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 0; i < n; i++)
        r[i] = (runner){fn, (char *)args + (size_t)i * size, helpers ? &helpers->t : NULL};
    for (int i = 1; i < n; i++) started[i] = pthread_create(&tid[i], NULL, runner_main, &r[i]) == 0;
    runner_main(&r[0]);
    for (int i = 1; i < n; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            runner_main(&r[i]); /* no thread to be had: run it here */
    }
    dmx__pool_stop(helpers);
}
