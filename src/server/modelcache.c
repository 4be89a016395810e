/*
 * modelcache.c - the models `demix serve` has loaded, shared by every
 * worker and request.
 *
 * A model is loaded once per name on first use and never freed before
 * shutdown: dmx_model is read-only and shareable. The cache lock guards
 * only the list; a load (resolve, circuit breaker, retries with backoff,
 * which may take seconds) runs without it, so looking up a loaded model,
 * GET /models and loads of other models never wait for it. An entry being
 * loaded is marked `loading`; whoever asks for that model meanwhile waits
 * on the condition variable for that one load (two workers never read the
 * same checkpoint at once) and gets its outcome, success or error. After a
 * failure the next request tries again, through the model's breaker
 * (resilience.c), so a corrupt checkpoint is not re-read for every
 * request.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs_int.h"

typedef struct cached_model {
    char name[128];
    dmx_model *model; /* NULL until loaded */
    int loading;      /* a load is in progress (by one thread) */
    char err[512];    /* the last load's error, for those who waited on it */
    struct cached_model *next;
} cached_model;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cache_cv = PTHREAD_COND_INITIALIZER;
static cached_model *cache;
static atomic_int n_models_loaded;

int srv_models_loaded(void) { return atomic_load(&n_models_loaded); }

int srv_models_is_loaded(const char *name) {
    int loaded = 0;
    pthread_mutex_lock(&cache_lock);
    for (cached_model *m = cache; m && !loaded; m = m->next)
        loaded = m->model && !strcmp(m->name, name);
    pthread_mutex_unlock(&cache_lock);
    return loaded;
}

/* Loads PATH through the model's breaker with retries; NULL and a message
 * (server paths kept out of it; the log line has them) on failure. */
static dmx_model *load(const char *name, const char *path, const char *request_id, char *err,
                       size_t errn) {
    char breaker[160];
    snprintf(breaker, sizeof breaker, "model:%s", name);
    int retry_after = 0;
    if (srv_breaker_acquire(breaker, &retry_after) < 0) {
        snprintf(err, errn, "model '%s' is unavailable (circuit open, retry in %d s)", name,
                 retry_after);
        return NULL;
    }
    double t0 = srv_now();
    dmx_model *mod = NULL;
    dmx_status st;
    for (int attempt = 0;; attempt++) {
        st = dmx_model_load(path, &mod);
        if (st == DMX_OK || !srv_transient(st) || attempt >= srv_cfg.retries) break;
        srv_metrics_retry();
        srv_backoff_sleep(attempt, NULL);
    }
    srv_breaker_record(breaker, st == DMX_OK);
    if (st != DMX_OK) {
        const char *d = dmx_last_error();
        snprintf(err, errn, "cannot load model '%s': %s", name, *d ? d : dmx_status_str(st));
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "model", name);
        cJSON_AddStringToObject(f, "status", "failed");
        cJSON_AddStringToObject(f, "error", err);
        srv_log(DMX_LOG_WARN, "demix.models", "model_load", request_id, f, "cannot load model %s",
                name);
        srv_error_scrub_paths(err);
        return NULL;
    }
    srv_metrics_model_load(name, srv_now() - t0);
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "model", name);
    cJSON_AddStringToObject(f, "path", path);
    cJSON_AddNumberToObject(f, "duration_seconds", srv_now() - t0);
    cJSON_AddNumberToObject(f, "sources", dmx_model_n_sources(mod));
    srv_log(DMX_LOG_INFO, "demix.models", "model_load", request_id, f, "loaded model %s", name);
    return mod;
}

const dmx_model *srv_model_get(const char *name, const char *request_id, char *err, size_t errn) {
    pthread_mutex_lock(&cache_lock);
    cached_model *e = cache;
    while (e && strcmp(e->name, name)) e = e->next;
    int waited = 0;
    while (e && e->loading) {
        waited = 1;
        pthread_cond_wait(&cache_cv, &cache_lock);
    }
    if (e && e->model) {
        pthread_mutex_unlock(&cache_lock);
        return e->model;
    }
    if (e && waited) { /* the load we waited for failed: its error is ours */
        snprintf(err, errn, "%s", e->err);
        pthread_mutex_unlock(&cache_lock);
        return NULL;
    }
    pthread_mutex_unlock(&cache_lock);

    /* Only names that resolve to a file get an entry, so the list stays as
     * short as the model folder whatever names clients send. */
    char *path = srv_models_resolve(name);
    if (!path) {
        snprintf(err, errn, "model '%s' not found", name);
        return NULL;
    }
    pthread_mutex_lock(&cache_lock);
    /* Another thread may have created the entry (and begun a load) since. */
    for (e = cache; e && strcmp(e->name, name); e = e->next) {}
    if (e && (e->loading || e->model)) {
        pthread_mutex_unlock(&cache_lock);
        free(path);
        return srv_model_get(name, request_id, err, errn);
    }
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            pthread_mutex_unlock(&cache_lock);
            free(path);
            snprintf(err, errn, "out of memory");
            return NULL;
        }
        snprintf(e->name, sizeof e->name, "%s", name);
        e->next = cache;
        cache = e;
    }
    e->loading = 1;
    pthread_mutex_unlock(&cache_lock);

    dmx_model *mod = load(name, path, request_id, err, errn);
    free(path);

    pthread_mutex_lock(&cache_lock);
    e->loading = 0;
    e->model = mod;
    if (mod)
        atomic_fetch_add(&n_models_loaded, 1);
    else
        snprintf(e->err, sizeof e->err, "%s", err);
    pthread_cond_broadcast(&cache_cv);
    pthread_mutex_unlock(&cache_lock);
    return mod;
}

void srv__models_free(void) {
    pthread_mutex_lock(&cache_lock);
    while (cache) {
        cached_model *m = cache;
        cache = m->next;
        dmx_model_free(m->model);
        free(m);
    }
    pthread_mutex_unlock(&cache_lock);
}
