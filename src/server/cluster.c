/*
 * cluster.c - the clustered mode of `demix serve` / `demix worker`: the
 * job queue is the jobs table of a shared PostgreSQL database
 * (store.h: srv__cluster_vt), so any number of API nodes and worker nodes
 * on one database and one shared data folder share the work.
 *
 *   submit   an API node commits a queued row (its input already in the
 *            shared data folder) and NOTIFYs demix_jobs in one statement.
 *   take     a worker thread claims the oldest queued row (created, then
 *            id) with FOR UPDATE SKIP LOCKED, so two workers never get the
 *            same job; the claim sets worker_id, attempts + 1 and a lease
 *            (--lease-seconds). Idle workers sleep on a condition variable
 *            that the listener thread broadcasts on each NOTIFY; the sleep
 *            times out after --poll-seconds (the fallback when a
 *            notification is lost, e.g. across a reconnection).
 *   heartbeat  one thread per node, every --heartbeat-seconds: renews the
 *            lease of each job this node runs (and records its progress);
 *            a renewal the database refuses means the job was deleted
 *            (DELETE on any API node) or re-queued after the lease expired:
 *            the run is cancelled through the engine's flag. It also
 *            upserts this node's row in the workers table (when it runs
 *            workers), re-queues every expired lease it finds (not within
 *            a lease of its own last failed call: after an outage the
 *            workers get that long to renew; bounded by
 *            --max-attempts, then failed "lease expired N times (worker
 *            lost)"), refreshes the cluster gauges for /metrics, and, in one
 *            node at a time (pg_try_advisory_lock), runs the janitor: TTL,
 *            history cap and the sweep of folders no row owns.
 *   finish   the final write is conditional on (worker_id, attempts): a
 *            worker whose lease was taken over writes nothing, so a job
 *            finishes exactly once. A write the database cannot take now
 *            is retried with backoff (the job's result is on disk; if the
 *            process dies meanwhile the lease expires and it runs again).
 *
 * The database going away: claims, renewals and writes fail, workers back
 * off and /readyz says not ready; nothing is lost: an accepted job is a
 * committed row, and a lease that could not be renewed only risks a re-run.
 *
 * Jobs here are objects of their own (refs 1, owned by the caller) made
 * from rows; nothing is cached between requests, so every node answers the
 * same. queue.c calls in here in the clustered mode; this file calls the
 * store, artifacts.c, metrics and the log, never back into queue.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "artifacts.h"
#include "jobs_int.h"
#include "store.h"

/* The advisory lock key of the janitor (any constant of ours). */
#define JANITOR_LOCK_KEY 7314003L

static const srv__cluster_vt *cv; /* NULL: not clustered */
static char node_id[96];
static char host[64];

static pthread_mutex_t cl_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER; /* takers sleep here */
static pthread_cond_t tick_cv = PTHREAD_COND_INITIALIZER; /* the helper threads sleep here */
static int stopping, stopped;
static unsigned long wake_gen; /* bumped by each wake-up */
static srv__cluster_stats stats;
static int stats_ok;
static int n_workers;

/* Jobs this node runs: the heartbeat renews their leases. */
#define MAX_RUNNING 256
typedef struct running {
    srv_job *j;
    unsigned long seq; /* this run's number: a finished job's memory may be
                          reused by the next one, its number is not */
    double progress;
    int lost;
    int finishing; /* its final write is under way: a renewal that finds
                      the row finished is this node's own write */
} running;
static running run_v[MAX_RUNNING];
static int n_run;
static unsigned long run_seq;

/* Tests only (tests/server/cluster.sh): DEMIX_TEST_RENEW_DELAY seconds
 * between the heartbeat's list of running jobs and its renewals, so that a
 * job ends, and the next one starts, inside that window. Read at start. */
static double test_renew_delay;

static pthread_t hb_thread, listen_thread;
static int hb_started, listen_started;

static double mono(void) { return srv_now(); }

/* cl_lock held: waits on cv until the monotonic deadline or a signal. */
static void wait_until(pthread_cond_t *c, double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + seconds;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(c, &cl_lock, &ts);
}

int srv__cluster_open(void) {
    cv = srv__store_cluster();
    return cv != NULL;
}

int srv__cluster_on(void) { return cv != NULL; }

const char *srv__cluster_node_id(void) { return node_id; }

/* ---- the API side ------------------------------------------------------------------- */

int srv__cluster_submit(srv_job *j, srv_error *why) {
    pthread_mutex_lock(&cl_lock);
    int full = stats_ok && stats.queued >= srv_cfg.queue_max;
    int stop = stopping;
    pthread_mutex_unlock(&cl_lock);
    if (stop || full) {
        *why = stop ? SRV_E_SHUTTING_DOWN : SRV_E_QUEUE_FULL;
        return -1;
    }
    int rc = cv->submit(j);
    if (rc < 0) {
        *why = rc == SRV_STORE_FULL ? SRV_E_INSUFFICIENT_STORAGE : SRV_E_STORE_UNAVAILABLE;
        return -1;
    }
    pthread_mutex_lock(&cl_lock);
    stats.queued++; /* until the next refresh */
    wake_gen++;
    pthread_cond_broadcast(&work_cv); /* local workers need not wait for the NOTIFY */
    pthread_mutex_unlock(&cl_lock);
    return 0;
}

/* A row as a job of ours (paths set), or NULL. */
static srv_job *adopt(srv_job *j) {
    if (!j) return NULL;
    j->refs = 1;
    if (srv_artifact_paths(j) < 0) {
        srv__job_free(j);
        return NULL;
    }
    return j;
}

srv_job *srv__cluster_get(const char *id, int *db_error) {
    srv_job *j = NULL;
    int rc = cv->get(id, &j);
    *db_error = rc < 0;
    return rc == 1 ? adopt(j) : NULL;
}

typedef struct list_acc {
    srv_job **v;
    int n, cap;
} list_acc;

static int list_add(void *user, srv_job *j) {
    list_acc *a = user;
    if (a->n == a->cap || !(j = adopt(j))) {
        if (j) srv__job_free(j);
        return -1;
    }
    a->v[a->n++] = j;
    return 0;
}

int srv__cluster_list(int limit, int offset, srv_job ***v, int *total) {
    list_acc a = {calloc((size_t)limit, sizeof(srv_job *)), 0, limit};
    if (!a.v) return -1;
    if (cv->list(limit, offset, list_add, &a, total) < 0) {
        for (int i = 0; i < a.n; i++) srv__job_free(a.v[i]);
        free(a.v);
        return -1;
    }
    *v = a.v;
    return a.n;
}

int srv__cluster_delete(srv_job *j) {
    int was_running = 0;
    int rc = cv->remove(j->id, &was_running);
    if (rc < 0) return -1;
    /* A running job's worker sees its row gone at its next heartbeat,
     * stops, and removes the folder it was writing into. */
    if (!was_running) srv_artifact_remove(j->id);
    return 0;
}

int srv__cluster_get_stats(srv__cluster_stats *out) {
    pthread_mutex_lock(&cl_lock);
    *out = stats;
    int ok = stats_ok;
    pthread_mutex_unlock(&cl_lock);
    return ok ? 0 : -1;
}

/* ---- the worker side ----------------------------------------------------------------- */

srv_job *srv__cluster_take(void) {
    int fails = 0;
    for (;;) {
        pthread_mutex_lock(&cl_lock);
        int stop = stopping;
        unsigned long gen = wake_gen;
        pthread_mutex_unlock(&cl_lock);
        if (stop) return NULL;
        srv_job *j = NULL;
        int rc = cv->claim(node_id, srv_cfg.lease_seconds, &j);
        if (rc == 1 && (j = adopt(j))) {
            pthread_mutex_lock(&cl_lock);
            if (n_run < MAX_RUNNING) run_v[n_run++] = (running){j, ++run_seq, 0, 0, 0};
            if (stopping) { /* a stop came while the claim was under way:
                               straight back to the queue, for another node */
                atomic_store(&j->shutdown, 1);
                atomic_store(&j->cancel, 1);
            }
            pthread_mutex_unlock(&cl_lock);
            /* an earlier attempt's files go (a lost input fails it: queue.c);
             * this one writes into a folder of its own */
            if (j->attempts > 1) srv_artifact_clear_outputs(j);
            if (srv_artifact_stage(j) < 0) {
                free(j->stage); /* the run writes into the job's folder */
                j->stage = NULL;
            }
            return j;
        }
        /* nothing queued: sleep until a NOTIFY or the poll period; the
         * database away: back off (0.5 s doubling to 5 s) */
        double wait = srv_cfg.poll_seconds;
        if (rc < 0) {
            fails++;
            wait = 0.5 * (double)(1 << (fails < 4 ? fails : 4));
            if (wait > 5) wait = 5;
        } else {
            fails = 0;
        }
        pthread_mutex_lock(&cl_lock);
        if (!stopping && wake_gen == gen) wait_until(&work_cv, wait);
        pthread_mutex_unlock(&cl_lock);
    }
}

void srv__cluster_progress(srv_job *j, double progress) {
    pthread_mutex_lock(&cl_lock);
    for (int i = 0; i < n_run; i++)
        if (run_v[i].j == j) run_v[i].progress = progress;
    pthread_mutex_unlock(&cl_lock);
}

static void log_job(dmx_log_level lv, const srv_job *j, const char *event, const char *msg) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "job", j->id);
    cJSON_AddStringToObject(f, "worker", node_id);
    cJSON_AddNumberToObject(f, "attempt", j->attempts);
    srv_log(lv, "demix.cluster", event, j->request_id, f, "job %s: %s", j->id, msg);
}

int srv__cluster_finish(srv_job *j, int requeue) {
    /* Retried while the database is away: the result is on disk, and the
     * heartbeat keeps renewing the lease meanwhile (the job stays listed
     * until written), so a reconnection does not re-queue it first. After
     * a stop, a few more seconds, then the lease decides (a re-run). */
    double give_up = 0;
    int rc = -1;
    pthread_mutex_lock(&cl_lock);
    for (int i = 0; i < n_run; i++)
        if (run_v[i].j == j) run_v[i].finishing = 1;
    pthread_mutex_unlock(&cl_lock);
    /* This run's own folder goes first: once the row is written back (a
     * checkpoint) the next claim may stage a folder of the same name. */
    srv_artifact_drop_stage(j); /* (gone already when the stems were published) */
    for (int attempt = 0;; attempt++) {
        rc = cv->finish(j, node_id, requeue);
        if (rc >= 0) break;
        if (attempt == 0)
            log_job(DMX_LOG_WARN, j, "final_write_waiting",
                    "the run ended; the database is away: its result is kept and written when "
                    "the database is back");
        pthread_mutex_lock(&cl_lock);
        if (stopping && give_up == 0) give_up = mono() + 5;
        int over = give_up > 0 && mono() > give_up;
        if (!over) wait_until(&tick_cv, attempt < 3 ? 0.5 : 2);
        pthread_mutex_unlock(&cl_lock);
        if (over) break;
    }
    pthread_mutex_lock(&cl_lock);
    int lost = 0;
    for (int i = 0; i < n_run; i++)
        if (run_v[i].j == j) {
            lost = run_v[i].lost;
            run_v[i] = run_v[--n_run];
            break;
        }
    pthread_mutex_unlock(&cl_lock);
    if (rc < 0)
        log_job(DMX_LOG_WARN, j, "final_write_failed",
                "the database is away; its lease will expire and it runs again");
    else if (rc == 1)
        log_job(DMX_LOG_WARN, j, "lease_lost",
                "another worker holds this job now; the result of this run is dropped");
    else if (rc == 2) {
        log_job(DMX_LOG_INFO, j, "job_deleted", "deleted while running; its files are removed");
        srv_artifact_remove(j->id);
    } else if (lost)
        log_job(DMX_LOG_INFO, j, "lease_renewed", "written after a missed renewal");
    return rc == 1 || rc < 0 ? -1 : 0;
}

/* ---- the heartbeat thread ------------------------------------------------------------ */

static int owned_row(void *user, const char *id) {
    (void)user;
    srv_job *j = NULL;
    int rc = cv->get(id, &j);
    if (j) srv__job_free(j);
    return rc; /* 1 owned, 0 not, -1 cannot say (kept) */
}

static void expired_row(void *user, const char *id) {
    (void)user;
    srv_artifact_remove(id);
}

/* The leases of this node's jobs: renewed; the lost ones cancelled. 0, or
 * -1 when the database could not answer for one of them. */
static int renew_leases(void) {
    struct {
        srv_job j; /* id and attempts only */
        unsigned long seq;
        double progress;
    } v[MAX_RUNNING];
    pthread_mutex_lock(&cl_lock);
    int n = n_run;
    for (int i = 0; i < n; i++) {
        memset(&v[i].j, 0, sizeof v[i].j);
        memcpy(v[i].j.id, run_v[i].j->id, sizeof v[i].j.id);
        v[i].j.attempts = run_v[i].j->attempts;
        v[i].seq = run_v[i].seq;
        v[i].progress = run_v[i].progress;
    }
    pthread_mutex_unlock(&cl_lock);
    int failed = 0;
    if (n > 0 && test_renew_delay > 0) {
        struct timespec ts = {(time_t)test_renew_delay,
                              (long)((test_renew_delay - (double)(time_t)test_renew_delay) * 1e9)};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n; i++) {
        int rc = cv->renew(&v[i].j, node_id, srv_cfg.lease_seconds, v[i].progress);
        failed |= rc < 0;
        if (rc != 1) continue;
        /* The run may have ended meanwhile (its final write is why the
         * renewal found no running row): matched by its number, since the
         * next job this node takes may sit at the same address. */
        pthread_mutex_lock(&cl_lock);
        for (int k = 0; k < n_run; k++)
            if (run_v[k].seq == v[i].seq && !run_v[k].lost && !run_v[k].finishing) {
                run_v[k].lost = 1;
                atomic_store(&run_v[k].j->cancel, 1);
                log_job(DMX_LOG_WARN, run_v[k].j, "lease_lost",
                        "deleted, or re-queued after its lease expired: stopping this run");
            }
        pthread_mutex_unlock(&cl_lock);
    }
    return failed ? -1 : 0;
}

static void *heartbeat_main(void *arg) {
    (void)arg;
    int pid = (int)getpid();
    double next_janitor = 0;
    double last_outage = -1e9; /* when the database last failed this thread */
    /* Often enough that a result outlives its TTL by at most a quarter of
     * it (never more than a minute), as recovery.c's janitor. */
    double every = srv_cfg.ttl_seconds / 4;
    if (every > 60) every = 60;
    for (;;) {
        pthread_mutex_lock(&cl_lock);
        int stop = stopped;
        pthread_mutex_unlock(&cl_lock);
        if (stop) break;
        if (n_workers > 0) cv->beat(node_id, host, pid, srv_cfg.role);
        /* Our own leases first: after an outage longer than a lease, this
         * node re-queues nothing before it has renewed what it runs. */
        int renewed = renew_leases() == 0;
        srv__cluster_stats s = {0};
        int ok = cv->stats(srv_cfg.lease_seconds, &s) == 0;
        /* After an outage every node needs a lease's time to renew what
         * it runs (nodes reconnect at their own pace): a lease that ran
         * out while the database was away is not reaped before that. */
        if (!renewed || !ok) last_outage = mono();
        int requeued = 0, failed = 0;
        if (renewed && ok && mono() - last_outage >= srv_cfg.lease_seconds &&
            cv->reap(srv_cfg.max_attempts, &requeued, &failed) == 0 && requeued + failed > 0) {
            srv_metrics_lease_expirations(requeued + failed);
            cJSON *f = cJSON_CreateObject();
            cJSON_AddNumberToObject(f, "requeued", requeued);
            cJSON_AddNumberToObject(f, "failed", failed);
            srv_log(DMX_LOG_WARN, "demix.cluster", "lease_expired", NULL, f,
                    "%d expired lease(s) re-queued, %d job(s) failed after %d attempts", requeued,
                    failed, srv_cfg.max_attempts);
        }
        pthread_mutex_lock(&cl_lock);
        if (ok) stats = s;
        stats_ok = ok;
        if (requeued) {
            wake_gen++;
            pthread_cond_broadcast(&work_cv);
        }
        pthread_mutex_unlock(&cl_lock);
        if (mono() >= next_janitor && cv->try_lock(JANITOR_LOCK_KEY) == 1) {
            next_janitor = mono() + every;
            int n =
                cv->expire(srv_wall() - srv_cfg.ttl_seconds, srv_cfg.history, expired_row, NULL);
            if (n > 0) {
                cJSON *f = cJSON_CreateObject();
                cJSON_AddNumberToObject(f, "jobs", n);
                srv_log(DMX_LOG_INFO, "demix.jobs", "job_expired", NULL, f,
                        "%d finished job(s) past the TTL or the history removed", n);
            }
            /* folders no row owns: a node died between an upload and its
             * row, or a deleted job's worker died; 10 minutes is far past
             * any upload's move-then-commit */
            srv_artifact_sweep(600, owned_row, NULL);
            cv->unlock(JANITOR_LOCK_KEY);
        }
        pthread_mutex_lock(&cl_lock);
        if (!stopped) wait_until(&tick_cv, srv_cfg.heartbeat_seconds);
        pthread_mutex_unlock(&cl_lock);
    }
    if (n_workers > 0) cv->unbeat(node_id);
    return NULL;
}

/* ---- the listener thread -------------------------------------------------------------- */

static void *listen_main(void *arg) {
    (void)arg;
    double backoff = 0.5;
    for (;;) {
        pthread_mutex_lock(&cl_lock);
        int stop = stopping;
        pthread_mutex_unlock(&cl_lock);
        if (stop) break;
        /* short waits, so a stop is seen within half a second */
        int rc = cv->wait(0.5);
        pthread_mutex_lock(&cl_lock);
        if (rc != 0) { /* notified, reconnected, or away (the takers poll) */
            wake_gen++;
            pthread_cond_broadcast(&work_cv);
        }
        if (rc < 0 && !stopping) {
            wait_until(&tick_cv, backoff);
            backoff = backoff * 2 > 5 ? 5 : backoff * 2;
        } else if (rc >= 0) {
            backoff = 0.5;
        }
        pthread_mutex_unlock(&cl_lock);
    }
    return NULL;
}

/* ---- start and stop --------------------------------------------------------------------- */

int srv__cluster_start(int workers) {
    n_workers = workers;
    const char *d = getenv("DEMIX_TEST_RENEW_DELAY");
    test_renew_delay = d ? atof(d) : 0;
    char rnd[9] = "";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    srv_random_hex(rnd, 4);
    snprintf(node_id, sizeof node_id, "%.60s-%d-%s", host, (int)getpid(), rnd);
    if (pthread_create(&hb_thread, NULL, heartbeat_main, NULL)) return -1;
    hb_started = 1;
    if (workers > 0) {
        if (pthread_create(&listen_thread, NULL, listen_main, NULL)) return -1;
        listen_started = 1;
    }
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "worker", node_id);
    cJSON_AddStringToObject(f, "role", srv_cfg.role);
    cJSON_AddNumberToObject(f, "lease_seconds", srv_cfg.lease_seconds);
    cJSON_AddNumberToObject(f, "heartbeat_seconds", srv_cfg.heartbeat_seconds);
    srv_log(DMX_LOG_INFO, "demix.cluster", "cluster_start", NULL, f,
            "clustered mode: node %s (%s)", node_id, srv_cfg.role);
    return 0;
}

void srv__cluster_stop_taking(void) {
    pthread_mutex_lock(&cl_lock);
    stopping = 1;
    pthread_cond_broadcast(&work_cv);
    pthread_cond_broadcast(&tick_cv);
    pthread_mutex_unlock(&cl_lock);
}

int srv__cluster_checkpoint_all(void) {
    pthread_mutex_lock(&cl_lock);
    int n = n_run;
    for (int i = 0; i < n_run; i++) {
        atomic_store(&run_v[i].j->shutdown, 1);
        atomic_store(&run_v[i].j->cancel, 1);
    }
    pthread_mutex_unlock(&cl_lock);
    return n;
}

/* After the workers are joined: the helper threads stop. */
void srv__cluster_stop(void) {
    srv__cluster_stop_taking();
    pthread_mutex_lock(&cl_lock);
    stopped = 1;
    pthread_cond_broadcast(&tick_cv);
    pthread_mutex_unlock(&cl_lock);
    if (listen_started) pthread_join(listen_thread, NULL);
    if (hb_started) pthread_join(hb_thread, NULL);
    listen_started = hb_started = 0;
}
