/*
 * jobs.c - separation jobs, the worker pool and the model cache of
 * `demix serve`.
 *
 * Design of the queue
 *   Every job lives in one list (all_jobs, newest first) guarded by one mutex
 *   (jobs_lock); the queue is a FIFO of the same objects linked through
 *   job->next, bounded by queue_max so that a burst of uploads is refused
 *   with 503 instead of filling the disk and memory. N worker threads wait on
 *   a condition variable for the FIFO to become non-empty, take the head and
 *   run it without the lock held. State changes (progress, done, failed)
 *   are written under the lock and broadcast on job_cv, which is what
 *   `wait=true` requests and shutdown sleep on.
 *   Jobs are reference counted: the list holds one reference, the queue or
 *   the worker running it one, and every HTTP request looking at it one, so
 *   DELETE can forget a running job while the worker still finishes with it.
 *   Cancellation is the engine's own: an atomic flag polled between segments;
 *   the per-job wall limit (--job-timeout) uses the same flag from the
 *   progress callback and marks the job failed with code "timeout".
 *
 * Persistence
 *   Every state change (queued, running, done/failed/cancelled, delete) is
 *   written to SQLite (store.c) under jobs_lock, so the row and the memory
 *   never disagree. At start-up the newest MAX_HISTORY rows come back:
 *   finished jobs stay downloadable, and jobs that were queued or running
 *   when the process died (kill -9, power cut) go back to the queue, oldest
 *   first (their input file is still in their folder). Uploads that never
 *   became jobs are removed. A janitor thread deletes finished jobs older
 *   than --ttl with their files.
 *
 * Shutdown (SIGTERM)
 *   The HTTP side stops accepting first; then workers stop taking jobs,
 *   running jobs get --grace seconds to finish, and what still runs is
 *   cancelled and written back as queued, so the next start runs it again.
 *   Requests blocked in wait=true are woken and answered 503.
 *
 * Failures
 *   Transient failures (I/O, allocation: dmx_transient) of model loading,
 *   decoding and encoding are retried with full-jitter exponential backoff
 *   (--retries); bad input never is. Model loads go through a circuit
 *   breaker per model (resilience.c) so a corrupt checkpoint is not re-read
 *   for every request.
 *
 * Models
 *   A model is loaded once per name on first use (under models_lock, which
 *   also serialises loads so two workers never read the same checkpoint at
 *   once) and is never freed before shutdown: dmx_model is read-only and
 *   shareable. Each worker owns one dmx_session for the model it ran last,
 *   since sessions hold per-run scratch memory and must not be shared.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "demix/audio.h"
#include "demix/pipeline.h"
#include "server.h"

/* ---- random ids -------------------------------------------------------------- */

int dmx_random_hex(char *out, size_t n_bytes) {
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

/* ---- models -------------------------------------------------------------------- */

typedef struct loaded_model {
    char name[128];
    dmx_model *model;
    struct loaded_model *next;
} loaded_model;

static pthread_mutex_t models_lock = PTHREAD_MUTEX_INITIALIZER;
static loaded_model *models;
static atomic_int n_models_loaded;

static char *model_dir(void) {
    if (dmx_srv_cfg.repo) return strdup(dmx_srv_cfg.repo);
    const char *e = getenv("DEMIX_MODELS");
    if (e && *e) return strdup(e);
    char *p = NULL;
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && *x) {
        if (asprintf(&p, "%s/demix", x) < 0) p = NULL;
    } else {
        const char *h = getenv("HOME");
        if (asprintf(&p, "%s/.cache/demix", h ? h : ".") < 0) p = NULL;
    }
    return p;
}

static int valid_name(const char *s) {
    if (!*s || strlen(s) > 100 || s[0] == '.') return 0;
    for (; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') || ('0' <= *s && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return 0;
    return 1;
}

/* The model name of a file in the folder: NAME of NAME.th, NAME-HASH.th
 * (HASH 8+ hex digits) or NAME.yaml; 0 if the file is not a model. */
static int file_model_name(const char *file, char *name, size_t n) {
    size_t l = strlen(file);
    if (l > 5 && !strcmp(file + l - 5, ".yaml")) {
        snprintf(name, n, "%.*s", (int)(l - 5), file);
        return 1;
    }
    if (l <= 3 || strcmp(file + l - 3, ".th")) return 0;
    l -= 3;
    const char *dash = memrchr(file, '-', l);
    if (dash && (size_t)(file + l - dash - 1) >= 8) {
        int hex = 1;
        for (const char *c = dash + 1; c < file + l; c++)
            if (!strchr("0123456789abcdef", *c)) hex = 0;
        if (hex) l = (size_t)(dash - file);
    }
    snprintf(name, n, "%.*s", (int)l, file);
    return 1;
}

char *dmx_models_resolve(const char *name) {
    if (!valid_name(name)) return NULL;
    char *dir = model_dir();
    if (!dir) return NULL;
    DIR *d = opendir(dir);
    char *hit = NULL, *yaml = NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char nm[256];
        if (e->d_name[0] == '.' || !file_model_name(e->d_name, nm, sizeof nm)) continue;
        if (strcmp(nm, name)) continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, e->d_name) < 0) continue;
        /* A checkpoint wins over a bag of the same name, as upstream's repo. */
        size_t l = strlen(e->d_name);
        if (!strcmp(e->d_name + l - 5 > e->d_name ? e->d_name + l - 5 : e->d_name, ".yaml")) {
            free(yaml);
            yaml = p;
        } else {
            free(hit);
            hit = p;
        }
    }
    if (d) closedir(d);
    free(dir);
    if (hit) {
        free(yaml);
        return hit;
    }
    return yaml;
}

static int cmp_json_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

cJSON *dmx_models_json(void) {
    cJSON *arr = cJSON_CreateArray();
    char *dir = model_dir();
    DIR *d = dir ? opendir(dir) : NULL;
    char **files = NULL;
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char nm[256];
        if (e->d_name[0] == '.' || !file_model_name(e->d_name, nm, sizeof nm)) continue;
        char **nf = realloc(files, (n + 1) * sizeof *files);
        if (!nf) break;
        files = nf;
        files[n++] = strdup(e->d_name);
    }
    if (d) closedir(d);
    if (n) qsort(files, n, sizeof *files, cmp_json_name);
    for (size_t i = 0; i < n; i++) {
        char nm[256], *p = NULL;
        if (!files[i] || !file_model_name(files[i], nm, sizeof nm)) continue;
        if (asprintf(&p, "%s/%s", dir, files[i]) < 0) continue;
        struct stat st;
        int64_t size = stat(p, &st) == 0 ? (int64_t)st.st_size : -1;
        int loaded = 0;
        pthread_mutex_lock(&models_lock);
        for (loaded_model *m = models; m; m = m->next)
            if (!strcmp(m->name, nm)) loaded = 1;
        pthread_mutex_unlock(&models_lock);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", nm);
        cJSON_AddStringToObject(o, "file", files[i]);
        cJSON_AddStringToObject(o, "source", dmx_srv_cfg.repo ? "repo" : "cache");
        cJSON_AddStringToObject(o, "kind", strstr(files[i], ".yaml") ? "bag" : "checkpoint");
        cJSON_AddNumberToObject(o, "size_bytes", (double)size);
        cJSON_AddBoolToObject(o, "loaded", loaded);
        cJSON_AddItemToArray(arr, o);
        free(p);
    }
    for (size_t i = 0; i < n; i++) free(files[i]);
    free(files);
    free(dir);
    return arr;
}

int dmx_models_loaded(void) { return atomic_load(&n_models_loaded); }

/* /health and /readyz ask on every probe: stop at the first model file
 * instead of listing (stat, JSON, sort) the whole folder. */
int dmx_models_any_available(void) {
    char *dir = model_dir();
    DIR *d = dir ? opendir(dir) : NULL;
    int found = 0;
    struct dirent *e;
    while (d && !found && (e = readdir(d))) {
        char nm[256];
        found = e->d_name[0] != '.' && file_model_name(e->d_name, nm, sizeof nm);
    }
    if (d) closedir(d);
    free(dir);
    return found;
}

const dmx_model *dmx_model_get(const char *name, const char *request_id, char *err,
                               size_t errn) {
    pthread_mutex_lock(&models_lock);
    for (loaded_model *m = models; m; m = m->next)
        if (!strcmp(m->name, name)) {
            pthread_mutex_unlock(&models_lock);
            return m->model;
        }
    const dmx_model *res = NULL;
    char *path = dmx_models_resolve(name);
    if (!path) {
        snprintf(err, errn, "model '%s' not found", name);
        goto out;
    }
    char breaker[160];
    snprintf(breaker, sizeof breaker, "model:%s", name);
    int retry_after = 0;
    if (dmx_breaker_acquire(breaker, &retry_after) < 0) {
        snprintf(err, errn, "model '%s' is unavailable (circuit open, retry in %d s)", name,
                 retry_after);
        goto out;
    }
    double t0 = dmx_srv_now();
    dmx_model *mod = NULL;
    dmx_status st;
    for (int attempt = 0;; attempt++) {
        st = dmx_model_load(path, &mod);
        if (st == DMX_OK || !dmx_transient(st) || attempt >= dmx_srv_cfg.retries) break;
        dmx_metrics_retry();
        dmx_backoff_sleep(attempt, NULL);
    }
    dmx_breaker_record(breaker, st == DMX_OK);
    if (st != DMX_OK) {
        const char *d = dmx_last_error();
        snprintf(err, errn, "cannot load model '%s': %s", name, *d ? d : dmx_status_str(st));
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "model", name);
        cJSON_AddStringToObject(f, "status", "failed");
        cJSON_AddStringToObject(f, "error", err);
        dmx_srv_log(DMX_LOG_WARN, "demix.models", "model_load", request_id, f,
                    "cannot load model %s", name);
        goto out;
    }
    dmx_metrics_model_load(name, dmx_srv_now() - t0);
    loaded_model *lm = calloc(1, sizeof *lm);
    if (!lm) {
        dmx_model_free(mod);
        snprintf(err, errn, "out of memory");
        goto out;
    }
    snprintf(lm->name, sizeof lm->name, "%s", name);
    lm->model = mod;
    lm->next = models;
    models = lm;
    atomic_fetch_add(&n_models_loaded, 1);
    res = mod;
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "model", name);
    cJSON_AddStringToObject(f, "path", path);
    cJSON_AddNumberToObject(f, "duration_seconds", dmx_srv_now() - t0);
    cJSON_AddNumberToObject(f, "sources", dmx_model_n_sources(mod));
    dmx_srv_log(DMX_LOG_INFO, "demix.models", "model_load", request_id, f, "loaded model %s",
                name);
out:
    free(path);
    pthread_mutex_unlock(&models_lock);
    return res;
}

/* ---- jobs -------------------------------------------------------------------------- */

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t job_cv = PTHREAD_COND_INITIALIZER;
static dmx_job *queue_head, *queue_tail;
static int queue_len, queue_cap, n_active;
static int stopping;

/* Every known job, newest first; a dynamic array is enough for the
 * in-memory history (the count is bounded by MAX_HISTORY). */
#define MAX_HISTORY 10000
static dmx_job **all_jobs;
static int n_all;

static pthread_t *workers;
static int n_workers;
static pthread_t janitor;
static int janitor_running;
static pthread_cond_t janitor_cv = PTHREAD_COND_INITIALIZER;
static int shutting_down; /* wait=true requests give up */

const char *dmx_job_state_name(dmx_job_state s) {
    static const char *names[] = {"queued", "running", "done", "failed", "cancelled"};
    return names[s];
}

static void job_free(dmx_job *j) {
    free(j->dir);
    free(j->input);
    free(j->upload_name);
    free(j);
}

/* Removes the job's folder (input and stems); ignores what is missing. */
static void job_remove_files(dmx_job *j) {
    if (!j->dir) return;
    DIR *d = opendir(j->dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", j->dir, e->d_name) >= 0) {
            unlink(p);
            free(p);
        }
    }
    if (d) closedir(d);
    rmdir(j->dir);
}

dmx_job *dmx_job_new(void) {
    dmx_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    if (dmx_random_hex(j->id, 16) < 0) {
        free(j);
        return NULL;
    }
    j->refs = 1;
    j->state = JOB_QUEUED;
    j->shifts = 1;
    j->overlap = 0.25;
    snprintf(j->format, sizeof j->format, "wav");
    j->created = dmx_srv_wall();
    return j;
}

void dmx_job_put(dmx_job *j) {
    if (!j) return;
    pthread_mutex_lock(&jobs_lock);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&jobs_lock);
    if (last) {
        if (j->deleted) job_remove_files(j);
        job_free(j);
    }
}

/* Appends j to the FIFO; jobs_lock held. */
static void queue_push_locked(dmx_job *j) {
    j->next = NULL;
    if (queue_tail)
        queue_tail->next = j;
    else
        queue_head = j;
    queue_tail = j;
    queue_len++;
}

int dmx_job_submit(dmx_job *j) {
    pthread_mutex_lock(&jobs_lock);
    if (stopping || queue_len >= queue_cap) {
        pthread_mutex_unlock(&jobs_lock);
        return -1;
    }
    /* History: drop the oldest finished job when full. */
    if (n_all == MAX_HISTORY) {
        dmx_job *old = all_jobs[n_all - 1];
        n_all--;
        old->deleted = 1;
        dmx_store_delete(old->id);
        if (--old->refs == 0) {
            job_remove_files(old);
            job_free(old);
        }
    }
    memmove(all_jobs + 1, all_jobs, (size_t)n_all * sizeof *all_jobs);
    all_jobs[0] = j;
    n_all++;
    j->refs += 2; /* the history list and the queue */
    dmx_store_save(j);
    queue_push_locked(j);
    pthread_cond_signal(&queue_cv);
    pthread_mutex_unlock(&jobs_lock);
    return 0;
}

dmx_job *dmx_job_get(const char *id) {
    dmx_job *r = NULL;
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

static int terminal(dmx_job_state s) { return s == JOB_DONE || s == JOB_FAILED || s == JOB_CANCELLED; }

int dmx_job_wait(dmx_job *j) {
    pthread_mutex_lock(&jobs_lock);
    while (!terminal(j->state) && !shutting_down) pthread_cond_wait(&job_cv, &jobs_lock);
    int r = terminal(j->state) ? 0 : -1;
    pthread_mutex_unlock(&jobs_lock);
    return r;
}

void dmx_job_delete(dmx_job *j) {
    pthread_mutex_lock(&jobs_lock);
    atomic_store(&j->cancel, 1);
    /* A queued job leaves the queue now, so it never runs. */
    dmx_job **pp = &queue_head;
    dmx_job *prev = NULL;
    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = j->next;
        if (queue_tail == j) queue_tail = prev;
        queue_len--;
        j->refs--; /* the queue's reference; the caller still holds one */
        j->state = JOB_CANCELLED;
        j->finished = dmx_srv_wall();
    }
    for (int i = 0; i < n_all; i++)
        if (all_jobs[i] == j) {
            memmove(all_jobs + i, all_jobs + i + 1, (size_t)(n_all - i - 1) * sizeof *all_jobs);
            n_all--;
            j->refs--;
            break;
        }
    /* The files go when the last reference does (a running worker may still
     * be writing them); the row goes now, so a restart does not revive it. */
    j->deleted = 1;
    dmx_store_delete(j->id);
    pthread_cond_broadcast(&job_cv);
    pthread_mutex_unlock(&jobs_lock);
}

int dmx_jobs_queue_depth(void) {
    pthread_mutex_lock(&jobs_lock);
    int n = queue_len;
    pthread_mutex_unlock(&jobs_lock);
    return n;
}

int dmx_jobs_active(void) {
    pthread_mutex_lock(&jobs_lock);
    int n = n_active;
    pthread_mutex_unlock(&jobs_lock);
    return n;
}

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

static cJSON *job_json_locked(dmx_job *j) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "status", dmx_job_state_name(j->state));
    cJSON_AddNumberToObject(o, "progress", j->progress);
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
                                (dmx_srv_wall() - j->started) * (1 - j->progress) / j->progress);
    else
        cJSON_AddNullToObject(o, "eta_seconds");
    cJSON *stems = cJSON_CreateArray();
    for (int i = 0; i < j->n_stems; i++) {
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
        cJSON_AddStringToObject(e, "code", j->error_code[0] ? j->error_code : "cancelled");
        cJSON_AddStringToObject(e, "message", j->error[0] ? j->error : "cancelled");
        cJSON_AddItemToObject(o, "error", e);
    } else {
        cJSON_AddNullToObject(o, "error");
    }
    return o;
}

int dmx_job_is_done(dmx_job *j) {
    pthread_mutex_lock(&jobs_lock);
    int r = j->state == JOB_DONE;
    pthread_mutex_unlock(&jobs_lock);
    return r;
}

cJSON *dmx_job_json(dmx_job *j) {
    pthread_mutex_lock(&jobs_lock);
    cJSON *o = job_json_locked(j);
    pthread_mutex_unlock(&jobs_lock);
    return o;
}

cJSON *dmx_jobs_list_json(int limit, int offset) {
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

char *dmx_job_stem_path(dmx_job *j, const char *stem) {
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

int dmx_job_stem_files(dmx_job *j, char ***paths, char ***names) {
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
        dmx_strv_free(p, n < 0 ? j->n_stems : 0);
        dmx_strv_free(q, n < 0 ? j->n_stems : 0);
        return 0;
    }
    *paths = p;
    *names = q;
    return n;
}

void dmx_strv_free(char **v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* ---- running one job ----------------------------------------------------------------- */

typedef struct worker_state {
    const dmx_model *model; /* the model `session` was made for */
    dmx_session *session;
    int n_threads;
} worker_state;

typedef struct run_ctx {
    dmx_job *j;
    double deadline; /* dmx_srv_now() limit, 0 = none */
} run_ctx;

/* 1 (and the job cancelled as timed out) once the wall limit has passed. */
static int over_time(run_ctx *x) {
    if (x->deadline <= 0 || dmx_srv_now() < x->deadline) return 0;
    x->j->timed_out = 1;
    atomic_store(&x->j->cancel, 1);
    return 1;
}

static int on_progress(void *user, int64_t done, int64_t total) {
    run_ctx *x = user;
    dmx_job *j = x->j;
    pthread_mutex_lock(&jobs_lock);
    /* Keep a little room for encoding so 1.0 means "files written". */
    j->progress = total > 0 ? 0.95 * (double)done / (double)total : 0;
    pthread_mutex_unlock(&jobs_lock);
    return over_time(x) || atomic_load(&j->cancel);
}

static void fail(dmx_job *j, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(dmx_job *j, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&jobs_lock);
    vsnprintf(j->error, sizeof j->error, fmt, ap);
    snprintf(j->error_code, sizeof j->error_code, "%s", code);
    pthread_mutex_unlock(&jobs_lock);
    va_end(ap);
}

/* Runs the job; returns its final state. */
static dmx_job_state run_job(worker_state *w, dmx_job *j) {
    char err[512];
    run_ctx x = {j, 0};
    if (dmx_srv_cfg.job_timeout_seconds > 0) x.deadline = dmx_srv_now() + dmx_srv_cfg.job_timeout_seconds;
    const dmx_model *m = dmx_model_get(j->model, j->request_id, err, sizeof err);
    if (!m) {
        fail(j, "model_unavailable", "%s", err);
        return JOB_FAILED;
    }
    if (w->model != m) {
        dmx_session_free(w->session);
        w->session = NULL;
        w->model = NULL;
        dmx_status st = dmx_session_new(m, &w->session);
        if (st != DMX_OK) {
            fail(j, "internal", "cannot create a session: %s", dmx_status_str(st));
            return JOB_FAILED;
        }
        w->model = m;
    }
    int k2 = -1;
    if (j->two_stems[0] && (k2 = dmx_model_source_index(m, j->two_stems)) < 0) {
        fail(j, "invalid_argument", "model %s has no source '%s'", j->model, j->two_stems);
        return JOB_FAILED;
    }
    dmx_audio_format fmt;
    if (dmx_audio_format_from_name(j->format, &fmt) != DMX_OK ||
        !dmx_audio_container_available(fmt.container)) {
        fail(j, "invalid_argument", "output format '%s' is not available", j->format);
        return JOB_FAILED;
    }

    /* The stems to write: all, or STEM and no_STEM (sum of the others, as
     * the CLI's default --other-method add). */
    char names[DMX_JOB_MAX_STEMS + 1][DMX_MAX_STEM_NAME];
    int n_out = dmx_file_stems(m, k2 >= 0 ? j->two_stems : NULL, DMX_OTHER_ADD, names, DMX_JOB_MAX_STEMS);
    if (n_out < 1 || n_out > DMX_JOB_MAX_STEMS) {
        fail(j, "internal", "cannot name the stems of model %s", j->model);
        return JOB_FAILED;
    }
    char *paths[DMX_JOB_MAX_STEMS];
    for (int s = 0; s < n_out; s++)
        if (asprintf(&paths[s], "%s/%s.%s", j->dir, names[s], j->format) < 0) paths[s] = NULL;
    for (int s = 0; s < n_out; s++)
        if (!paths[s]) {
            for (int q = 0; q < n_out; q++) free(paths[q]);
            fail(j, "out_of_memory", "out of memory");
            return JOB_FAILED;
        }

    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.shifts = j->shifts;
    o.overlap = j->overlap;
    o.n_threads = w->n_threads;
    o.progress = on_progress;
    o.progress_user = &x;
    o.cancel = &j->cancel;
    /* the same streaming pipeline as `demix separate` with its defaults
     * (rescale anti-clipping): memory does not grow with the upload */
    dmx_file_job fj = {j->input, k2 >= 0 ? j->two_stems : NULL, DMX_OTHER_ADD, DMX_CLIP_RESCALE, fmt,
                       (const char *const *)paths, n_out,
                       (int64_t)(dmx_srv_cfg.max_duration_seconds * dmx_model_samplerate(m))};
    dmx_job_state result = JOB_FAILED;
    dmx_status st;
    int64_t n = 0;
    double t_inf = dmx_srv_now();
    for (int attempt = 0;; attempt++) {
        st = dmx_separate_file(w->session, &fj, &o, &n);
        /* transient failures only (I/O, memory); never bad input */
        if (st == DMX_OK || !dmx_transient(st) || attempt >= dmx_srv_cfg.retries || atomic_load(&j->cancel))
            break;
        dmx_metrics_retry();
        dmx_backoff_sleep(attempt, &j->cancel);
    }
    if (st == DMX_OK) dmx_metrics_inference(j->model, dmx_srv_now() - t_inf);
    if (st == DMX_ERR_CANCELLED || (st != DMX_OK && atomic_load(&j->cancel))) {
        /* a timeout also cancels (through the progress callback); the worker
         * reports j->timed_out jobs as failed with code "timeout" */
        result = JOB_CANCELLED;
        fail(j, "cancelled", "cancelled");
    } else if (st == DMX_ERR_BAD_INPUT) {
        /* the pipeline's only BAD_INPUT: past max_frames (--max-duration) */
        fail(j, "audio_too_long", "the audio lasts longer than this server's limit of %g s",
             dmx_srv_cfg.max_duration_seconds);
    } else if (st == DMX_ERR_DECODE || (st == DMX_ERR_IO && n == 0)) {
        const char *d = dmx_last_error();
        fail(j, "undecodable_audio", "%s", *d ? d : dmx_status_str(st));
    } else if (st == DMX_ERR_ENCODE || st == DMX_ERR_IO) {
        const char *d = dmx_last_error();
        fail(j, "encode_failed", "cannot write the stems: %s", *d ? d : dmx_status_str(st));
    } else if (st != DMX_OK) {
        const char *d = dmx_last_error();
        fail(j, "separation_failed", "%s", *d ? d : dmx_status_str(st));
    } else {
        pthread_mutex_lock(&jobs_lock);
        for (int s = 0; s < n_out; s++) snprintf(j->stems[s], sizeof j->stems[s], "%.79s", names[s]);
        j->n_stems = n_out;
        pthread_mutex_unlock(&jobs_lock);
        result = JOB_DONE;
    }
    for (int s = 0; s < n_out; s++) free(paths[s]);
    return result;
}

static void *worker_main(void *arg) {
    worker_state w = {0};
    w.n_threads = (int)(intptr_t)arg;
    pthread_mutex_lock(&jobs_lock);
    for (;;) {
        while (!stopping && !queue_head) pthread_cond_wait(&queue_cv, &jobs_lock);
        if (stopping) break;
        dmx_job *j = queue_head;
        queue_head = j->next;
        if (!queue_head) queue_tail = NULL;
        queue_len--;
        j->state = JOB_RUNNING;
        j->started = dmx_srv_wall();
        n_active++;
        dmx_store_save(j);
        pthread_cond_broadcast(&job_cv);
        pthread_mutex_unlock(&jobs_lock);
        dmx_metrics_job(j->file_size, j->audio_seconds, j->started - j->created);

        double t0 = dmx_srv_now();
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "job", j->id);
        cJSON_AddStringToObject(f, "model", j->model);
        dmx_srv_log(DMX_LOG_INFO, "demix.jobs", "separation_start", j->request_id, f,
                    "job %s started", j->id);
        dmx_job_state st = run_job(&w, j);
        double dt = dmx_srv_now() - t0;
        if (st != JOB_DONE && st != JOB_CANCELLED && atomic_load(&j->cancel)) st = JOB_CANCELLED;
        if (st == JOB_CANCELLED && j->timed_out) {
            st = JOB_FAILED;
            fail(j, "timeout", "the job ran past its limit of %g s",
                 dmx_srv_cfg.job_timeout_seconds);
        }
        int requeue = st == JOB_CANCELLED && j->shutdown;
        if (!requeue) dmx_metrics_separation(j->model, dmx_job_state_name(st), dt);
        f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "job", j->id);
        cJSON_AddStringToObject(f, "model", j->model);
        cJSON_AddStringToObject(f, "status", requeue ? "checkpointed" : dmx_job_state_name(st));
        cJSON_AddNumberToObject(f, "processing_duration_seconds", dt);
        cJSON_AddNumberToObject(f, "audio_seconds", j->audio_seconds);
        if (st != JOB_DONE) cJSON_AddStringToObject(f, "error", j->error);
        if (st != JOB_DONE) cJSON_AddStringToObject(f, "error_code", j->error_code);
        dmx_srv_log(st == JOB_FAILED ? DMX_LOG_WARN : DMX_LOG_INFO, "demix.jobs", "separation",
                    j->request_id, f, "job %s %s", j->id,
                    requeue ? "checkpointed as queued" : dmx_job_state_name(st));

        pthread_mutex_lock(&jobs_lock);
        if (requeue) {
            /* Back to the start: the next process runs it again. */
            j->state = JOB_QUEUED;
            j->progress = 0;
            j->started = 0;
            j->error[0] = j->error_code[0] = '\0';
        } else {
            j->state = st;
            if (st == JOB_DONE) j->progress = 1;
            j->finished = dmx_srv_wall();
        }
        if (!j->deleted) dmx_store_save(j);
        n_active--;
        pthread_cond_broadcast(&job_cv);
        int last = --j->refs == 0;
        if (last) {
            pthread_mutex_unlock(&jobs_lock);
            if (j->deleted) job_remove_files(j);
            job_free(j);
            pthread_mutex_lock(&jobs_lock);
        }
    }
    pthread_mutex_unlock(&jobs_lock);
    dmx_session_free(w.session);
    return NULL;
}

/* ---- start-up: the store, recovery, the janitor ------------------------------------ */

typedef struct loaded_rows {
    dmx_job **v;
    int n, cap;
} loaded_rows;

static int collect_row(void *user, dmx_job *j) {
    loaded_rows *r = user;
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        dmx_job **nv = realloc(r->v, (size_t)cap * sizeof *nv);
        if (!nv) {
            job_free(j);
            return -1;
        }
        r->v = nv;
        r->cap = cap;
    }
    r->v[r->n++] = j;
    return 0;
}

static void remove_dir_files(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, e->d_name) >= 0) unlink(p);
        free(p);
    }
    if (d) closedir(d);
}

/* Deletes every file in a job folder but its input. */
static void remove_outputs(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "input")) continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, e->d_name) >= 0) unlink(p);
        free(p);
    }
    if (d) closedir(d);
}

/* Rows come back newest first; the history keeps that order and the queue
 * gets the interrupted ones oldest first, as they were submitted. */
static int recover_jobs(void) {
    loaded_rows rows = {0};
    dmx_store_load(collect_row, &rows, MAX_HISTORY);
    int requeued = 0, kept = 0;
    for (int i = rows.n - 1; i >= 0; i--) {
        dmx_job *j = rows.v[i];
        if (asprintf(&j->dir, "%s/jobs/%s", dmx_srv_cfg.data_dir, j->id) < 0 ||
            asprintf(&j->input, "%s/input", j->dir) < 0) {
            job_free(j);
            rows.v[i] = NULL;
            continue;
        }
        j->refs = 1; /* the history list */
        if (!terminal(j->state)) {
            j->state = JOB_QUEUED;
            j->progress = 0;
            j->started = 0;
            /* What an interrupted run wrote (".part" stems, spills) is
             * partial by definition and would outlive a job that cannot run. */
            remove_outputs(j->dir);
            if (access(j->input, R_OK) < 0) {
                j->state = JOB_FAILED;
                j->finished = dmx_srv_wall();
                snprintf(j->error_code, sizeof j->error_code, "input_lost");
                snprintf(j->error, sizeof j->error, "the uploaded file was lost in a restart");
            } else {
                /* The queue's reference; recovered jobs may exceed queue_max:
                 * they were accepted once and are not refused now. */
                j->refs++;
                queue_push_locked(j);
                requeued++;
                cJSON *f = cJSON_CreateObject();
                cJSON_AddStringToObject(f, "job", j->id);
                cJSON_AddStringToObject(f, "model", j->model);
                dmx_srv_log(DMX_LOG_INFO, "demix.jobs", "job_requeued", j->request_id, f,
                            "job %s re-queued after a restart", j->id);
            }
            dmx_store_save(j);
        }
        kept++;
    }
    /* all_jobs is newest first, like the rows. */
    for (int i = 0; i < rows.n; i++)
        if (rows.v[i]) all_jobs[n_all++] = rows.v[i];
    free(rows.v);
    cJSON *f = cJSON_CreateObject();
    cJSON_AddNumberToObject(f, "jobs", kept);
    cJSON_AddNumberToObject(f, "requeued", requeued);
    dmx_srv_log(DMX_LOG_INFO, "demix.jobs", "recovery", NULL, f,
                "%d stored job(s), %d re-queued", kept, requeued);
    return 0;
}

/* Deletes finished jobs older than the TTL (from their end), with their
 * files; running and queued jobs are never expired. */
static void sweep(void) {
    double limit = dmx_srv_wall() - dmx_srv_cfg.ttl_seconds;
    for (;;) {
        dmx_job *victim = NULL;
        pthread_mutex_lock(&jobs_lock);
        for (int i = n_all - 1; i >= 0 && !victim; i--)
            if (terminal(all_jobs[i]->state) && all_jobs[i]->finished > 0 &&
                all_jobs[i]->finished < limit) {
                victim = all_jobs[i];
                victim->refs++;
            }
        pthread_mutex_unlock(&jobs_lock);
        if (!victim) break;
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "job", victim->id);
        dmx_srv_log(DMX_LOG_INFO, "demix.jobs", "job_expired", victim->request_id, f,
                    "job %s expired", victim->id);
        dmx_job_delete(victim);
        dmx_job_put(victim);
    }
}

static void *janitor_main(void *arg) {
    (void)arg;
    /* Often enough that a result outlives its TTL by at most a quarter of
     * it (and never more than a minute). */
    double every = dmx_srv_cfg.ttl_seconds / 4;
    if (every > 60) every = 60;
    if (every < 0.2) every = 0.2;
    pthread_mutex_lock(&jobs_lock);
    while (!stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + every;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&janitor_cv, &jobs_lock, &ts);
        if (stopping) break;
        pthread_mutex_unlock(&jobs_lock);
        sweep();
        pthread_mutex_lock(&jobs_lock);
    }
    pthread_mutex_unlock(&jobs_lock);
    return NULL;
}

int dmx_jobs_start(int n, int qmax) {
    queue_cap = qmax;
    all_jobs = calloc(MAX_HISTORY, sizeof *all_jobs);
    workers = calloc((size_t)n, sizeof *workers);
    if (!all_jobs || !workers) return -1;
    char *dbp = NULL, *up = NULL;
    if (asprintf(&dbp, "%s/demix.db", dmx_srv_cfg.data_dir) < 0) return -1;
    int rc = dmx_store_open(dbp);
    free(dbp);
    if (rc < 0) return -1;
    /* No request is in flight yet: whatever is in uploads/ was cut off by a
     * crash and will never become a job. */
    if (asprintf(&up, "%s/uploads", dmx_srv_cfg.data_dir) >= 0) remove_dir_files(up);
    free(up);
    pthread_mutex_lock(&jobs_lock);
    recover_jobs();
    pthread_mutex_unlock(&jobs_lock);
    sweep();
    /* demix.h's one rule for dividing the CPUs between the workers */
    int per = dmx_threads_divide(dmx_cpu_count(), n, 0).threads_per_job;
    for (int i = 0; i < n; i++) {
        if (pthread_create(&workers[i], NULL, worker_main, (void *)(intptr_t)per)) return -1;
        n_workers++;
    }
    if (pthread_create(&janitor, NULL, janitor_main, NULL) == 0) janitor_running = 1;
    return 0;
}

void dmx_jobs_stop(double grace) {
    pthread_mutex_lock(&jobs_lock);
    /* Workers take nothing new; queued jobs stay queued in the store. */
    stopping = 1;
    pthread_cond_broadcast(&queue_cv);
    pthread_cond_broadcast(&janitor_cv);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + grace;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (n_active > 0)
        if (pthread_cond_timedwait(&job_cv, &jobs_lock, &ts) != 0) break;
    if (n_active > 0) {
        dmx_srv_log(DMX_LOG_WARN, "demix.jobs", "shutdown", NULL, NULL,
                    "grace period over: checkpointing %d running job(s) as queued", n_active);
        for (int i = 0; i < n_all; i++)
            if (all_jobs[i]->state == JOB_RUNNING) {
                all_jobs[i]->shutdown = 1;
                atomic_store(&all_jobs[i]->cancel, 1);
            }
    }
    pthread_mutex_unlock(&jobs_lock);
    for (int i = 0; i < n_workers; i++) pthread_join(workers[i], NULL);
    if (janitor_running) pthread_join(janitor, NULL);
    free(workers);
    workers = NULL;
    n_workers = 0;
    /* Requests blocked in wait=true give up (they answer 503). */
    pthread_mutex_lock(&jobs_lock);
    shutting_down = 1;
    pthread_cond_broadcast(&job_cv);
    pthread_mutex_unlock(&jobs_lock);
}

/* After the HTTP daemon has stopped (no request holds a job any more). */
void dmx_jobs_free(void) {
    pthread_mutex_lock(&jobs_lock);
    while (queue_head) {
        dmx_job *j = queue_head;
        queue_head = j->next;
        j->refs--;
    }
    queue_tail = NULL;
    queue_len = 0;
    for (int i = 0; i < n_all; i++)
        if (--all_jobs[i]->refs == 0) job_free(all_jobs[i]);
    n_all = 0;
    free(all_jobs);
    all_jobs = NULL;
    pthread_mutex_unlock(&jobs_lock);
    pthread_mutex_lock(&models_lock);
    while (models) {
        loaded_model *m = models;
        models = m->next;
        dmx_model_free(m->model);
        free(m);
    }
    pthread_mutex_unlock(&models_lock);
    dmx_store_close();
}
