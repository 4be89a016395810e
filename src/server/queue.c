/*
 * queue.c - separation jobs of `demix serve`: the job objects, the history
 * of known jobs and the bounded queue that feeds the worker pool.
 *
 * Design of the queue
 *   Every job lives in one list (all_jobs, newest first) guarded by one mutex
 *   (jobs_lock); the queue is a FIFO of the same objects linked through
 *   job->next, bounded by queue_max so that a burst of uploads is refused
 *   with 503 instead of filling the disk and memory. N worker threads
 *   (runner.c) wait on a condition variable for the FIFO to become
 *   non-empty, take the head and run it without the lock held. State
 *   changes (progress, done, failed) are made in memory under the lock and
 *   broadcast on job_cv, which is what `wait=true` requests and shutdown
 *   sleep on. Each queued job knows its place (queue_pos, 1 = next to run),
 *   renumbered whenever the FIFO changes (it is short: at most queue_max).
 *   Jobs are reference counted: the list holds one reference, the queue or
 *   the worker running it one, and every HTTP request looking at it one, so
 *   DELETE can forget a running job while the worker still finishes with it.
 *   Cancellation is the engine's own: an atomic flag polled between segments.
 *
 * Durability
 *   A job is accepted only once its row is in SQLite (store.c): submit
 *   reserves a queue slot, writes the row outside jobs_lock (a slow or
 *   locked database must not stall every reader of the queue), and only
 *   then makes the job visible. If the write fails the caller is told why
 *   (503 store_unavailable, 507 insufficient_storage) and removes the
 *   job's files, so no 202 is ever given for a job a crash would lose.
 *   Later state changes are written outside jobs_lock too, under rows_lock
 *   (which orders them and keeps a deleted job's row from coming back), so
 *   a locked database never stalls a reader of the queue; a job's end is
 *   stored before readers see it, and a write the store refused is retried
 *   by the janitor (srv__rows_retry) until row and memory agree. Deletion
 *   removes the row first and the folder after (when
 *   the last reference goes): a crash in between leaves a folder no row
 *   owns, which recovery.c removes at the next start; the other order
 *   could bring back a job whose files are gone.
 *
 * Clustered mode (--store postgresql://...)
 *   The FIFO and the history above are the embedded mode's. With a shared
 *   queue (cluster.c) every call below that reads or changes jobs goes to
 *   the database instead: submit commits a queued row, lookups and lists
 *   read rows (any node sees any job), DELETE removes the row, and the
 *   worker side claims and finishes under a lease. Job objects are then
 *   per request (refs 1, the caller's) and never shared between requests.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "jobs_int.h"
#include "store.h"

/* ---- random ids -------------------------------------------------------------- */

int srv_random_hex(char *out, size_t n_bytes) {
    unsigned char b[64];
    if (n_bytes > sizeof b) return -1;
    size_t got = 0;
    while (got < n_bytes) {
        ssize_t k = getrandom(b + got, n_bytes - got, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += (size_t)k;
    }
    for (size_t i = 0; i < n_bytes; i++) sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n_bytes] = '\0';
    return 0;
}

/* ---- state ------------------------------------------------------------------- */

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
/* Row writes after a job's submission (state changes, deletions, history
 * evictions) run under rows_lock and never under jobs_lock: a database held
 * locked by another process (SQLite waits up to 5 s) then stalls only the
 * other row writes, never a reader of the queue (GET /jobs, /metrics,
 * /health). Taken before jobs_lock, never while holding it. Under it a
 * job's `deleted` flag cannot change, so a state write never brings back a
 * row that a deletion removed. */
static pthread_mutex_t rows_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t job_cv = PTHREAD_COND_INITIALIZER;
static srv_job *queue_head, *queue_tail;
static int queue_len, queue_cap, n_reserved, n_active;
static int stopping;      /* workers take nothing more, submit refuses */
static int shutting_down; /* wait=true requests give up */

/* Every known job, newest first; bounded by srv_cfg.history. */
static srv_job **all_jobs;
static int n_all;

/* Clustered: the database could not answer this thread's last lookup. */
static _Thread_local int lookup_db_error;

const char *srv_job_state_name(srv_job_state s) {
    static const char *names[] = {"queued", "running", "done", "failed", "cancelled"};
    return names[s];
}

int srv__job_terminal(srv_job_state s) {
    return s == JOB_DONE || s == JOB_FAILED || s == JOB_CANCELLED;
}

int srv__queue_init(int cap) {
    queue_cap = cap;
    all_jobs = calloc((size_t)srv_cfg.history, sizeof *all_jobs);
    return all_jobs ? 0 : -1;
}

/* ---- job objects -------------------------------------------------------------- */

void srv__job_free(srv_job *j) {
    free(j->dir);
    free(j->input);
    free(j->stage);
    free(j->upload_name);
    free(j);
}

void srv__dir_clear(const char *dir, const char *keep, int rmdir_too) {
    if (!dir) return;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (keep && !strcmp(e->d_name, keep)) continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, e->d_name) >= 0) unlink(p);
        free(p);
    }
    if (d) closedir(d);
    if (rmdir_too) rmdir(dir);
}

/* The last reference is gone: a deleted job takes its folder with it. */
static void job_release(srv_job *j) {
    if (j->deleted) srv__dir_clear(j->dir, NULL, 1);
    srv__job_free(j);
}

srv_job *srv_job_new(void) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    if (srv_random_hex(j->id, 16) < 0) {
        free(j);
        return NULL;
    }
    j->refs = 1;
    j->state = JOB_QUEUED;
    j->created = srv_wall();
    return j;
}

void srv_job_put(srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&jobs_lock);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&jobs_lock);
    if (last) job_release(j);
}

/* ---- rows (see rows_lock) ------------------------------------------------------ */

/* What j's row holds, copied with jobs_lock held (the fields that change
 * are guarded by it) so that it is written without the lock. */
static void row_copy_locked(const srv_job *j, srv_job *r) {
    memset(r, 0, sizeof *r);
    memcpy(r->id, j->id, sizeof r->id);
    memcpy(r->request_id, j->request_id, sizeof r->request_id);
    memcpy(r->model, j->model, sizeof r->model);
    memcpy(r->two_stems, j->two_stems, sizeof r->two_stems);
    memcpy(r->format, j->format, sizeof r->format);
    r->shifts = j->shifts;
    r->overlap = j->overlap;
    r->upload_name = j->upload_name; /* (set before submission, then fixed) */
    r->file_size = j->file_size;
    r->audio_seconds = j->audio_seconds;
    r->state = j->state;
    r->progress = j->progress;
    memcpy(r->error, j->error, sizeof r->error);
    memcpy(r->error_code, j->error_code, sizeof r->error_code);
    r->n_stems = j->n_stems;
    memcpy(r->stems, j->stems, sizeof r->stems);
    r->created = j->created;
    r->started = j->started;
    r->finished = j->finished;
    r->attempts = j->attempts;
}

/* Writes row r of job j, rows_lock held, unless j was deleted; a write the
 * store refused marks j for the janitor's retry (srv__rows_retry). */
static void row_write(srv_job *j, const srv_job *r) {
    pthread_mutex_lock(&jobs_lock);
    int gone = j->deleted;
    if (gone) j->row_stale = 0; /* (its row is gone for good) */
    pthread_mutex_unlock(&jobs_lock);
    if (gone) return;
    int failed = srv_store_save(r) < 0;
    if (failed) srv_metrics_store_write_failure();
    pthread_mutex_lock(&jobs_lock);
    j->row_stale = failed;
    pthread_mutex_unlock(&jobs_lock);
}

/* Writes j's row as it is now (see rows_lock). */
static void row_store(srv_job *j) {
    srv_job r;
    pthread_mutex_lock(&rows_lock);
    pthread_mutex_lock(&jobs_lock);
    row_copy_locked(j, &r);
    pthread_mutex_unlock(&jobs_lock);
    row_write(j, &r);
    pthread_mutex_unlock(&rows_lock);
}

void srv__rows_retry(void) {
    for (;;) {
        srv_job *j = NULL;
        pthread_mutex_lock(&jobs_lock);
        for (int i = n_all - 1; i >= 0 && !j; i--)
            if (all_jobs[i]->row_stale) { /* (a deleted job has left the list) */
                j = all_jobs[i];
                j->refs++;
            }
        pthread_mutex_unlock(&jobs_lock);
        if (!j) return;
        row_store(j);
        pthread_mutex_lock(&jobs_lock);
        int again = j->row_stale;
        pthread_mutex_unlock(&jobs_lock);
        srv_job_put(j);
        if (again) return; /* the store still refuses: the next sweep tries again */
    }
}

/* ---- the FIFO (jobs_lock held) ------------------------------------------------- */

static void renumber_locked(void) {
    int k = 1;
    for (srv_job *q = queue_head; q; q = q->next) q->queue_pos = k++;
}

static void queue_push_locked(srv_job *j) {
    j->next = NULL;
    if (queue_tail)
        queue_tail->next = j;
    else
        queue_head = j;
    queue_tail = j;
    queue_len++;
    j->queue_pos = queue_len;
}

static srv_job *queue_pop_locked(void) {
    srv_job *j = queue_head;
    if (!j) return NULL;
    queue_head = j->next;
    if (!queue_head) queue_tail = NULL;
    queue_len--;
    j->next = NULL;
    j->queue_pos = 0;
    renumber_locked();
    return j;
}

/* 1 if j was queued and has been taken out. */
static int queue_remove_locked(srv_job *j) {
    srv_job *prev = NULL;
    for (srv_job *q = queue_head; q; prev = q, q = q->next) {
        if (q != j) continue;
        if (prev)
            prev->next = j->next;
        else
            queue_head = j->next;
        if (queue_tail == j) queue_tail = prev;
        queue_len--;
        j->next = NULL;
        j->queue_pos = 0;
        renumber_locked();
        return 1;
    }
    return 0;
}

/* ---- submit, look up, wait, delete ---------------------------------------------- */

/* The oldest finished job of the history with a new reference, or NULL
 * (serve.c keeps the history above --queue + --workers, so one is). */
static srv_job *oldest_finished_locked(void) {
    int k = n_all - 1;
    while (k >= 0 && !srv__job_terminal(all_jobs[k]->state)) k--;
    if (k < 0) return NULL;
    all_jobs[k]->refs++;
    return all_jobs[k];
}

int srv_job_submit(srv_job *j, srv_error *why) {
    if (srv__cluster_on()) {
        pthread_mutex_lock(&jobs_lock);
        int stop = stopping;
        pthread_mutex_unlock(&jobs_lock);
        if (stop) {
            *why = SRV_E_SHUTTING_DOWN;
            return -1;
        }
        return srv__cluster_submit(j, why);
    }
    pthread_mutex_lock(&jobs_lock);
    /* History: room for this job and the submissions in flight is made
     * before its row is stored, the oldest finished job going row first; a
     * store that refuses that deletion refuses the submission, nothing
     * changed (dropped after the save, a refused deletion would leave a row
     * that comes back at the next start without its files). The eviction
     * (srv_job_delete) lets the lock go: the checks are made again after it. */
    for (;;) {
        if (stopping || queue_len + n_reserved >= queue_cap) {
            *why = stopping ? SRV_E_SHUTTING_DOWN : SRV_E_QUEUE_FULL;
            pthread_mutex_unlock(&jobs_lock);
            return -1;
        }
        if (n_all + n_reserved < srv_cfg.history) break;
        srv_job *old = oldest_finished_locked();
        pthread_mutex_unlock(&jobs_lock);
        int ev = old ? srv_job_delete(old) : -2;
        srv_job_put(old); /* (its folder goes with the last reference) */
        if (ev < 0) {
            *why = ev == -2 ? SRV_E_QUEUE_FULL : SRV_E_STORE_UNAVAILABLE;
            return -1;
        }
        pthread_mutex_lock(&jobs_lock);
    }
    n_reserved++;
    pthread_mutex_unlock(&jobs_lock);

    /* Durable first: nobody can see the job until its row is stored. */
    int saved = srv_store_save(j);

    pthread_mutex_lock(&jobs_lock);
    n_reserved--;
    if (saved < 0) {
        *why = saved == SRV_STORE_FULL ? SRV_E_INSUFFICIENT_STORAGE : SRV_E_STORE_UNAVAILABLE;
        pthread_mutex_unlock(&jobs_lock);
        return -1;
    }
    /* the reservation kept a slot: n_all + n_reserved <= history */
    memmove(all_jobs + 1, all_jobs, (size_t)n_all * sizeof *all_jobs);
    all_jobs[0] = j;
    n_all++;
    j->refs += 2; /* the history list and the queue */
    queue_push_locked(j);
    pthread_cond_signal(&queue_cv);
    pthread_mutex_unlock(&jobs_lock);
    return 0;
}

int srv_jobs_clustered(void) { return srv__cluster_on(); }
int srv_jobs_store_ok(void) { return !lookup_db_error; }

srv_job *srv_job_get(const char *id) {
    lookup_db_error = 0;
    if (srv__cluster_on()) return srv__cluster_get(id, &lookup_db_error);
    srv_job *r = NULL;
    pthread_mutex_lock(&jobs_lock);
    for (int i = 0; i < n_all; i++)
        if (!strcmp(all_jobs[i]->id, id)) {
            r = all_jobs[i];
            r->refs++;
            break;
        }
    pthread_mutex_unlock(&jobs_lock);
    return r;
}

/* Clustered: j (the caller's own object) follows its row until it ends. */
static int cluster_wait(srv_job *j) {
    pthread_mutex_lock(&jobs_lock);
    while (!srv__job_terminal(j->state) && !shutting_down) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000 * 1000; /* a poll every 0.2 s */
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&job_cv, &jobs_lock, &ts);
        if (shutting_down) break;
        pthread_mutex_unlock(&jobs_lock);
        int dberr = 0;
        srv_job *f = srv__cluster_get(j->id, &dberr);
        pthread_mutex_lock(&jobs_lock);
        if (f) {
            j->state = f->state;
            j->progress = f->progress;
            j->queue_pos = f->queue_pos;
            j->started = f->started;
            j->finished = f->finished;
            j->attempts = f->attempts;
            memcpy(j->error, f->error, sizeof j->error);
            memcpy(j->error_code, f->error_code, sizeof j->error_code);
            memcpy(j->stems, f->stems, sizeof j->stems);
            j->n_stems = f->n_stems;
        } else if (!dberr) { /* deleted meanwhile */
            j->state = JOB_CANCELLED;
            j->finished = srv_wall();
        }
        pthread_mutex_unlock(&jobs_lock);
        if (f) srv__job_free(f);
        pthread_mutex_lock(&jobs_lock);
    }
    int r = srv__job_terminal(j->state) ? 0 : -1;
    pthread_mutex_unlock(&jobs_lock);
    return r;
}

int srv_job_wait(srv_job *j) {
    if (srv__cluster_on()) return cluster_wait(j);
    pthread_mutex_lock(&jobs_lock);
    while (!srv__job_terminal(j->state) && !shutting_down) pthread_cond_wait(&job_cv, &jobs_lock);
    int r = srv__job_terminal(j->state) ? 0 : -1;
    pthread_mutex_unlock(&jobs_lock);
    return r;
}

int srv_job_delete(srv_job *j) {
    if (srv__cluster_on()) {
        if (srv__cluster_delete(j) < 0) return -1;
        pthread_mutex_lock(&jobs_lock);
        if (!srv__job_terminal(j->state)) {
            j->state = JOB_CANCELLED;
            j->finished = srv_wall();
        }
        j->queue_pos = 0;
        pthread_mutex_unlock(&jobs_lock);
        return 0;
    }
    /* Row first (nothing changes when the store refuses), folder when the
     * last reference goes (a running worker may still be writing into it);
     * see "Durability" above. The row goes without jobs_lock (rows_lock). */
    pthread_mutex_lock(&rows_lock);
    pthread_mutex_lock(&jobs_lock);
    if (!j->deleted) {
        pthread_mutex_unlock(&jobs_lock);
        int rc = srv_store_delete(j->id);
        pthread_mutex_lock(&jobs_lock);
        if (rc < 0) {
            pthread_mutex_unlock(&jobs_lock);
            pthread_mutex_unlock(&rows_lock);
            return -1;
        }
    }
    j->deleted = 1;
    atomic_store(&j->cancel, 1);
    /* A queued job leaves the queue now, so it never runs (one a worker
     * popped while the row went is cancelled by srv__queue_take). */
    if (queue_remove_locked(j)) {
        j->refs--; /* the queue's reference; the caller still holds one */
        j->state = JOB_CANCELLED;
        j->finished = srv_wall();
    }
    for (int i = 0; i < n_all; i++)
        if (all_jobs[i] == j) {
            memmove(all_jobs + i, all_jobs + i + 1, (size_t)(n_all - i - 1) * sizeof *all_jobs);
            n_all--;
            j->refs--;
            break;
        }
    pthread_cond_broadcast(&job_cv);
    pthread_mutex_unlock(&jobs_lock);
    pthread_mutex_unlock(&rows_lock);
    return 0;
}

int srv_jobs_queue_depth(void) {
    if (srv__cluster_on()) {
        srv__cluster_stats st = {0};
        srv__cluster_get_stats(&st);
        return st.queued;
    }
    pthread_mutex_lock(&jobs_lock);
    int n = queue_len;
    pthread_mutex_unlock(&jobs_lock);
    return n;
}

int srv_jobs_unsaved(void) {
    int n = 0;
    pthread_mutex_lock(&jobs_lock);
    for (int i = 0; i < n_all; i++) n += all_jobs[i]->row_stale;
    pthread_mutex_unlock(&jobs_lock);
    return n;
}

int srv_jobs_active(void) {
    pthread_mutex_lock(&jobs_lock);
    int n = n_active;
    pthread_mutex_unlock(&jobs_lock);
    return n;
}

int srv_job_is_done(srv_job *j) {
    pthread_mutex_lock(&jobs_lock);
    int r = j->state == JOB_DONE;
    pthread_mutex_unlock(&jobs_lock);
    return r;
}

/* ---- JSON --------------------------------------------------------------------- */

static void add_time(cJSON *o, const char *key, double t) {
    if (t <= 0) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    char b[40];
    size_t k = strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(b + k, sizeof b - k, ".%03dZ", (int)((t - (double)s) * 1000));
    cJSON_AddStringToObject(o, key, b);
}

static cJSON *job_json_locked(srv_job *j) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "status", srv_job_state_name(j->state));
    cJSON_AddNumberToObject(o, "progress", j->progress);
    /* 1 = the next job a worker takes; null unless queued. */
    if (j->state == JOB_QUEUED && j->queue_pos > 0)
        cJSON_AddNumberToObject(o, "queue_position", j->queue_pos);
    else
        cJSON_AddNullToObject(o, "queue_position");
    cJSON_AddStringToObject(o, "model", j->model);
    if (j->two_stems[0])
        cJSON_AddStringToObject(o, "two_stems", j->two_stems);
    else
        cJSON_AddNullToObject(o, "two_stems");
    cJSON_AddStringToObject(o, "format", j->format);
    cJSON_AddNumberToObject(o, "shifts", j->shifts);
    cJSON_AddNumberToObject(o, "overlap", j->overlap);
    if (j->upload_name) cJSON_AddStringToObject(o, "filename", j->upload_name);
    cJSON_AddNumberToObject(o, "file_size_bytes", (double)j->file_size);
    if (j->audio_seconds > 0)
        cJSON_AddNumberToObject(o, "audio_seconds", j->audio_seconds);
    else
        cJSON_AddNullToObject(o, "audio_seconds");
    add_time(o, "created_at", j->created);
    add_time(o, "started_at", j->started);
    add_time(o, "finished_at", j->finished);
    /* ETA from the progress rate so far. */
    if (j->state == JOB_RUNNING && j->progress > 0.01)
        cJSON_AddNumberToObject(o, "eta_seconds",
                                (srv_wall() - j->started) * (1 - j->progress) / j->progress);
    else
        cJSON_AddNullToObject(o, "eta_seconds");
    cJSON *stems = cJSON_CreateArray();
    /* (a finishing job has its stems named before its end is stored) */
    for (int i = 0; j->state == JOB_DONE && i < j->n_stems; i++) {
        cJSON *s = cJSON_CreateObject();
        char url[256];
        snprintf(url, sizeof url, "/jobs/%s/stems/%s", j->id, j->stems[i]);
        cJSON_AddStringToObject(s, "name", j->stems[i]);
        cJSON_AddStringToObject(s, "url", url);
        cJSON_AddItemToArray(stems, s);
    }
    cJSON_AddItemToObject(o, "stems", stems);
    if (j->state == JOB_FAILED || j->state == JOB_CANCELLED) {
        cJSON *e = cJSON_CreateObject();
        const char *cancelled = srv_error_code(SRV_E_CANCELLED);
        cJSON_AddStringToObject(e, "code", j->error_code[0] ? j->error_code : cancelled);
        cJSON_AddStringToObject(e, "message", j->error[0] ? j->error : cancelled);
        cJSON_AddItemToObject(o, "error", e);
    } else {
        cJSON_AddNullToObject(o, "error");
    }
    return o;
}

cJSON *srv_job_json(srv_job *j) {
    pthread_mutex_lock(&jobs_lock);
    cJSON *o = job_json_locked(j);
    pthread_mutex_unlock(&jobs_lock);
    return o;
}

void srv_jobs_cluster_gauges(srv_metrics_gauges *g) {
    srv__cluster_stats st = {0};
    if (!srv__cluster_on()) return;
    srv__cluster_get_stats(&st);
    g->clustered = 1;
    g->cluster_queue_depth = st.queued;
    g->cluster_jobs_running = st.running;
    g->cluster_workers_live = st.workers_live;
    g->cluster_oldest_queued_seconds = st.oldest_queued_seconds;
}

/* Clustered: the list from the database, or NULL when it cannot answer. */
static cJSON *cluster_list_json(int limit, int offset) {
    srv_job **v = NULL;
    int total = 0, n = srv__cluster_list(limit, offset, &v, &total);
    lookup_db_error = n < 0;
    if (n < 0) return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_CreateArray();
    pthread_mutex_lock(&jobs_lock);
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, job_json_locked(v[i]));
    pthread_mutex_unlock(&jobs_lock);
    for (int i = 0; i < n; i++) srv__job_free(v[i]);
    free(v);
    cJSON_AddNumberToObject(o, "total", total);
    cJSON_AddNumberToObject(o, "limit", limit);
    cJSON_AddNumberToObject(o, "offset", offset);
    cJSON_AddItemToObject(o, "jobs", arr);
    return o;
}

cJSON *srv_jobs_list_json(int limit, int offset) {
    if (srv__cluster_on()) return cluster_list_json(limit, offset);
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_CreateArray();
    pthread_mutex_lock(&jobs_lock);
    for (int i = offset; i < n_all && i < offset + limit; i++)
        cJSON_AddItemToArray(arr, job_json_locked(all_jobs[i]));
    cJSON_AddNumberToObject(o, "total", n_all);
    pthread_mutex_unlock(&jobs_lock);
    cJSON_AddNumberToObject(o, "limit", limit);
    cJSON_AddNumberToObject(o, "offset", offset);
    cJSON_AddItemToObject(o, "jobs", arr);
    return o;
}

/* ---- results -------------------------------------------------------------------- */

char *srv_job_stem_path(srv_job *j, const char *stem) {
    char *p = NULL;
    pthread_mutex_lock(&jobs_lock);
    if (j->state == JOB_DONE)
        for (int i = 0; i < j->n_stems; i++)
            if (!strcmp(j->stems[i], stem)) {
                if (asprintf(&p, "%s/%s.%s", j->dir, stem, j->format) < 0) p = NULL;
                break;
            }
    pthread_mutex_unlock(&jobs_lock);
    return p;
}

int srv_job_stem_files(srv_job *j, char ***paths, char ***names) {
    *paths = *names = NULL;
    pthread_mutex_lock(&jobs_lock);
    int n = j->state == JOB_DONE ? j->n_stems : 0;
    char **p = calloc((size_t)n + 1, sizeof *p), **q = calloc((size_t)n + 1, sizeof *q);
    for (int i = 0; p && q && i < n; i++) {
        if (asprintf(&p[i], "%s/%s.%s", j->dir, j->stems[i], j->format) < 0) p[i] = NULL;
        if (asprintf(&q[i], "%s.%s", j->stems[i], j->format) < 0) q[i] = NULL;
        if (!p[i] || !q[i]) n = -1;
    }
    pthread_mutex_unlock(&jobs_lock);
    if (!p || !q || n <= 0) { /* also when there is nothing to list */
        srv_strv_free(p, n < 0 ? j->n_stems : 0);
        srv_strv_free(q, n < 0 ? j->n_stems : 0);
        return 0;
    }
    *paths = p;
    *names = q;
    return n;
}

void srv_strv_free(char **v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* ---- the worker side -------------------------------------------------------------- */

/* Clustered: a claimed job (its input still there), or NULL once stopping. */
static srv_job *cluster_take(void) {
    srv_job *j;
    while ((j = srv__cluster_take())) {
        pthread_mutex_lock(&jobs_lock);
        n_active++;
        pthread_mutex_unlock(&jobs_lock);
        if (access(j->input, R_OK) == 0) return j;
        srv__job_fail(j, SRV_E_INPUT_LOST, "the uploaded file is not in the data folder");
        srv__queue_finish(j, JOB_FAILED, 0);
        srv_job_put(j);
    }
    return NULL;
}

srv_job *srv__queue_take(void) {
    if (srv__cluster_on()) return cluster_take();
    for (;;) {
        pthread_mutex_lock(&jobs_lock);
        while (!stopping && !queue_head) pthread_cond_wait(&queue_cv, &jobs_lock);
        srv_job *j = stopping ? NULL : queue_pop_locked();
        if (j) {
            j->state = JOB_RUNNING;
            j->started = srv_wall();
            n_active++;
            pthread_cond_broadcast(&job_cv);
        }
        pthread_mutex_unlock(&jobs_lock);
        if (!j) return NULL;
        row_store(j);
        /* A DELETE that was writing its row when the job was popped: the
         * job ends cancelled here and never runs. */
        pthread_mutex_lock(&jobs_lock);
        int gone = j->deleted;
        if (gone) {
            j->state = JOB_CANCELLED;
            j->finished = srv_wall();
            n_active--;
            pthread_cond_broadcast(&job_cv);
        }
        pthread_mutex_unlock(&jobs_lock);
        if (!gone) return j;
        srv_job_put(j); /* the queue's reference */
    }
}

/* The end of a run on job j, or on its row's copy. */
static void finish_fields(srv_job *j, srv_job_state st, int requeue, double now) {
    if (requeue) {
        /* Back to the start: the next process runs it again. */
        j->state = JOB_QUEUED;
        j->progress = 0;
        j->started = 0;
        j->error[0] = j->error_code[0] = '\0';
    } else {
        j->state = st;
        if (st == JOB_DONE) j->progress = 1;
        j->finished = now;
    }
}

int srv__queue_finish(srv_job *j, srv_job_state st, int requeue) {
    const double now = srv_wall();
    if (srv__cluster_on()) {
        pthread_mutex_lock(&jobs_lock);
        finish_fields(j, st, requeue, now);
        pthread_mutex_unlock(&jobs_lock);
        /* the conditional final write, outside the lock (it may retry) */
        int superseded = srv__cluster_finish(j, requeue) == -1;
        pthread_mutex_lock(&jobs_lock);
        n_active--;
        pthread_cond_broadcast(&job_cv);
        pthread_mutex_unlock(&jobs_lock);
        return superseded;
    }
    /* The row first, then what readers see: an end answered (GET, wait=true)
     * is stored, unless the store refused the write (logged; the janitor
     * writes it again, srv__rows_retry). */
    srv_job r;
    pthread_mutex_lock(&rows_lock);
    pthread_mutex_lock(&jobs_lock);
    row_copy_locked(j, &r);
    pthread_mutex_unlock(&jobs_lock);
    finish_fields(&r, st, requeue, now);
    row_write(j, &r);
    pthread_mutex_lock(&jobs_lock);
    finish_fields(j, st, requeue, now);
    n_active--;
    pthread_cond_broadcast(&job_cv);
    pthread_mutex_unlock(&jobs_lock);
    pthread_mutex_unlock(&rows_lock);
    return 0;
}

void srv__job_progress(srv_job *j, double progress) {
    pthread_mutex_lock(&jobs_lock);
    j->progress = progress;
    pthread_mutex_unlock(&jobs_lock);
    if (srv__cluster_on()) srv__cluster_progress(j, progress);
}

void srv__job_fail(srv_job *j, srv_error e, const char *fmt, ...) {
    char msg[sizeof j->error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "job", j->id);
    cJSON_AddStringToObject(f, "error_code", srv_error_code(e));
    cJSON_AddStringToObject(f, "detail", msg);
    srv_log(DMX_LOG_INFO, "demix.jobs", "job_error", j->request_id, f, "job %s: %s", j->id,
            srv_error_code(e));
    srv_error_scrub_paths(msg);
    pthread_mutex_lock(&jobs_lock);
    snprintf(j->error, sizeof j->error, "%s", msg);
    snprintf(j->error_code, sizeof j->error_code, "%s", srv_error_code(e));
    pthread_mutex_unlock(&jobs_lock);
}

void srv__job_set_stems(srv_job *j, char names[][DMX_MAX_STEM_NAME], int n) {
    pthread_mutex_lock(&jobs_lock);
    for (int s = 0; s < n && s < SRV_JOB_MAX_STEMS; s++)
        snprintf(j->stems[s], sizeof j->stems[s], "%.79s", names[s]);
    j->n_stems = n < SRV_JOB_MAX_STEMS ? n : SRV_JOB_MAX_STEMS;
    pthread_mutex_unlock(&jobs_lock);
}

/* ---- recovery, janitor, shutdown ----------------------------------------------------- */

void srv__queue_restore(srv_job **v, int n) {
    pthread_mutex_lock(&jobs_lock);
    for (int i = n - 1; i >= 0; i--)
        if (v[i]->state == JOB_QUEUED) {
            /* The queue's reference; recovered jobs may exceed queue_max:
             * they were accepted once and are not refused now. */
            v[i]->refs++;
            queue_push_locked(v[i]);
        }
    for (int i = 0; i < n && n_all < srv_cfg.history; i++) all_jobs[n_all++] = v[i];
    pthread_mutex_unlock(&jobs_lock);
}

srv_job *srv__jobs_expired(double limit) {
    srv_job *victim = NULL;
    pthread_mutex_lock(&jobs_lock);
    for (int i = n_all - 1; i >= 0 && !victim; i--)
        if (srv__job_terminal(all_jobs[i]->state) && all_jobs[i]->finished > 0 &&
            all_jobs[i]->finished < limit) {
            victim = all_jobs[i];
            victim->refs++;
        }
    pthread_mutex_unlock(&jobs_lock);
    return victim;
}

void srv__queue_stop(double grace) {
    pthread_mutex_lock(&jobs_lock);
    /* Workers take nothing new; queued jobs stay queued in the store. */
    stopping = 1;
    pthread_cond_broadcast(&queue_cv);
    if (srv__cluster_on()) srv__cluster_stop_taking();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + grace;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (n_active > 0)
        if (pthread_cond_timedwait(&job_cv, &jobs_lock, &ts) != 0) break;
    if (n_active > 0) {
        srv_log(DMX_LOG_WARN, "demix.jobs", "shutdown", NULL, NULL,
                "grace period over: checkpointing %d running job(s) as queued", n_active);
        srv__cluster_checkpoint_all(); /* (clustered: this node's running jobs) */
        for (int i = 0; i < n_all; i++)
            if (all_jobs[i]->state == JOB_RUNNING) {
                atomic_store(&all_jobs[i]->shutdown, 1);
                atomic_store(&all_jobs[i]->cancel, 1);
            }
    }
    pthread_mutex_unlock(&jobs_lock);
}

void srv__queue_release_waiters(void) {
    pthread_mutex_lock(&jobs_lock);
    shutting_down = 1;
    pthread_cond_broadcast(&job_cv);
    pthread_mutex_unlock(&jobs_lock);
}

void srv__queue_free(void) {
    pthread_mutex_lock(&jobs_lock);
    while (queue_head) queue_pop_locked()->refs--;
    for (int i = 0; i < n_all; i++)
        if (--all_jobs[i]->refs == 0) srv__job_free(all_jobs[i]);
    n_all = 0;
    free(all_jobs);
    all_jobs = NULL;
    pthread_mutex_unlock(&jobs_lock);
}
