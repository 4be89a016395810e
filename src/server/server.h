/*
 * server.h - what the files of `demix serve` share: configuration, JSON
 * logging (log.c), metrics (metrics.c), the jobs (jobs.c and the files it
 * lists), the models (models.c, modelcache.c) and the HTTP front end
 * (http.c, routes.c, separate.c). Internal to the
 * server; the only entry point used elsewhere is srv_serve_main().
 */
#ifndef DEMIX_SERVER_H
#define DEMIX_SERVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "demix/demix.h"
#include "errors.h"

#ifndef DEMIX_SERVER_VERSION
#define DEMIX_SERVER_VERSION DMX_VERSION_STRING
#endif

/* Entry point of `demix serve`; argv[0] is "serve". Returns an exit status. */
int srv_serve_main(int argc, char **argv);
/* Entry point of `demix worker` (argv[0] "worker"): the same start-up with
 * role "worker": runs jobs from the PostgreSQL queue, HTTP for the probes
 * and /metrics only. */
int srv_worker_main(int argc, char **argv);

/* Every field has a flag and a DEMIX_* variable (serve.c, docs/API.md). */
typedef struct srv_config {
    const char *host;
    int port;
    const char *repo;     /* model folder, or NULL for the cache */
    const char *data_dir; /* demix.db, uploads and job results */
    const char *store;    /* --store: sqlite:PATH or postgresql://...; NULL = DATA_DIR/demix.db */
    int workers;
    int64_t max_upload_bytes;
    int queue_max;
    int history;                 /* jobs kept listed; past it the oldest finished one goes */
    double ttl_seconds;          /* finished jobs are kept this long */
    double job_timeout_seconds;  /* wall limit of one job; 0 = none */
    double idle_timeout_seconds; /* a connection silent this long is dropped */
    int max_connections;         /* open HTTP connections at once */
    int max_connections_per_ip;  /* of those, from one peer address; 0 = no limit */
    int probe_port;              /* listener for the probes only; -1 = none */
    double max_duration_seconds; /* longer audio is refused (422); 0 = no limit */
    int64_t min_free_disk_bytes; /* uploads are refused (507) below this free space */
    double grace_seconds;        /* SIGTERM: how long running jobs may finish */
    double rate_per_minute;      /* POST /separate per client; 0 = unlimited */
    int rate_burst;
    const char *trusted_proxies; /* comma-separated IPs whose X-Forwarded-For counts */
    int breaker_threshold;       /* consecutive load failures that open a breaker */
    double breaker_open_seconds;
    int breaker_probes; /* trial loads admitted at once while half-open */
    int retries;        /* extra attempts for transient failures */
    double retry_base_seconds;
    double metrics_interval_seconds; /* system gauges refresh */
    const char *api_key;             /* NULL: job routes are open */
    const char *alerts_token;        /* NULL: POST /alerts is open */
    int log_text;                    /* 1: human-readable lines instead of JSON */
    int log_level;                   /* a dmx_log_level: lines below it are dropped */
    /* The clustered mode (--store postgresql://..., cluster.c): */
    const char *role;         /* "all" (serve), "api" (serve --no-workers), "worker" */
    int no_workers;           /* --no-workers: an API node, runs no job */
    int threads;              /* compute threads in all for the workers; 0 = every CPU */
    double lease_seconds;     /* a claimed job's lease */
    double heartbeat_seconds; /* lease renewal, workers table, cluster metrics */
    double poll_seconds;      /* idle workers look at the queue this often without NOTIFY */
    int max_attempts;         /* claims of one job before a lost lease fails it */
} srv_config;

extern srv_config srv_cfg;
/* Every field at its documented default (serve.c: the one place defaults are written). */
void srv_config_defaults(srv_config *c);
extern double srv_start_time; /* srv_now() at startup */

/* Seconds on a monotonic clock / since the Unix epoch. */
double srv_now(void);
double srv_wall(void);

/* ---- log.c (a leaf: cJSON only) --------------------------------------------- */

/* Output format (1: text lines) and the lowest level written; JSON and
 * info until called. */
void srv_log_configure(int text, int level);
/* Copies src (NULL = "") into dst of cap bytes as valid UTF-8: invalid bytes
 * become '?', and a cut at cap never splits a character. dst may be src.
 * Returns the length. The one truncation rule for log and label strings. */
size_t srv_utf8_copy(char *dst, size_t cap, const char *src);

/* Writes one JSON line on stderr. `fields` (may be NULL) is consumed and
 * becomes the "fields" object; request_id may be NULL. Thread-safe. */
void srv_log(dmx_log_level level, const char *logger, const char *event_type,
             const char *request_id, cJSON *fields, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Sink for dmx_log_set(): engine and FFmpeg messages as log lines, rate
 * limited (a burst, then a few per second); the count of dropped ones is
 * logged when lines pass again or at srv_log_flush(). */
void srv_engine_log(void *user, dmx_log_level level, const char *msg);
void srv_log_flush(void);

/* ---- metrics.c (a leaf: needs log.c only) ---------------------------------- */

void srv_metrics_http(const char *method, const char *endpoint, int status, double seconds);
void srv_metrics_separation(const char *model, const char *status, double seconds);
void srv_metrics_error(const char *type, const char *endpoint);
void srv_metrics_job(int64_t file_bytes, double audio_seconds, double queue_wait_seconds);
void srv_metrics_model_load(const char *model, double seconds);
void srv_metrics_inference(const char *model, double seconds);
/* alertname and severity come from outside: names of deploy's alert rules
 * always get their own series, at most SRV_METRICS_OUTSIDE_ALERTS other
 * names do, later ones are counted as alertname="other"; severities other
 * than critical, warning, info and none become "other". */
#define SRV_METRICS_OUTSIDE_ALERTS 16
void srv_metrics_alert(const char *alertname, const char *severity, const char *status);
void srv_metrics_rate_limited(void);
void srv_metrics_retry(void);
/* A job's row write after its acceptance refused by the store. */
void srv_metrics_store_write_failure(void);
/* Leases this node found expired and re-queued (or failed): n more. */
void srv_metrics_lease_expirations(int n);
void srv_metrics_breaker_transition(const char *breaker, const char *from, const char *to);
/* Series that exist at 0 before their first event, so that increase() and
 * rate() see the first one: separations_total{model,status} (and the
 * model's duration histogram), errors_total{type,endpoint}. Idempotent. */
void srv_metrics_declare_separation(const char *model, const char *status);
void srv_metrics_declare_error(const char *type, const char *endpoint);
/* Sizes the upload-size histogram buckets to the upload limit. */
void srv_metrics_init(int64_t max_upload_bytes);

typedef struct srv_sys_sample {
    double cpu_percent, mem_used, mem_avail, mem_percent, disk_used, disk_free;
    int64_t temp_files, temp_bytes;
    int disk_low; /* srv_data_disk_low() */
} srv_sys_sample;

/* The gauges of one scrape, gathered by the caller (GET /metrics) so the
 * renderer calls nothing of jobs, resilience or the store. */
typedef struct srv_metrics_gauges {
    int models_loaded, active_sessions, queue_depth, rate_limit_buckets;
    int jobs_unsaved;          /* jobs whose last row write the store refused */
    double process_start_time; /* Unix time */
    srv_sys_sample sys;
    int n_breakers;
    const char *const *breaker_names; /* n_breakers each */
    const int *breaker_states;        /* 0 closed, 1 open, 2 half-open */
    const char *role;                 /* demix_node_info{role}: "all", "api" or "worker" */
    int clustered;                    /* 1: the demix_cluster_* gauges below are rendered */
    int cluster_queue_depth, cluster_jobs_running, cluster_workers_live;
    double cluster_oldest_queued_seconds;
} srv_metrics_gauges;
/* Prometheus text exposition (0.0.4) of the counters and `g`; malloc'ed. */
char *srv_metrics_render(const srv_metrics_gauges *g);

/* routes.c: declares at 0 the counters the route table, the error table and
 * the available models imply (serve.c at start, GET /metrics per scrape). */
void srv_routes_declare_metrics(void);

/* ---- sysmetrics.c ---------------------------------------------------------- */

/* Background thread refreshing the system gauges every
 * metrics_interval_seconds and logging them (event_type system_metrics). */
int srv_sysmetrics_start(void);
/* The latest sample (zeros before the first). */
void srv_sysmetrics_get(srv_sys_sample *out);
void srv_sysmetrics_stop(void);

/* ---- alerts.c (a leaf: log.c and metrics.c) --------------------------------- */

/* Validates an Alertmanager webhook body and logs and counts each alert
 * (no HTTP: tests/fuzz/fuzz_alerts.c calls it directly). Returns the number
 * of alerts, -1 if the body is not JSON, -2 if the payload is malformed
 * (*why says how; the batch is then refused whole, nothing logged). */
int srv_alerts_receive(const char *body, size_t len, const char *request_id, const char **why);

/* ---- jobs.c, queue.c: the job queue ------------------------------------------ */

typedef enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED } srv_job_state;

#define SRV_JOB_MAX_STEMS 8

typedef struct srv_job {
    char id[33];
    char request_id[65];
    char model[128];
    char two_stems[64];
    char format[8];
    int shifts;
    double overlap;
    char *dir;            /* data_dir/jobs/ID */
    char *input;          /* the uploaded file inside dir */
    char *stage;          /* clustered: this attempt's output folder (dir/run-N), else NULL */
    char *upload_name;    /* client's file name */
    int64_t file_size;    /* upload bytes */
    double audio_seconds; /* from the container, 0 if unknown */
    /* Guarded by the jobs lock: */
    srv_job_state state;
    double progress;
    char error[512];
    char error_code[32];
    int n_stems;
    char stems[SRV_JOB_MAX_STEMS][80];
    double created, started, finished; /* wall clock */
    int refs;
    int deleted;
    atomic_int cancel;
    atomic_int shutdown;  /* cancelled by SIGTERM: checkpointed as queued */
    int timed_out;        /* cancelled by the wall limit */
    int expiry_deferred;  /* the janitor's: its expiry was refused by the store (logged once) */
    int row_stale;        /* its last row write was refused: the janitor writes it again */
    int queue_pos;        /* 1-based place in the queue while queued, else 0 */
    int attempts;         /* clustered: claims so far (the lease's generation) */
    struct srv_job *next; /* queue link */
} srv_job;

/* Opens DATA_DIR/demix.db, re-queues interrupted jobs, starts the worker
 * threads and the janitor. Returns 0 or -1. */
int srv_jobs_start(int n_workers, int queue_max);
/* Stops taking jobs, lets running ones finish for up to grace seconds,
 * then cancels them and records them as queued (a restart runs them
 * again); joins the workers and frees everything. */
void srv_jobs_stop(double grace);
/* Frees the jobs, models and the store once no request can use them. */
void srv_jobs_free(void);
/* New job (refs = 1, owned by the caller) with a fresh 128-bit id; the
 * caller fills in the request (separate.c holds the defaults). */
srv_job *srv_job_new(void);
/* Stores the job's row and queues it (the queue takes its own reference).
 * Returns 0 once the job is durable and queued, or -1 with *why:
 * SRV_E_QUEUE_FULL, SRV_E_SHUTTING_DOWN, SRV_E_STORE_UNAVAILABLE (the row
 * could not be written) or SRV_E_INSUFFICIENT_STORAGE (the disk is full);
 * then nothing refers to the job and the caller removes its files. */
int srv_job_submit(srv_job *j, srv_error *why);
/* Looks up by id; NULL or a new reference to drop with srv_job_put(). */
srv_job *srv_job_get(const char *id);
void srv_job_put(srv_job *j);
/* Waits until the job ends (done, failed or cancelled): 0, or -1 when the
 * server is shutting down first. */
int srv_job_wait(srv_job *j);
/* Cancels a queued/running job, forgets it and deletes its files: 0, or
 * -1 when the job store could not delete its row (nothing changed). */
int srv_job_delete(srv_job *j);
/* 1 if the job finished successfully. */
int srv_job_is_done(srv_job *j);
/* JSON of the job (takes the jobs lock). */
cJSON *srv_job_json(srv_job *j);
/* The `limit` most recent jobs, newest first. */
cJSON *srv_jobs_list_json(int limit, int offset);
const char *srv_job_state_name(srv_job_state s);
int srv_jobs_queue_depth(void);
int srv_jobs_active(void);
/* Jobs whose last row write the store refused (0 when clustered). */
int srv_jobs_unsaved(void);
/* Clustered mode: 1 when the jobs live in the shared PostgreSQL queue (GET
 * and DELETE read the database; NULL from srv_job_get or
 * srv_jobs_list_json may then mean "the database is away":
 * srv_jobs_store_ok() says 0). */
int srv_jobs_clustered(void);
int srv_jobs_store_ok(void);
/* The cluster's gauges (from the database, refreshed by the heartbeat
 * thread, never per call) into g; nothing when not clustered. */
void srv_jobs_cluster_gauges(srv_metrics_gauges *g);
/* Path of a finished job's stem file (malloc'ed) or NULL. */
char *srv_job_stem_path(srv_job *j, const char *stem);

/* Paths and names of a finished job's stems (malloc'ed arrays of malloc'ed
 * strings, free with srv_strv_free); the count, 0 if not done. */
int srv_job_stem_files(srv_job *j, char ***paths, char ***names);
void srv_strv_free(char **v, int n);

/* ---- recovery.c: the data folder ------------------------------------------------ */

/* 1 when the data folder's file system has less free space than
 * --min-free-disk (uploads are then refused with 507, /readyz is not
 * ready); *free_bytes (may be NULL) gets the free space. */
int srv_data_disk_low(int64_t *free_bytes);

/* ---- modelcache.c ------------------------------------------------------------ */

/* The shared model NAME, loaded on first use through its circuit breaker
 * and with retries (a load in progress is waited for, not repeated); NULL
 * with a message in err on failure (no server path in it). */
const dmx_model *srv_model_get(const char *name, const char *request_id, char *err, size_t errn);
/* Models loaded so far; 1 if NAME is one of them. */
int srv_models_loaded(void);
int srv_models_is_loaded(const char *name);

/* ---- models.c: the model registry --------------------------------------------- */

/* Resolves NAME in --repo (or the cache) to a file. */
char *srv_models_resolve(const char *name);
/* JSON array of the available models, with source and loaded flag. */
cJSON *srv_models_json(void);
/* 1 if at least one model file is available. */
int srv_models_any_available(void);

/* ---- store.c: the job table (store.h: SQLite or PostgreSQL) ---------------- */

/* TARGET: "sqlite:PATH" or a postgresql:// URI (store.h). 0 or -1. */
int srv_store_open(const char *target);
/* 1 when TARGET names a store with a shared queue (postgresql://, the
 * clustered mode), before it is opened. */
int srv_store_shared(const char *target);
void srv_store_close(void);
/* Inserts or replaces the job's row (the caller keeps it stable): 0, -1,
 * or SRV_STORE_FULL when the disk (or database) is full. */
#define SRV_STORE_FULL (-2)
int srv_store_save(const srv_job *j);
int srv_store_delete(const char *id);
/* Calls fn with stored jobs, at most limit: every unfinished one first
 * (queued or running, newest first), then the finished ones newest first;
 * each as a new srv_job (refs 0) that fn owns; fn must not call the store.
 * Returns the count, or -1 if the table cannot be read. */
int srv_store_load(int (*fn)(void *user, srv_job *j), void *user, int limit);
/* Removes the finished rows (done, failed, cancelled) that a load of
 * `keep` rows leaves out (store.h's SRV_STORE_LOAD_ORDER); returns how many
 * or -1. */
int srv_store_delete_past(int keep);
/* 1 when the store answers now (/readyz); "sqlite" or "postgresql". */
int srv_store_ready(void);
const char *srv_store_kind(void);

/* ---- resilience.c: rate limiter, circuit breakers, retries ------------------- */

/* Takes a token from CLIENT's bucket: 1 if allowed, 0 if limited. Either
 * way *remaining gets the whole tokens left and *reset the seconds until
 * the bucket is full again; when limited *retry_after is the wait for one
 * token (whole seconds, >= 1). */
int srv_ratelimit_take(const char *client, int *remaining, int *reset, int *retry_after);
/* Buckets held now (idle ones are evicted). */
int srv_ratelimit_buckets(void);

typedef enum { SRV_BREAKER_CLOSED, SRV_BREAKER_OPEN, SRV_BREAKER_HALF_OPEN } srv_breaker_state;
const char *srv_breaker_state_name(srv_breaker_state s);
/* 0 if a call may go ahead (taking a half-open probe slot when due), -1
 * when open (*retry_after: seconds until a probe is admitted). */
int srv_breaker_acquire(const char *name, int *retry_after);
/* Like acquire but takes nothing: for refusing requests early. */
int srv_breaker_check(const char *name, int *retry_after);
/* Outcome of an acquired call. */
void srv_breaker_record(const char *name, int ok);
/* {"name": "closed", ...} */
cJSON *srv_breakers_json(void);
int srv_breakers_any_open(void);
/* Calls fn for each breaker with its state. */
void srv_breakers_each(void (*fn)(void *user, const char *name, srv_breaker_state s), void *user);

/* 1 for failures worth retrying: temporary I/O errors and allocation failures. */
int srv_transient(dmx_status st);
/* Sleeps the full-jitter backoff before retry number `attempt` (0-based):
 * uniform in [0, min(30 s, base * 2^attempt)]; wakes early if *cancel. */
void srv_backoff_sleep(int attempt, atomic_int *cancel);
/* The delay it sleeps for a uniform draw u in [0, 1]: u times the cap. */
double srv_backoff_delay(int attempt, double u);

/* ---- zip.c ------------------------------------------------------------------- */

/* Writes a stored (uncompressed: audio does not deflate) zip of the files
 * under the given entry names to out_path via a temporary file, with ZIP64
 * records where sizes or offsets need them. 0 or -1. */
int srv_zip_write(const char *out_path, char *const *files, char *const *names, int n);
/* Sizes and offsets at or above this get ZIP64 records (0xFFFFFFFF; tests
 * lower it to check the ZIP64 paths with small files). */
extern uint64_t srv_zip64_threshold;

/* Random lowercase hex of n_bytes bytes into out (2 * n_bytes + 1). */
int srv_random_hex(char *out, size_t n_bytes);

#endif
