/*
 * store.h - the job store behind `demix serve`: one table of functions per
 * database, chosen at start by --store (DEMIX_STORE):
 *
 *   sqlite:PATH             the embedded default (DATA_DIR/demix.db when
 *                           --store is not given): store_sqlite.c
 *   postgresql://... or postgres://...   a libpq connection URI: store_pg.c
 *
 * store.c parses the target and forwards the srv_store_* calls of
 * server.h to the chosen implementation. Each implementation creates or
 * migrates its schema on open (table schema_version, one row: the version)
 * and binds every value as a statement parameter. Calls are serialised by
 * the implementation; they may block on I/O, never call back into the jobs.
 *
 * Statuses: 0 on success, -1 when the database cannot be used now (the
 * caller answers 503), SRV_STORE_FULL when it is out of space (507).
 *
 * PostgreSQL also carries the shared queue of the clustered mode
 * (srv__cluster_vt below, NULL for SQLite): the rows are the queue, claimed
 * with FOR UPDATE SKIP LOCKED under a lease that the claiming worker renews;
 * cluster.c holds the policy (heartbeats, waking, re-queueing, janitor),
 * store_pg.c only the statements.
 */
#ifndef DEMIX_SERVER_STORE_H
#define DEMIX_SERVER_STORE_H

#include "server.h"

/* The schema every implementation creates; bump and migrate together. */
#define SRV_STORE_SCHEMA_VERSION 1

/* PostgreSQL's schema (2: the queue's columns progress, attempts,
 * worker_id, lease_expires and the workers table); SQLite stays at 1. */
#define SRV_STORE_PG_SCHEMA_VERSION 2

/* The NOTIFY channel a submission (or a re-queue) signals. */
#define SRV_STORE_CHANNEL "demix_jobs"

/* What the database says about the whole cluster (metrics). */
typedef struct srv__cluster_stats {
    int queued, running, workers_live;
    double oldest_queued_seconds; /* 0 when nothing is queued */
} srv__cluster_stats;

/* The shared queue. A lease is (worker, attempt): attempts counts claims,
 * so a worker whose lease was taken over (re-queued and claimed again, even
 * by the same worker id) no longer matches. Times are the database's clock.
 * Jobs handed out are new srv_job objects (refs 0) the caller owns; they
 * carry attempts and, when queued, queue_pos from the database. */
typedef struct srv__cluster_vt {
    /* Inserts a queued row and NOTIFYs SRV_STORE_CHANNEL in one statement:
     * 0, -1 or SRV_STORE_FULL. */
    int (*submit)(const srv_job *j);
    /* Claims the oldest queued job (created, then id) for WORKER with a
     * lease of lease_s seconds: 1 (*out set, state running), 0 none, -1. */
    int (*claim)(const char *worker, double lease_s, srv_job **out);
    /* Extends the lease and records progress: 0 still held, 1 lost (re-queued,
     * taken over or deleted: stop), -1 the database cannot say. */
    int (*renew)(const srv_job *j, const char *worker, double lease_s, double progress);
    /* The final write, only while WORKER holds the lease: 0 written, 1
     * refused (another worker holds or ended it), 2 refused (the row is
     * gone: deleted), -1 not written now (retry). requeue: back to queued
     * (shutdown checkpoint, the attempt not counted) instead of j->state. */
    int (*finish)(const srv_job *j, const char *worker, int requeue);
    /* One job: 1 (*out), 0 no such job, -1. */
    int (*get)(const char *id, srv_job **out);
    /* Jobs newest first from offset (fn as srv_store_load's); *total gets
     * the row count. The number passed to fn, or -1. */
    int (*list)(int limit, int offset, int (*fn)(void *user, srv_job *j), void *user, int *total);
    /* Deletes the row: 1 with *was_running (a worker holds it and will see
     * it gone), 0 no such row, -1. */
    int (*remove)(const char *id, int *was_running);
    /* Re-queues running jobs whose lease expired, or fails them after
     * max_attempts claims ("lease expired N times (worker lost)"); NOTIFYs
     * when any was re-queued. *requeued and *failed get the counts. 0 or -1. */
    int (*reap)(int max_attempts, int *requeued, int *failed);
    /* Deletes finished rows that ended before `finished_before`, and the
     * finished rows past the newest `keep` rows; fn(user, id) for each
     * (it must not call the store). The count, or -1. */
    int (*expire)(double finished_before, int keep, void (*fn)(void *user, const char *id),
                  void *user);
    int (*stats)(double live_seconds, srv__cluster_stats *out);
    /* The workers table: this node's heartbeat (upsert), and its removal. */
    int (*beat)(const char *worker, const char *host, int pid, const char *role);
    void (*unbeat)(const char *worker);
    /* Session advisory lock KEY on the store's connection: 1 taken, 0 held
     * elsewhere, -1; and its release. */
    int (*try_lock)(long key);
    void (*unlock)(long key);
    /* Waits up to timeout seconds on a LISTEN connection of its own: 1 when
     * SRV_STORE_CHANNEL was notified, 0 on timeout, -1 (not connected; the
     * caller backs off). One caller at a time. */
    int (*wait)(double timeout);
} srv__cluster_vt;

/* SQL both stores accept. A finished job's row; the order in which a start
 * loads the history (unfinished jobs first, then the newest; ties by id):
 * what `load` returns first and what `delete_past` keeps; and that
 * deletion, LIMIT taking the store's placeholder. */
#define SRV_STORE_FINISHED   "state IN ('done', 'failed', 'cancelled')"
#define SRV_STORE_LOAD_ORDER SRV_STORE_FINISHED ", created DESC, id DESC"
#define SRV_STORE_DELETE_PAST(placeholder)                                        \
    "DELETE FROM jobs WHERE " SRV_STORE_FINISHED " AND id NOT IN (SELECT id FROM" \
    " jobs ORDER BY " SRV_STORE_LOAD_ORDER " LIMIT " placeholder ")"

typedef struct srv__store_vt {
    const char *name; /* "sqlite", "postgresql" (logs, metrics) */
    /* Connects to TARGET (a path or URI, kept by the caller) and creates or
     * migrates the schema. */
    int (*open)(const char *target);
    void (*close)(void);
    int (*save)(const srv_job *j);
    int (*del)(const char *id);
    int (*load)(int (*fn)(void *user, srv_job *j), void *user, int limit);
    int (*delete_past)(int keep);
    /* 1 when the database answers now (may reconnect), else 0. */
    int (*ready)(void);
    const srv__cluster_vt *cluster; /* NULL: no shared queue (SQLite) */
} srv__store_vt;

/* The chosen store's shared queue, or NULL (SQLite, or not open). */
const srv__cluster_vt *srv__store_cluster(void);

extern const srv__store_vt srv__store_sqlite;
#ifdef DEMIX_HAVE_PQ
extern const srv__store_vt srv__store_pg;
#endif

/* Stems are stored as one comma-separated string (names are
 * [A-Za-z0-9_.-]): the one rule for both databases. */
void srv__store_join_stems(const srv_job *j, char *out, size_t n);
void srv__store_split_stems(srv_job *j, const char *stems);
srv_job_state srv__store_state_from_name(const char *s);

#endif
