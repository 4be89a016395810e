/*
 * jobs_int.h - what the job modules of `demix serve` share among
 * themselves and nobody else: queue.c (job objects, history, the bounded
 * FIFO), runner.c (worker threads), recovery.c (start-up recovery, orphan
 * sweep, TTL janitor), modelcache.c (loaded models) and jobs.c (their
 * lifecycle). routes.c and the rest see only server.h.
 */
#ifndef DEMIX_SERVER_JOBS_INT_H
#define DEMIX_SERVER_JOBS_INT_H

#include "demix/pipeline.h"
#include "server.h"

/* ---- queue.c ---------------------------------------------------------------- */

int srv__queue_init(int queue_cap);
/* Drops every reference the history and the queue hold (shutdown). */
void srv__queue_free(void);
int srv__job_terminal(srv_job_state s);
/* Frees a job nobody references (no file is touched). */
void srv__job_free(srv_job *j);
/* Unlinks the files directly inside DIR except `keep` (may be NULL), then
 * removes DIR itself when rmdir_too. Missing files are ignored. */
void srv__dir_clear(const char *dir, const char *keep, int rmdir_too);
/* Installs recovered jobs: v is newest first, each with refs = 1 (the
 * history's); jobs in state queued also enter the queue, oldest first.
 * Called once, before the workers start. */
void srv__queue_restore(srv_job **v, int n);
/* Worker side: blocks until a job is queued (returns it marked running,
 * its row written, with the caller's reference) or the queue stops (NULL). */
srv_job *srv__queue_take(void);
/* Worker side: records the end of a run (requeue: SIGTERM checkpoint back
 * to queued), its row before what readers see; the caller still holds its
 * reference (srv_job_put). 1 when
 * the result did not land (clustered: another run owns the job), else 0. */
int srv__queue_finish(srv_job *j, srv_job_state st, int requeue);
void srv__job_progress(srv_job *j, double progress);
/* Sets the job's error: `e` from the error table and a message for the
 * client. The message is logged whole, and stored and shown with every
 * path reduced to its last component (server paths stay private). */
void srv__job_fail(srv_job *j, srv_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void srv__job_set_stems(srv_job *j, char names[][DMX_MAX_STEM_NAME], int n);
/* Writes again the rows of jobs whose last row write the store refused
 * (a database locked by another process): the janitor's, each sweep. */
void srv__rows_retry(void);
/* A new reference to the job that finished longest before `limit`
 * (wall clock) among the finished ones, or NULL. */
srv_job *srv__jobs_expired(double limit);
/* Workers take nothing more; waits up to grace seconds for running jobs,
 * then cancels them (they are checkpointed as queued). */
void srv__queue_stop(double grace);
/* wait=true requests give up (after the workers are joined). */
void srv__queue_release_waiters(void);

/* ---- runner.c ---------------------------------------------------------------- */

/* Starts n worker threads (cores divided between them). 0 or -1. */
int srv__runner_start(int n);
void srv__runner_join(void);

/* ---- recovery.c -------------------------------------------------------------- */

/* Start-up, before any worker or request: removes cut-off uploads, loads
 * the stored jobs (re-queues interrupted ones) and removes job folders no
 * row owns. 0 or -1. */
int srv__recover(void);
/* Deletes finished jobs past the TTL with their files. */
void srv__sweep_expired(void);
int srv__janitor_start(void);
void srv__janitor_stop(void);

/* ---- cluster.c: the shared queue on PostgreSQL (its design comment) ---------- */

struct srv__cluster_stats;
/* After the store is open: 1 (clustered) when it has a shared queue. */
int srv__cluster_open(void);
int srv__cluster_on(void);
const char *srv__cluster_node_id(void);
/* The heartbeat thread, and the NOTIFY listener when workers > 0. */
int srv__cluster_start(int workers);
/* Takers return NULL from now on. */
void srv__cluster_stop_taking(void);
/* Cancels this node's running jobs to be checkpointed as queued; how many. */
int srv__cluster_checkpoint_all(void);
/* Joins the helper threads (after the workers). */
void srv__cluster_stop(void);
/* As srv_job_submit: the row committed and notified, or -1 with *why. */
int srv__cluster_submit(srv_job *j, srv_error *why);
/* A job from its row (refs 1, the caller's), or NULL: *db_error says
 * whether the database could not answer. */
srv_job *srv__cluster_get(const char *id, int *db_error);
/* The jobs newest first (malloc'ed array of jobs, refs 1 each) and the
 * total; the count, or -1. */
int srv__cluster_list(int limit, int offset, srv_job ***v, int *total);
/* Deletes the row; the folder now unless a worker still runs the job. */
int srv__cluster_delete(srv_job *j);
/* The gauges of the last refresh: 0, or -1 when never read. */
int srv__cluster_get_stats(struct srv__cluster_stats *out);
/* Worker side: blocks until a claimed job (refs 1, state running, lease
 * held) or NULL once stopping; progress of a job it runs; the final
 * (conditional) write, which also forgets the job: 0 written (or the row
 * deleted meanwhile), -1 not written (another run owns the job, or will
 * once its lease expires: the database stayed away). */
srv_job *srv__cluster_take(void);
void srv__cluster_progress(srv_job *j, double progress);
int srv__cluster_finish(srv_job *j, int requeue);

/* ---- modelcache.c ------------------------------------------------------------ */

void srv__models_free(void);

#endif
