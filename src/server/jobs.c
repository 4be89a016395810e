/*
 * jobs.c - the life of the job machinery of `demix serve`: start-up,
 * shutdown and teardown of the modules that make it up.
 *
 *   queue.c       job objects, the history and the bounded FIFO (its
 *                 design comment: locking, references, durability)
 *   runner.c      the worker threads that run jobs through the pipeline
 *   recovery.c    start-up recovery, the orphan sweep, the TTL janitor
 *   modelcache.c  models loaded once and shared, loads outside the lock
 *   models.c      the model registry (names -> files)
 *   store.c       the job table (store.h): SQLite or PostgreSQL
 *   cluster.c     the clustered mode: the shared queue on PostgreSQL
 *                 (claims, leases, NOTIFY, heartbeats, the one janitor)
 *   artifacts.c   where a job's files live in the (shared) data folder
 *
 * Embedded (SQLite): recovery re-queues what a crash interrupted, the
 * in-memory FIFO feeds the workers, recovery.c's janitor expires jobs
 * (and writes again rows the store refused, a last time at shutdown).
 * Clustered (PostgreSQL): no start-up recovery (other nodes may be running
 * the jobs; expired leases bring back what a dead node held), the workers
 * (none with --no-workers) claim from the database, and cluster.c's
 * heartbeat thread does the janitor's work in one node at a time.
 *
 * Shutdown (SIGTERM)
 *   The HTTP side stops accepting first; then workers stop taking jobs,
 *   running jobs get --grace seconds to finish, and what still runs is
 *   cancelled and written back as queued, so the next start runs it again.
 *   Requests blocked in wait=true are woken and answered 503.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs_int.h"

int srv_jobs_start(int n, int qmax) {
    if (srv__queue_init(qmax) < 0) return -1;
    char *dbp = NULL;
    if (srv_cfg.store ? !(dbp = strdup(srv_cfg.store))
                      : asprintf(&dbp, "sqlite:%s/demix.db", srv_cfg.data_dir) < 0)
        return -1;
    int rc = srv_store_open(dbp);
    free(dbp);
    if (rc < 0) return -1;
    if (srv__cluster_open()) {
        if (srv__cluster_start(n) < 0) return -1;
        return n > 0 ? srv__runner_start(n) : 0;
    }
    if (srv__recover() < 0) return -1;
    srv__sweep_expired();
    if (srv__runner_start(n) < 0) return -1;
    srv__janitor_start();
    return 0;
}

void srv_jobs_stop(double grace) {
    srv__queue_stop(grace);
    srv__janitor_stop();
    srv__runner_join();
    if (srv__cluster_on())
        srv__cluster_stop();
    else
        srv__rows_retry(); /* a last try at rows the store refused meanwhile */
    /* Requests blocked in wait=true give up (they answer 503). */
    srv__queue_release_waiters();
}

/* After the HTTP daemon has stopped (no request holds a job any more). */
void srv_jobs_free(void) {
    srv__queue_free();
    srv__models_free();
    srv_store_close();
}
