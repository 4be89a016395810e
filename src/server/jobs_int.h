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

/* Rows and jobs kept in memory (the history). */
#define DMX_MAX_HISTORY 10000

/* ---- queue.c ---------------------------------------------------------------- */

int dmx__queue_init(int queue_cap);
/* Drops every reference the history and the queue hold (shutdown). */
void dmx__queue_free(void);
int dmx__job_terminal(dmx_job_state s);
/* Frees a job nobody references (no file is touched). */
void dmx__job_free(dmx_job *j);
/* Unlinks the files directly inside DIR except `keep` (may be NULL), then
 * removes DIR itself when rmdir_too. Missing files are ignored. */
void dmx__dir_clear(const char *dir, const char *keep, int rmdir_too);
/* Installs recovered jobs: v is newest first, each with refs = 1 (the
 * history's); jobs in state queued also enter the queue, oldest first.
 * Called once, before the workers start. */
void dmx__queue_restore(dmx_job **v, int n);
/* Worker side: blocks until a job is queued (returns it marked running,
 * saved, with the caller's reference) or the queue stops (NULL). */
dmx_job *dmx__queue_take(void);
/* Worker side: records the end of a run (requeue: SIGTERM checkpoint back
 * to queued) and drops the worker's reference. */
void dmx__queue_finish(dmx_job *j, dmx_job_state st, int requeue);
void dmx__job_progress(dmx_job *j, double progress);
/* Sets the job's error: `e` from the error table and a message for the
 * client. The message is logged whole, and stored and shown with every
 * path reduced to its last component (server paths stay private). */
void dmx__job_fail(dmx_job *j, dmx_srv_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dmx__job_set_stems(dmx_job *j, char names[][DMX_MAX_STEM_NAME], int n);
/* A new reference to the job that finished longest before `limit`
 * (wall clock) among the finished ones, or NULL. */
dmx_job *dmx__jobs_expired(double limit);
/* Workers take nothing more; waits up to grace seconds for running jobs,
 * then cancels them (they are checkpointed as queued). */
void dmx__queue_stop(double grace);
/* wait=true requests give up (after the workers are joined). */
void dmx__queue_release_waiters(void);

/* ---- runner.c ---------------------------------------------------------------- */

/* Starts n worker threads (cores divided between them). 0 or -1. */
int dmx__runner_start(int n);
void dmx__runner_join(void);

/* ---- recovery.c -------------------------------------------------------------- */

/* Start-up, before any worker or request: removes cut-off uploads, loads
 * the stored jobs (re-queues interrupted ones) and removes job folders no
 * row owns. 0 or -1. */
int dmx__recover(void);
/* Deletes finished jobs past the TTL with their files. */
void dmx__sweep_expired(void);
int dmx__janitor_start(void);
void dmx__janitor_stop(void);

/* ---- modelcache.c ------------------------------------------------------------ */

void dmx__models_free(void);

#endif
