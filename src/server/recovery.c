/*
 * recovery.c - what `demix serve` does with the data folder at start-up
 * and over time: recovery of the stored jobs, the sweep of folders no job
 * owns, and the janitor that expires finished jobs (--ttl).
 *
 * At start-up (before any worker or request runs) up to --history rows
 * come back from SQLite, every unfinished one first (a smaller --history
 * than the unfinished jobs stored refuses to start rather than drop one),
 * then the newest finished ones; finished rows past them are deleted.
 * Finished jobs stay downloadable, and jobs that were queued or running
 * when the process died (kill -9, power cut) go back to the queue, oldest
 * first (their input is still in their folder; what an interrupted run
 * wrote is partial and removed). Then every folder under jobs/ is checked
 * against the rows: a folder no row owns was left by a crash between a
 * row's deletion and its files' (DELETE, TTL) or between an upload's move
 * and its row's insert, and is removed; so are uploads cut off in
 * uploads/. The folder, not the row, is what a crash can orphan: queue.c
 * always deletes the row first.
 *
 * The janitor thread wakes every ttl/4 (at most a minute) and deletes
 * finished jobs older than --ttl (from their end) with their files;
 * running and queued jobs never expire. Each round it first writes again
 * the rows whose last write the store refused (queue.c's srv__rows_retry:
 * a database another process held locked).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "jobs_int.h"

typedef struct loaded_rows {
    srv_job **v;
    int n, cap;
} loaded_rows;

static int collect_row(void *user, srv_job *j) {
    loaded_rows *r = user;
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        srv_job **nv = realloc(r->v, (size_t)cap * sizeof *nv);
        if (!nv) {
            srv__job_free(j);
            return -1;
        }
        r->v = nv;
        r->cap = cap;
    }
    r->v[r->n++] = j;
    return 0;
}

/* A queued or running row: back to the queue, or failed if its input is
 * gone. */
static int requeue(srv_job *j) {
    j->state = JOB_QUEUED;
    j->progress = 0;
    j->started = 0;
    /* What an interrupted run wrote (".part" stems, spills) is partial by
     * definition and would outlive a job that cannot run. */
    srv__dir_clear(j->dir, "input", 0);
    int back = access(j->input, R_OK) == 0;
    if (!back) {
        j->state = JOB_FAILED;
        j->finished = srv_wall();
        snprintf(j->error_code, sizeof j->error_code, "%s", srv_error_code(SRV_E_INPUT_LOST));
        snprintf(j->error, sizeof j->error, "the uploaded file was lost in a restart");
    } else {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "job", j->id);
        cJSON_AddStringToObject(f, "model", j->model);
        srv_log(DMX_LOG_INFO, "demix.jobs", "job_requeued", j->request_id, f,
                "job %s re-queued after a restart", j->id);
    }
    j->row_stale = srv_store_save(j) < 0; /* (the janitor writes it again) */
    return back;
}

static int is_job_id(const char *s) {
    size_t n = strspn(s, "0123456789abcdef");
    return n == 32 && s[n] == '\0';
}

/* Removes each jobs/ID folder whose ID is not among the rows. */
static int sweep_orphans(srv_job **v, int n) {
    char *dir = NULL;
    if (asprintf(&dir, "%s/jobs", srv_cfg.data_dir) < 0) return 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    int removed = 0;
    while (d && (e = readdir(d))) {
        if (!is_job_id(e->d_name)) continue;
        int owned = 0;
        for (int i = 0; i < n && !owned; i++) owned = v[i] && !strcmp(v[i]->id, e->d_name);
        if (owned) continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, e->d_name) < 0) continue;
        srv__dir_clear(p, NULL, 1);
        free(p);
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "job", e->d_name);
        srv_log(DMX_LOG_INFO, "demix.jobs", "orphan_removed", NULL, f,
                "removed folder of job %s: no stored job owns it", e->d_name);
        removed++;
    }
    if (d) closedir(d);
    free(dir);
    return removed;
}

static int newest_first(const void *a, const void *b) {
    double x = (*(srv_job *const *)a)->created, y = (*(srv_job *const *)b)->created;
    return x > y ? -1 : x < y;
}

int srv__recover(void) {
    /* No request is in flight yet: whatever is in uploads/ was cut off by a
     * crash and will never become a job. */
    char *up = NULL;
    if (asprintf(&up, "%s/uploads", srv_cfg.data_dir) >= 0) srv__dir_clear(up, NULL, 0);
    free(up);

    loaded_rows rows = {0};
    if (srv_store_load(collect_row, &rows, srv_cfg.history) < 0) {
        free(rows.v);
        return -1;
    }
    /* Unfinished rows come first: when they alone fill the history, more
     * may wait unloaded, whose folders the sweep would take. Refused: no
     * accepted job is dropped by a smaller --history. */
    if (rows.n == srv_cfg.history && rows.n > 0 && !srv__job_terminal(rows.v[rows.n - 1]->state)) {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddNumberToObject(f, "history", srv_cfg.history);
        srv_log(DMX_LOG_ERROR, "demix.jobs", "recovery", NULL, f,
                "the store holds at least %d unfinished jobs, all that --history %d lets "
                "in: start with a larger --history",
                rows.n, srv_cfg.history);
        for (int i = 0; i < rows.n; i++) srv__job_free(rows.v[i]);
        free(rows.v);
        return -1;
    }
    /* Rows past the history (never shown again) go, so their folders may:
     * the finished ones the load left out (the same order, ties included). */
    if (rows.n == srv_cfg.history) srv_store_delete_past(srv_cfg.history);
    /* the history newest first, unfinished and finished together */
    if (rows.n > 1) qsort(rows.v, (size_t)rows.n, sizeof *rows.v, newest_first);
    int requeued = 0, kept = 0;
    /* Rows come back newest first; re-queue oldest first. */
    for (int i = rows.n - 1; i >= 0; i--) {
        srv_job *j = rows.v[i];
        if (asprintf(&j->dir, "%s/jobs/%s", srv_cfg.data_dir, j->id) < 0 ||
            asprintf(&j->input, "%s/input", j->dir) < 0) {
            srv__job_free(j);
            rows.v[i] = NULL;
            continue;
        }
        j->refs = 1; /* the history list */
        if (!srv__job_terminal(j->state)) requeued += requeue(j);
        kept++;
    }
    int orphans = sweep_orphans(rows.v, rows.n);
    int k = 0;
    for (int i = 0; i < rows.n; i++)
        if (rows.v[i]) rows.v[k++] = rows.v[i];
    srv__queue_restore(rows.v, k);
    free(rows.v);
    cJSON *f = cJSON_CreateObject();
    cJSON_AddNumberToObject(f, "jobs", kept);
    cJSON_AddNumberToObject(f, "requeued", requeued);
    cJSON_AddNumberToObject(f, "orphans_removed", orphans);
    srv_log(DMX_LOG_INFO, "demix.jobs", "recovery", NULL, f,
            "%d stored job(s), %d re-queued, %d orphaned folder(s) removed", kept, requeued,
            orphans);
    return 0;
}

void srv__sweep_expired(void) {
    double limit = srv_wall() - srv_cfg.ttl_seconds;
    srv_job *victim;
    while ((victim = srv__jobs_expired(limit))) {
        int rc = srv_job_delete(victim);
        /* logged once it is gone; a refusal once per job, not per sweep */
        if (rc == 0 || !victim->expiry_deferred) {
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "job", victim->id);
            if (rc == 0)
                srv_log(DMX_LOG_INFO, "demix.jobs", "job_expired", victim->request_id, f,
                        "job %s expired", victim->id);
            else
                srv_log(DMX_LOG_WARN, "demix.jobs", "job_expiry_deferred", victim->request_id, f,
                        "job %s expired but the store refused its deletion; every sweep "
                        "tries again",
                        victim->id);
        }
        if (rc < 0) victim->expiry_deferred = 1;
        srv_job_put(victim);
        if (rc < 0) break; /* the store refused: the next sweep tries again */
    }
}

/* ---- the janitor thread ----------------------------------------------------------- */

static pthread_mutex_t janitor_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t janitor_cv = PTHREAD_COND_INITIALIZER;
static int janitor_stopping, janitor_running;
static pthread_t janitor;

static void *janitor_main(void *arg) {
    (void)arg;
    /* Often enough that a result outlives its TTL by at most a quarter of
     * it (and never more than a minute). */
    double every = srv_cfg.ttl_seconds / 4;
    if (every > 60) every = 60;
    if (every < 0.2) every = 0.2;
    pthread_mutex_lock(&janitor_lock);
    while (!janitor_stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + every;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&janitor_cv, &janitor_lock, &ts);
        if (janitor_stopping) break;
        pthread_mutex_unlock(&janitor_lock);
        srv__rows_retry();
        srv__sweep_expired();
        pthread_mutex_lock(&janitor_lock);
    }
    pthread_mutex_unlock(&janitor_lock);
    return NULL;
}

int srv__janitor_start(void) {
    if (pthread_create(&janitor, NULL, janitor_main, NULL)) return -1;
    janitor_running = 1;
    return 0;
}

void srv__janitor_stop(void) {
    pthread_mutex_lock(&janitor_lock);
    janitor_stopping = 1;
    pthread_cond_broadcast(&janitor_cv);
    pthread_mutex_unlock(&janitor_lock);
    if (janitor_running) pthread_join(janitor, NULL);
    janitor_running = 0;
}

/* ---- free space ------------------------------------------------------------------- */

int srv_data_disk_low(int64_t *free_bytes) {
    struct statvfs v;
    if (statvfs(srv_cfg.data_dir, &v) != 0) {
        if (free_bytes) *free_bytes = -1;
        return 0; /* unknown: the writes themselves will tell */
    }
    int64_t f = (int64_t)v.f_bavail * (int64_t)v.f_frsize;
    if (free_bytes) *free_bytes = f;
    return f < srv_cfg.min_free_disk_bytes;
}
