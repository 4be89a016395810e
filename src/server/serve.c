/*
 * serve.c - `demix serve`: command line, data folders, start-up and
 * shutdown, and the option table (flags and DEMIX_* variables). SIGINT and
 * SIGTERM are blocked in every thread and taken with sigwait() here, so
 * shutdown runs as ordinary code (stop accepting, drain or checkpoint
 * jobs, join threads) rather than in a signal handler.
 *
 * `demix worker` is the same start-up with another role (one pipeline):
 *   serve                      role "all": API and workers
 *   serve --no-workers         role "api": API only (clustered store only)
 *   worker                     role "worker": jobs from the shared queue,
 *                              HTTP for /livez /health /readyz /metrics only
 * The clustered mode itself (a postgresql:// --store) is cluster.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

#include "http.h"
#include "server.h"

srv_config srv_cfg;
double srv_start_time;

/* Every option: flag, environment variable, kind, destination, bounds,
 * help. The environment is read first, flags override it; docs/API.md
 * lists the same table. */
typedef enum { OPT_STR, OPT_INT, OPT_NUM, OPT_MB, OPT_LOGFMT, OPT_LOGLEVEL, OPT_FLAG } opt_kind;
typedef struct opt {
    const char *flag, *env;
    opt_kind kind;
    void *dst;
    double lo, hi;
    const char *help;
} opt;

#define C (&srv_cfg)
static const opt OPTS[] = {
    {"host", "DEMIX_HOST", OPT_STR, &C->host, 0, 0, "IPv4 address to listen on (127.0.0.1)"},
    {"port", "DEMIX_PORT", OPT_INT, &C->port, 0, 65535, "TCP port; 0 picks a free one (8000)"},
    {"repo", "DEMIX_REPO", OPT_STR, &C->repo, 0, 0,
     "folder of .th/.yaml models (default: the model cache)"},
    {"data-dir", "DEMIX_DATA_DIR", OPT_STR, &C->data_dir, 0, 0,
     "demix.db, uploads and results (demix-data)"},
    {"store", "DEMIX_STORE", OPT_STR, &C->store, 0, 0,
     "job store: sqlite:PATH or postgresql://... (sqlite:DATA_DIR/demix.db)"},
    {"workers", "DEMIX_WORKERS", OPT_INT, &C->workers, 1, 256,
     "parallel jobs (1; 2 from 8 cores, 4 from 16)"},
    {"max-upload-mb", "DEMIX_MAX_UPLOAD_MB", OPT_MB, &C->max_upload_bytes, 1, 1 << 20,
     "upload limit in MiB (200)"},
    {"queue", "DEMIX_QUEUE", OPT_INT, &C->queue_max, 1, 100000, "queued jobs before 503 (64)"},
    {"history", "DEMIX_HISTORY", OPT_INT, &C->history, 2, 10000000,
     "jobs kept listed; past it the oldest finished one goes, with its files "
     "(10000, or --queue + --workers + 1 when more)"},
    {"ttl", "DEMIX_TTL", OPT_NUM, &C->ttl_seconds, 0.1, 1e9,
     "seconds finished jobs are kept (86400)"},
    {"job-timeout", "DEMIX_JOB_TIMEOUT", OPT_NUM, &C->job_timeout_seconds, 0, 1e9,
     "wall limit of one job in seconds, 0 = none (3600)"},
    {"idle-timeout", "DEMIX_IDLE_TIMEOUT", OPT_NUM, &C->idle_timeout_seconds, 1, 86400,
     "drop connections silent this long, s (60)"},
    {"max-connections", "DEMIX_MAX_CONNECTIONS", OPT_INT, &C->max_connections, 1, 65536,
     "open connections at once (256)"},
    {"max-connections-per-ip", "DEMIX_MAX_CONNECTIONS_PER_IP", OPT_INT, &C->max_connections_per_ip,
     0, 65536, "of those, from one peer address; 0 = no limit (32)"},
    {"probe-port", "DEMIX_PROBE_PORT", OPT_INT, &C->probe_port, -1, 65535,
     "second listener for the probes only; -1 = none, 0 = a free one (-1)"},
    {"max-duration", "DEMIX_MAX_DURATION", OPT_NUM, &C->max_duration_seconds, 0, 1e9,
     "longest audio accepted in seconds, 0 = any (3600)"},
    {"min-free-disk", "DEMIX_MIN_FREE_DISK", OPT_MB, &C->min_free_disk_bytes, 0, 1 << 30,
     "refuse uploads (507) below this free space in the data folder, MiB (1024)"},
    {"grace", "DEMIX_GRACE", OPT_NUM, &C->grace_seconds, 0, 86400,
     "SIGTERM: seconds running jobs may finish (30)"},
    {"rate-limit", "DEMIX_RATE_LIMIT", OPT_NUM, &C->rate_per_minute, 0, 1e6,
     "POST /separate per client per minute, 0 = off (30)"},
    {"rate-burst", "DEMIX_RATE_BURST", OPT_INT, &C->rate_burst, 1, 100000,
     "requests a client may send at once (10)"},
    {"trusted-proxies", "DEMIX_TRUSTED_PROXIES", OPT_STR, &C->trusted_proxies, 0, 0,
     "comma-separated proxy IPs whose X-Forwarded-For is believed"},
    {"breaker-threshold", "DEMIX_BREAKER_THRESHOLD", OPT_INT, &C->breaker_threshold, 1, 1000,
     "consecutive model load failures that open its breaker (5)"},
    {"breaker-open", "DEMIX_BREAKER_OPEN", OPT_NUM, &C->breaker_open_seconds, 0.1, 86400,
     "seconds a breaker stays open (60)"},
    {"breaker-probes", "DEMIX_BREAKER_PROBES", OPT_INT, &C->breaker_probes, 1, 100,
     "trial loads at once while half-open (1)"},
    {"retries", "DEMIX_RETRIES", OPT_INT, &C->retries, 0, 10, "retries of transient failures (2)"},
    {"retry-base", "DEMIX_RETRY_BASE", OPT_NUM, &C->retry_base_seconds, 0, 60,
     "first backoff cap in seconds, doubled each retry (0.5)"},
    {"metrics-interval", "DEMIX_METRICS_INTERVAL", OPT_NUM, &C->metrics_interval_seconds, 0.1,
     86400, "system metrics refresh, s (15)"},
    {"alerts-token", "DEMIX_ALERTS_TOKEN", OPT_STR, &C->alerts_token, 0, 0,
     "bearer token POST /alerts requires (default: open)"},
    {"log-format", "DEMIX_LOG_FORMAT", OPT_LOGFMT, &C->log_text, 0, 0, "json or text (json)"},
    {"log-level", "DEMIX_LOG_LEVEL", OPT_LOGLEVEL, &C->log_level, 0, 0,
     "debug, info, warning or error (info)"},
    {"threads", "DEMIX_THREADS", OPT_INT, &C->threads, 0, 4096,
     "compute threads for all workers together, 0 = every CPU (0)"},
    {"no-workers", "DEMIX_NO_WORKERS", OPT_FLAG, &C->no_workers, 0, 0,
     "serve only: an API node that runs no job (postgresql:// store only)"},
    {"lease-seconds", "DEMIX_LEASE_SECONDS", OPT_NUM, &C->lease_seconds, 1, 86400,
     "clustered: a claimed job's lease; a worker silent this long loses it (10)"},
    {"heartbeat-seconds", "DEMIX_HEARTBEAT_SECONDS", OPT_NUM, &C->heartbeat_seconds, 0.1, 3600,
     "clustered: lease renewal and cluster metrics period, below the lease (2)"},
    {"poll-seconds", "DEMIX_POLL_SECONDS", OPT_NUM, &C->poll_seconds, 0.1, 3600,
     "clustered: idle workers look at the queue this often without a NOTIFY (2)"},
    {"max-attempts", "DEMIX_MAX_ATTEMPTS", OPT_INT, &C->max_attempts, 1, 1000,
     "clustered: claims of a job before an expired lease fails it (3)"},
};
#undef C
#define N_OPTS ((int)(sizeof OPTS / sizeof *OPTS))

static int worker_mode; /* `demix worker` */

static void usage(FILE *f) {
    if (worker_mode)
        fprintf(f, "USAGE\n    demix worker --store postgresql://... --data-dir DIR [OPTIONS]\n\n"
                   "    Runs separation jobs from the shared PostgreSQL queue that `demix serve\n"
                   "    --store postgresql://...` nodes fill (docs/DEPLOY.md). HTTP on --port\n"
                   "    (0: a free one, logged) answers /livez, /health, /readyz and /metrics only.\n"
                   "    It takes the options of demix serve; those of the HTTP API do nothing.\n\n");
    fprintf(f, "USAGE\n    demix serve [OPTIONS]\n\n"
               "    HTTP API for separation jobs (see docs/API.md, or GET /docs). Logs are\n"
               "    JSON lines on stderr. Each option can also be set by its environment\n"
               "    variable; DEMIX_API_KEY (environment only) protects the job routes (set\n"
               "    but empty, it is refused: unset it to run without a key).\n\nOPTIONS\n");
    for (int i = 0; i < N_OPTS; i++)
        fprintf(f, "    --%-22s %-29s %s\n", OPTS[i].flag, OPTS[i].env, OPTS[i].help);
    fprintf(f, "    --help\n");
}

static int bad(const char *fmt, const char *arg) {
    fprintf(stderr, "demix: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'demix %s --help')\n", worker_mode ? "worker" : "serve");
    return 2;
}

static int history_given; /* --history or DEMIX_HISTORY: checked, not raised */

/* Stores `val` for option `o`; 0, or 2 after a message. */
static int set_opt(const opt *o, const char *val, const char *from) {
    char *end;
    double v = 0;
    if (o->dst == &srv_cfg.history) history_given = 1;
    if (o->kind == OPT_FLAG) { /* a flag given, or its variable: 1/true/yes or 0/false/no */
        int on = !strcmp(val, "1") || !strcasecmp(val, "true") || !strcasecmp(val, "yes");
        if (!on && strcmp(val, "0") && strcasecmp(val, "false") && strcasecmp(val, "no"))
            return bad("'%s' is not 1/true/yes or 0/false/no", val);
        *(int *)o->dst = on;
        return 0;
    }
    if (o->kind == OPT_INT || o->kind == OPT_NUM || o->kind == OPT_MB) {
        errno = 0;
        v = strtod(val, &end);
        if (errno || end == val || *end || !(v >= o->lo && v <= o->hi) ||
            (o->kind != OPT_NUM && v != (double)(long)v)) {
            fprintf(stderr,
                    "demix: %s: '%s' is not a number in %g..%g (see 'demix serve --help')\n", from,
                    val, o->lo, o->hi);
            return 2;
        }
    }
    switch (o->kind) {
        case OPT_STR: *(const char **)o->dst = val; break;
        case OPT_INT: *(int *)o->dst = (int)v; break;
        case OPT_NUM: *(double *)o->dst = v; break;
        case OPT_MB: *(int64_t *)o->dst = (int64_t)v << 20; break;
        case OPT_FLAG: break;
        case OPT_LOGFMT:
            if (strcmp(val, "json") && strcmp(val, "text"))
                return bad("log format '%s' is not json or text", val);
            *(int *)o->dst = !strcmp(val, "text");
            break;
        case OPT_LOGLEVEL: {
            static const char *const lv[] = {"debug", "info", "warning", "error"};
            int k = 0;
            while (k < 4 && strcmp(val, lv[k])) k++;
            if (k == 4 && !strcmp(val, "warn")) k = 2;
            if (k == 4) return bad("log level '%s' is not debug, info, warning or error", val);
            *(int *)o->dst = k;
            break;
        }
    }
    return 0;
}

static int mkdirs(const char *p) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", p);
    for (char *s = buf + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
            *s = '/';
        }
    return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

void srv_config_defaults(srv_config *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8000;
    c->repo = NULL;
    c->data_dir = "demix-data";
    /* Each worker runs one job with cores/workers compute threads: a few
     * workers keep the cores busy between a job's serial phases (decode,
     * encode) without splitting them so thin that one job takes forever. */
    int cores = dmx_cpu_count();
    c->workers = cores >= 16 ? 4 : cores >= 8 ? 2 : 1;
    c->max_upload_bytes = 200LL << 20;
    c->queue_max = 64;
    c->history = 10000; /* raised above --queue + --workers when not given */
    c->ttl_seconds = 86400;
    c->job_timeout_seconds = 3600;
    c->idle_timeout_seconds = 60;
    c->max_connections = 256;
    c->max_connections_per_ip = 32;
    c->probe_port = -1;
    c->max_duration_seconds = 3600;
    c->min_free_disk_bytes = 1024LL << 20;
    c->grace_seconds = 30;
    c->rate_per_minute = 30;
    c->rate_burst = 10;
    c->breaker_threshold = 5;
    c->breaker_open_seconds = 60;
    c->breaker_probes = 1;
    c->retries = 2;
    c->retry_base_seconds = 0.5;
    c->metrics_interval_seconds = 15;
    c->log_level = DMX_LOG_INFO;
    c->role = "all";
    c->threads = 0;
    c->lease_seconds = 10;
    c->heartbeat_seconds = 2;
    c->poll_seconds = 2;
    c->max_attempts = 3;
}

static int serve_main(int argc, char **argv);

int srv_serve_main(int argc, char **argv) {
    worker_mode = 0;
    return serve_main(argc, argv);
}

int srv_worker_main(int argc, char **argv) {
    worker_mode = 1;
    return serve_main(argc, argv);
}

static int serve_main(int argc, char **argv) {
    srv_config *c = &srv_cfg;
    srv_config_defaults(c);
    if (worker_mode) {
        c->role = "worker";
        c->port = 0; /* a free one, logged: workers are scraped, not addressed */
    }
    for (int i = 0; i < N_OPTS; i++) {
        const char *e = getenv(OPTS[i].env);
        if (e && *e && set_opt(&OPTS[i], e, OPTS[i].env)) return 2;
    }
    /* Set but empty (a typo, a missing secret in a compose file) must not
     * quietly open the job routes: only an unset variable means "no key". */
    const char *key = getenv("DEMIX_API_KEY");
    if (key && !*key) {
        fprintf(stderr, "demix: DEMIX_API_KEY is set but empty; set a key, or unset the "
                        "variable to run without one\n");
        return 2;
    }
    for (const char *k = key; k && *k; k++)
        if ((unsigned char)*k <= ' ' || *k == 0x7F) {
            fprintf(stderr, "demix: DEMIX_API_KEY contains a space or control character, "
                            "which no 'Authorization: Bearer' header can carry\n");
            return 2;
        }
    c->api_key = key;

    struct option lo[N_OPTS + 2];
    for (int i = 0; i < N_OPTS; i++)
        lo[i] = (struct option){OPTS[i].flag,
                                OPTS[i].kind == OPT_FLAG ? no_argument : required_argument, 0,
                                1000 + i};
    lo[N_OPTS] = (struct option){"help", no_argument, 0, 'h'};
    lo[N_OPTS + 1] = (struct option){0, 0, 0, 0};
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        if (o >= 1000 && o < 1000 + N_OPTS) {
            char from[64];
            snprintf(from, sizeof from, "--%s", OPTS[o - 1000].flag);
            if (set_opt(&OPTS[o - 1000], optarg ? optarg : "1", from)) return 2;
            continue;
        }
        switch (o) {
            case 'h': usage(stdout); return 0;
            case ':': return bad("option '%s' needs a value", argv[optind - 1]);
            default: return bad("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return bad("unexpected argument '%s'", argv[optind]);
    /* The roles: only a shared (PostgreSQL) queue has jobs that another
     * node can run. */
    int shared = c->store && srv_store_shared(c->store);
    if (worker_mode && !shared)
        return bad("%s needs --store postgresql://... (the shared queue it runs jobs from)",
                   "demix worker");
    if (worker_mode && c->no_workers) return bad("%s runs jobs: --no-workers is for serve", "demix worker");
    if (c->no_workers && !shared)
        return bad("%s needs --store postgresql://...: with SQLite this node would be the only "
                   "one to run its jobs, and it would run none",
                   "--no-workers");
    if (c->no_workers) c->role = "api";
    /* every job still to run stays listed: the queue, the submissions in
     * flight it counts, and the running ones fit beside a finished job */
    if (c->history <= c->queue_max + c->workers) {
        if (!history_given)
            c->history = c->queue_max + c->workers + 1;
        else if (!shared)
            return bad("%s must exceed --queue + --workers (every job still to run stays listed)",
                       "--history");
    }
    if (shared && c->heartbeat_seconds >= c->lease_seconds)
        return bad("%s must be below --lease-seconds (a lease must outlive a renewal)",
                   "--heartbeat-seconds");
    if (c->repo) {
        struct stat st;
        if (stat(c->repo, &st) < 0 || !S_ISDIR(st.st_mode))
            return bad("--repo %s: not a directory", c->repo);
    }
    char up[4096], jobs[4096];
    snprintf(up, sizeof up, "%s/uploads", c->data_dir);
    snprintf(jobs, sizeof jobs, "%s/jobs", c->data_dir);
    if (mkdirs(up) < 0 || mkdirs(jobs) < 0) {
        fprintf(stderr, "demix: cannot create %s: %s\n", c->data_dir, strerror(errno));
        return 1;
    }

    /* Block the stop signals before any thread exists, so all inherit it. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A file-size limit (ulimit -f, a quota) must fail the write (EFBIG)
     * and so the job, not kill the whole server. */
    signal(SIGXFSZ, SIG_IGN);

    srv_start_time = srv_now();
    srv_log_configure(c->log_text, c->log_level);
    dmx_log_set(srv_engine_log, NULL);
    /* demix.h's one rule: workers x threads per job never exceed the CPUs
     * (jobs.c gives each worker its share with the same call). */
    dmx_thread_plan tp = dmx_threads_divide(dmx_cpu_count(), c->workers, c->threads);
    if (tp.jobs < c->workers) {
        srv_log(DMX_LOG_WARN, "demix.server", "startup", NULL, NULL,
                "--workers %d: running %d (one per CPU; more would oversubscribe them)", c->workers,
                tp.jobs);
        c->workers = tp.jobs;
    }
    srv_metrics_init(c->max_upload_bytes);
    if (srv_jobs_start(c->no_workers ? 0 : c->workers, c->queue_max) < 0) {
        srv_log(DMX_LOG_ERROR, "demix.server", "startup", NULL, NULL,
                "cannot open the job store or start the worker threads");
        srv_jobs_stop(0);
        srv_jobs_free();
        return 1;
    }
    int port = 0;
    /* a worker's listener is the probes' (and /metrics) alone */
    struct MHD_Daemon *d = srv_http_start(c->host, c->port, worker_mode, &port);
    if (!d) {
        srv_log(DMX_LOG_ERROR, "demix.server", "startup", NULL, NULL,
                "cannot listen on %s:%d (address in use, or not an IPv4 address?)", c->host,
                c->port);
        srv_jobs_stop(0);
        srv_jobs_free();
        return 1;
    }
    /* Probes on a port of their own stay answerable whatever fills the
     * main one (many clients each under the per-address limit). */
    struct MHD_Daemon *pd = NULL;
    int probe_port = -1;
    if (!worker_mode && c->probe_port >= 0 && !(pd = srv_http_start(c->host, c->probe_port, 1, &probe_port))) {
        srv_log(DMX_LOG_ERROR, "demix.server", "startup", NULL, NULL,
                "cannot listen on %s:%d for the probes (address in use?)", c->host, c->probe_port);
        MHD_stop_daemon(d);
        srv_jobs_stop(0);
        srv_jobs_free();
        return 1;
    }
    srv_routes_declare_metrics();
    srv_sysmetrics_start();
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "host", c->host);
    cJSON_AddNumberToObject(f, "port", port);
    if (pd) cJSON_AddNumberToObject(f, "probe_port", probe_port);
    cJSON_AddStringToObject(f, "role", c->role);
    cJSON_AddNumberToObject(f, "workers", c->no_workers ? 0 : c->workers);
    cJSON_AddNumberToObject(f, "threads_per_job", tp.threads_per_job);
    cJSON_AddStringToObject(f, "data_dir", c->data_dir);
    cJSON_AddStringToObject(f, "store",
                            srv_store_kind()); /* never the URI: it may hold a password */
    cJSON_AddStringToObject(f, "repo", c->repo ? c->repo : "");
    cJSON_AddStringToObject(f, "version", DEMIX_SERVER_VERSION);
    cJSON_AddStringToObject(f, "blas_kernels", dmx_blas_core());
    cJSON_AddBoolToObject(f, "api_key", c->api_key != NULL);
    cJSON_AddNumberToObject(f, "rate_limit_per_minute", c->rate_per_minute);
    srv_log(DMX_LOG_INFO, "demix.server", "startup", NULL, f, "listening on http://%s:%d", c->host,
            port);

    int sig = 0;
    sigwait(&stop, &sig);
    srv_log(DMX_LOG_INFO, "demix.server", "shutdown", NULL, NULL, "signal %d: stopping", sig);
    /* 1. Stop accepting: new connections are refused from here on. */
    MHD_socket lfd = MHD_quiesce_daemon(d);
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
    /* 2. Running jobs finish within the grace period or are checkpointed
     *    as queued; queued ones stay in the store for the next start. */
    srv_jobs_stop(c->grace_seconds);
    /* 3. Requests in flight (wait=true was woken) complete; then exit. */
    MHD_stop_daemon(d);
    if (pd) MHD_stop_daemon(pd);
    srv_sysmetrics_stop();
    srv_jobs_free();
    srv_log(DMX_LOG_INFO, "demix.server", "shutdown", NULL, NULL, "stopped");
    return 0;
}
