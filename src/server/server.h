/*
 * server.h - what the files of `demix serve` share: configuration, JSON
 * logging (log.c), metrics (metrics.c), the job queue and model cache
 * (jobs.c), and the HTTP front end (http.c, routes.c). Internal to the
 * server; the only entry point used elsewhere is dmx_serve_main().
 */
#ifndef DEMIX_SERVER_H
#define DEMIX_SERVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "demix/demix.h"

#ifndef DEMIX_SERVER_VERSION
#define DEMIX_SERVER_VERSION DMX_VERSION_STRING
#endif

/* Entry point of `demix serve`; argv[0] is "serve". Returns an exit status. */
int dmx_serve_main(int argc, char **argv);

typedef struct dmx_srv_config {
    const char *host;
    int port;
    const char *repo;     /* model folder, or NULL for the cache */
    const char *data_dir; /* uploads and job results */
    int workers;
    int64_t max_upload_bytes;
    int queue_max;
} dmx_srv_config;

extern dmx_srv_config dmx_srv_cfg;
extern double dmx_srv_start_time; /* dmx_srv_now() at startup */

/* Seconds on a monotonic clock / since the Unix epoch. */
double dmx_srv_now(void);
double dmx_srv_wall(void);

/* ---- log.c ----------------------------------------------------------------- */

/* Writes one JSON line on stderr. `fields` (may be NULL) is consumed and
 * becomes the "fields" object; request_id may be NULL. Thread-safe. */
void dmx_srv_log(dmx_log_level level, const char *logger, const char *event_type,
                 const char *request_id, cJSON *fields, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Sink for dmx_log_set(): engine and FFmpeg messages as JSON lines. */
void dmx_srv_engine_log(void *user, dmx_log_level level, const char *msg);

/* ---- metrics.c ------------------------------------------------------------- */

void dmx_metrics_http(const char *method, const char *endpoint, int status, double seconds);
void dmx_metrics_separation(const char *model, const char *status, double seconds);
void dmx_metrics_error(const char *type, const char *endpoint);
/* Prometheus text exposition (0.0.4); malloc'ed. */
char *dmx_metrics_render(void);

/* ---- jobs.c ---------------------------------------------------------------- */

typedef enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED } dmx_job_state;

#define DMX_JOB_MAX_STEMS 8

typedef struct dmx_job {
    char id[33];
    char request_id[65];
    char model[128];
    char two_stems[64];
    char format[8];
    int shifts;
    double overlap;
    char *dir;        /* data_dir/jobs/ID */
    char *input;      /* the uploaded file inside dir */
    char *upload_name;/* client's file name */
    /* Guarded by the jobs lock: */
    dmx_job_state state;
    double progress;
    char error[512];
    char error_code[32];
    int n_stems;
    char stems[DMX_JOB_MAX_STEMS][80];
    double created, started, finished; /* wall clock */
    int refs;
    int deleted;
    atomic_int cancel;
    struct dmx_job *next; /* queue link */
} dmx_job;

/* Starts the worker threads. Returns 0 or -1. */
int dmx_jobs_start(int n_workers, int queue_max);
/* Cancels what runs, stops the workers and frees everything. */
void dmx_jobs_stop(void);
/* New job (refs = 1, owned by the caller) with a fresh 128-bit id. */
dmx_job *dmx_job_new(void);
/* Queues the job (the queue takes its own reference). Returns 0, or -1
 * when the queue is full. */
int dmx_job_submit(dmx_job *j);
/* Looks up by id; NULL or a new reference to drop with dmx_job_put(). */
dmx_job *dmx_job_get(const char *id);
void dmx_job_put(dmx_job *j);
/* Waits until the job ends (done, failed or cancelled). */
void dmx_job_wait(dmx_job *j);
/* Cancels a queued/running job, forgets it and deletes its files. */
void dmx_job_delete(dmx_job *j);
/* JSON of the job (takes the jobs lock). */
cJSON *dmx_job_json(dmx_job *j);
/* The `limit` most recent jobs, newest first. */
cJSON *dmx_jobs_list_json(int limit, int offset);
const char *dmx_job_state_name(dmx_job_state s);
int dmx_jobs_queue_depth(void);
int dmx_jobs_active(void);
/* Path of a finished job's stem file (malloc'ed) or NULL. */
char *dmx_job_stem_path(dmx_job *j, const char *stem);

/* Model registry: resolves NAME in --repo (or the cache) to a file. */
char *dmx_models_resolve(const char *name);
/* JSON array of the available models, with source and loaded flag. */
cJSON *dmx_models_json(void);
int dmx_models_loaded(void);
/* 1 if at least one model file is available. */
int dmx_models_any_available(void);

/* Random lowercase hex of n_bytes bytes into out (2 * n_bytes + 1). */
int dmx_random_hex(char *out, size_t n_bytes);

#endif
