/*
 * metrics.c - Prometheus metrics of `demix serve`, rendered in the text
 * exposition format 0.0.4. Series are kept in small fixed tables keyed by
 * their label values; labels are route templates and model names, never raw
 * paths or client addresses, so the number of series stays bounded (and
 * capped at MAX_SERIES per family). Alert names and severities are the only
 * labels that outside input chooses: they have their own budget (the names
 * of deploy's alert rules, compiled in from alert_rules.yml, always have
 * room; a few other names; then "other"), so invented names cannot crowd
 * out real ones. Label values are valid UTF-8 whatever is cut.
 *
 * A leaf: the gauges of jobs, breakers, the rate limiter and the host come
 * in a srv_metrics_gauges snapshot from the caller; it calls nothing of
 * the rest of the server. Counters that feed increase() are declared at 0
 * up front (srv_metrics_declare_*).
 *
 * Name notes: the spec's `temp_files_total` is exported as the gauge
 * `temp_files`, since `_total` is reserved for counters; `queue_depth` and
 * `job_queue_wait_seconds` are the queue; GPU gauges are absent because
 * the engine runs on the CPU only.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include "known_alerts.h" /* generated from deploy/prometheus/alert_rules.yml */
#include "server.h"

#define MAX_SERIES  256
#define MAX_BUCKETS 16

static const char *const KNOWN_ALERTS[] = {
#define X(name) name,
    SRV_KNOWN_ALERTS(X)
#undef X
};
#define N_KNOWN_ALERTS ((int)(sizeof KNOWN_ALERTS / sizeof *KNOWN_ALERTS))
static const char *const SEVERITIES[] = {"critical", "warning", "info", "none", "other"};
#define N_SEVERITIES ((int)(sizeof SEVERITIES / sizeof *SEVERITIES))
/* Every name the alert family can hold × severity × firing/resolved. */
#define ALERT_SERIES ((N_KNOWN_ALERTS + SRV_METRICS_OUTSIDE_ALERTS + 1) * N_SEVERITIES * 2)

typedef struct series {
    char labels[256]; /* rendered: method="GET",endpoint="/health" */
    double value;     /* counter value, or histogram sum */
    uint64_t count;
    uint64_t buckets[MAX_BUCKETS];
} series;

typedef struct family {
    const char *name, *help, *type;
    const double *bounds; /* histograms only */
    int n_bounds;
    int n;
    int cap;   /* 0: MAX_SERIES */
    series *s; /* NULL: tab */
    series tab[MAX_SERIES];
} family;

static const double HTTP_BOUNDS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1,     2.5,  5,     10,   30,  60,   300};
/* Separations run from a fraction of a second (tiny models) to half an hour. */
static const double SEP_BOUNDS[] = {0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800};

#define NB(a) ((int)(sizeof a / sizeof *a))
static family http_total = {.name = "http_requests_total",
                            .help = "HTTP requests by method, route and status.",
                            .type = "counter"};
static family http_dur = {.name = "http_request_duration_seconds",
                          .help = "HTTP request latency by route.",
                          .type = "histogram",
                          .bounds = HTTP_BOUNDS,
                          .n_bounds = NB(HTTP_BOUNDS)};
static family sep_total = {.name = "separations_total",
                           .help = "Separation jobs finished, by model and status.",
                           .type = "counter"};
static family sep_dur = {.name = "separation_duration_seconds",
                         .help = "Wall time of separation jobs.",
                         .type = "histogram",
                         .bounds = SEP_BOUNDS,
                         .n_bounds = NB(SEP_BOUNDS)};
static family err_total = {
    .name = "errors_total", .help = "Errors by type and route.", .type = "counter"};
/* Sizes: bounds fitted to the upload limit by srv_metrics_init(). */
static double SIZE_BOUNDS[MAX_BUCKETS];
static const double AUDIO_BOUNDS[] = {1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600};
static const double LOAD_BOUNDS[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
static const double WAIT_BOUNDS[] = {0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600};
static family sep_size = {.name = "separation_file_size_bytes",
                          .help = "Size of uploaded files that became jobs.",
                          .type = "histogram",
                          .bounds = SIZE_BOUNDS};
static family sep_audio = {.name = "separation_audio_duration_seconds",
                           .help = "Duration of the audio of separation jobs.",
                           .type = "histogram",
                           .bounds = AUDIO_BOUNDS,
                           .n_bounds = NB(AUDIO_BOUNDS)};
static family load_dur = {.name = "model_load_duration_seconds",
                          .help = "Time to load a model from disk.",
                          .type = "histogram",
                          .bounds = LOAD_BOUNDS,
                          .n_bounds = NB(LOAD_BOUNDS)};
static family inf_dur = {.name = "model_inference_duration_seconds",
                         .help = "Time of the model evaluation of one job (without decode/encode).",
                         .type = "histogram",
                         .bounds = SEP_BOUNDS,
                         .n_bounds = NB(SEP_BOUNDS)};
static family queue_wait = {.name = "job_queue_wait_seconds",
                            .help = "Time jobs waited in the queue before a worker took them.",
                            .type = "histogram",
                            .bounds = WAIT_BOUNDS,
                            .n_bounds = NB(WAIT_BOUNDS)};
static series alert_series[ALERT_SERIES];
static family alerts_total = {.name = "alerts_received_total",
                              .help = "Alerts received from Alertmanager on POST /alerts.",
                              .type = "counter",
                              .cap = ALERT_SERIES,
                              .s = alert_series};
/* Alert names outside the known list that got their own series. */
static char outside_alerts[SRV_METRICS_OUTSIDE_ALERTS][96];
static int n_outside_alerts;
static family br_trans = {.name = "circuit_breaker_transitions_total",
                          .help = "Circuit breaker state changes.",
                          .type = "counter"};
static double rate_limited, retries;

static pthread_mutex_t mlock = PTHREAD_MUTEX_INITIALIZER;

/* A label value as the format wants it: valid UTF-8 (srv_utf8_copy), with
 * backslash, quote and newline escaped, cut only between characters. */
static void esc(char *out, size_t n, const char *v) {
    char clean[512];
    srv_utf8_copy(clean, sizeof clean, v);
    size_t k = 0;
    for (const char *p = clean; *p && k + 2 < n; p++) {
        if (*p == '\\' || *p == '"')
            out[k++] = '\\', out[k++] = *p;
        else if (*p == '\n')
            out[k++] = '\\', out[k++] = 'n';
        else
            out[k++] = *p;
    }
    out[k] = '\0';
    srv_utf8_copy(out, n, out); /* a cut inside a character drops all of it */
}

static series *find(family *f, const char *labels) {
    series *tab = f->s ? f->s : f->tab;
    int cap = f->cap ? f->cap : MAX_SERIES;
    for (int i = 0; i < f->n; i++)
        if (!strcmp(tab[i].labels, labels)) return &tab[i];
    if (f->n == cap) return NULL; /* bounded: drop rather than grow */
    series *s = &tab[f->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->labels, sizeof s->labels, "%s", labels);
    return s;
}

/* Declared (zero) series take at most half of a table, so that many models
 * or routes cannot leave no room for series with real events. */
static void declare(family *f, const char *labels) {
    int cap = f->cap ? f->cap : MAX_SERIES;
    series *tab = f->s ? f->s : f->tab;
    for (int i = 0; i < f->n; i++)
        if (!strcmp(tab[i].labels, labels)) return;
    if (f->n < cap / 2) find(f, labels);
}

static void add(family *f, const char *labels, double v) {
    series *s = find(f, labels);
    if (s) s->value += v;
}

static void observe(family *f, const char *labels, double v) {
    series *s = find(f, labels);
    if (!s) return;
    s->value += v;
    s->count++;
    for (int b = 0; b < f->n_bounds; b++)
        if (v <= f->bounds[b]) s->buckets[b]++;
}

void srv_metrics_http(const char *method, const char *endpoint, int status, double seconds) {
    char m[32], e[128], l[256];
    esc(m, sizeof m, method);
    esc(e, sizeof e, endpoint);
    pthread_mutex_lock(&mlock);
    snprintf(l, sizeof l, "method=\"%s\",endpoint=\"%s\",status=\"%d\"", m, e, status);
    add(&http_total, l, 1);
    snprintf(l, sizeof l, "method=\"%s\",endpoint=\"%s\"", m, e);
    observe(&http_dur, l, seconds);
    pthread_mutex_unlock(&mlock);
}

void srv_metrics_separation(const char *model, const char *status, double seconds) {
    char m[128], s[32], l[256];
    esc(m, sizeof m, model);
    esc(s, sizeof s, status);
    pthread_mutex_lock(&mlock);
    snprintf(l, sizeof l, "model=\"%s\",status=\"%s\"", m, s);
    add(&sep_total, l, 1);
    snprintf(l, sizeof l, "model=\"%s\"", m);
    observe(&sep_dur, l, seconds);
    pthread_mutex_unlock(&mlock);
}

void srv_metrics_error(const char *type, const char *endpoint) {
    char t[64], e[128], l[256];
    esc(t, sizeof t, type);
    esc(e, sizeof e, endpoint);
    pthread_mutex_lock(&mlock);
    snprintf(l, sizeof l, "type=\"%s\",endpoint=\"%s\"", t, e);
    add(&err_total, l, 1);
    pthread_mutex_unlock(&mlock);
}

void srv_metrics_declare_separation(const char *model, const char *status) {
    char m[128], s[32], l[256];
    esc(m, sizeof m, model);
    esc(s, sizeof s, status);
    pthread_mutex_lock(&mlock);
    snprintf(l, sizeof l, "model=\"%s\",status=\"%s\"", m, s);
    declare(&sep_total, l);
    snprintf(l, sizeof l, "model=\"%s\"", m);
    declare(&sep_dur, l);
    pthread_mutex_unlock(&mlock);
}

void srv_metrics_declare_error(const char *type, const char *endpoint) {
    char t[64], e[128], l[256];
    esc(t, sizeof t, type);
    esc(e, sizeof e, endpoint);
    pthread_mutex_lock(&mlock);
    snprintf(l, sizeof l, "type=\"%s\",endpoint=\"%s\"", t, e);
    declare(&err_total, l);
    pthread_mutex_unlock(&mlock);
}

void srv_metrics_init(int64_t max_upload_bytes) {
    pthread_mutex_lock(&mlock);
    int n = 0;
    for (double b = 64 * 1024; b < (double)max_upload_bytes && n < MAX_BUCKETS - 1; b *= 4)
        SIZE_BOUNDS[n++] = b;
    SIZE_BOUNDS[n++] = (double)max_upload_bytes;
    sep_size.n_bounds = n;
    pthread_mutex_unlock(&mlock);
}

void srv_metrics_job(int64_t file_bytes, double audio_seconds, double queue_wait_seconds) {
    pthread_mutex_lock(&mlock);
    observe(&sep_size, "", (double)file_bytes);
    if (audio_seconds > 0) observe(&sep_audio, "", audio_seconds);
    observe(&queue_wait, "", queue_wait_seconds > 0 ? queue_wait_seconds : 0);
    pthread_mutex_unlock(&mlock);
}

static void observe_model(family *f, const char *model, double v) {
    char m[128], l[160];
    esc(m, sizeof m, model);
    snprintf(l, sizeof l, "model=\"%s\"", m);
    pthread_mutex_lock(&mlock);
    observe(f, l, v);
    pthread_mutex_unlock(&mlock);
}

void srv_metrics_model_load(const char *model, double s) { observe_model(&load_dur, model, s); }
void srv_metrics_inference(const char *model, double s) { observe_model(&inf_dur, model, s); }

/* The alertname label for NAME (escaped): its own within the budget, else
 * "other". Called with mlock held. */
static const char *alert_label(const char *name, char *a, size_t n) {
    for (int i = 0; i < N_KNOWN_ALERTS; i++)
        if (!strcmp(name, KNOWN_ALERTS[i])) return KNOWN_ALERTS[i];
    esc(a, n, name);
    for (int i = 0; i < n_outside_alerts; i++)
        if (!strcmp(a, outside_alerts[i])) return a;
    if (n_outside_alerts == SRV_METRICS_OUTSIDE_ALERTS || !strcmp(a, "other")) return "other";
    snprintf(outside_alerts[n_outside_alerts++], sizeof outside_alerts[0], "%s", a);
    return a;
}

void srv_metrics_alert(const char *alertname, const char *severity, const char *status) {
    char a[96], l[256];
    const char *s = "other";
    for (int i = 0; i < N_SEVERITIES; i++)
        if (severity && !strcmp(severity, SEVERITIES[i])) s = SEVERITIES[i];
    const char *t = status && !strcmp(status, "resolved") ? "resolved" : "firing";
    pthread_mutex_lock(&mlock);
    snprintf(l, sizeof l, "alertname=\"%s\",severity=\"%s\",status=\"%s\"",
             alert_label(alertname ? alertname : "", a, sizeof a), s, t);
    add(&alerts_total, l, 1);
    pthread_mutex_unlock(&mlock);
}

void srv_metrics_breaker_transition(const char *breaker, const char *from, const char *to) {
    char b[160], l[256];
    esc(b, sizeof b, breaker);
    snprintf(l, sizeof l, "breaker=\"%s\",from=\"%s\",to=\"%s\"", b, from, to);
    pthread_mutex_lock(&mlock);
    add(&br_trans, l, 1);
    pthread_mutex_unlock(&mlock);
}

void srv_metrics_rate_limited(void) {
    pthread_mutex_lock(&mlock);
    rate_limited++;
    pthread_mutex_unlock(&mlock);
}

static double lease_expirations;

void srv_metrics_lease_expirations(int n) {
    pthread_mutex_lock(&mlock);
    lease_expirations += n;
    pthread_mutex_unlock(&mlock);
}

static double store_write_failures;

void srv_metrics_store_write_failure(void) {
    pthread_mutex_lock(&mlock);
    store_write_failures++;
    pthread_mutex_unlock(&mlock);
}

void srv_metrics_retry(void) {
    pthread_mutex_lock(&mlock);
    retries++;
    pthread_mutex_unlock(&mlock);
}

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void bprintf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) return;
        b->p = np;
        b->cap = cap;
    }
}

static void render_family(buf *b, const family *f) {
    bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
    for (int i = 0; i < f->n; i++) {
        const series *s = &(f->s ? f->s : f->tab)[i];
        /* Unlabelled series print no braces; labelled ones a comma before le. */
        const char *ob = s->labels[0] ? "{" : "", *cb = s->labels[0] ? "}" : "";
        const char *sep = s->labels[0] ? "," : "";
        if (!f->bounds) {
            bprintf(b, "%s%s%s%s %.17g\n", f->name, ob, s->labels, cb, s->value);
            continue;
        }
        for (int k = 0; k < f->n_bounds; k++)
            bprintf(b, "%s_bucket{%s%sle=\"%.10g\"} %llu\n", f->name, s->labels, sep, f->bounds[k],
                    (unsigned long long)s->buckets[k]);
        bprintf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", f->name, s->labels, sep,
                (unsigned long long)s->count);
        bprintf(b, "%s_sum%s%s%s %.17g\n", f->name, ob, s->labels, cb, s->value);
        bprintf(b, "%s_count%s%s%s %llu\n", f->name, ob, s->labels, cb,
                (unsigned long long)s->count);
    }
}

/* process_* as the Prometheus client libraries define them, from /proc. */
static void render_process(buf *b, double start_time) {
    double cpu = 0, vsize = 0, rss = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char line[2048];
        if (fgets(line, sizeof line, f)) {
            /* Fields after the command name (which may hold spaces). */
            char *p = strrchr(line, ')');
            unsigned long ut = 0, st = 0, vs = 0;
            long rs = 0;
            if (p && sscanf(p + 2,
                            "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d "
                            "%*d %*d %*d %*d %*u %lu %ld",
                            &ut, &st, &vs, &rs) == 4) {
                double hz = (double)sysconf(_SC_CLK_TCK);
                cpu = (double)(ut + st) / hz;
                vsize = (double)vs;
                rss = (double)rs * (double)sysconf(_SC_PAGESIZE);
            }
        }
        fclose(f);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') fds++;
    if (d) {
        closedir(d);
        fds--; /* the one opendir holds */
    }
    struct rlimit rl;
    double maxfds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (double)rl.rlim_cur : 0;
    bprintf(b,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n",
            cpu);
    bprintf(b,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %.0f\n",
            rss);
    bprintf(b,
            "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
            "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %.0f\n",
            vsize);
    bprintf(b,
            "# HELP process_open_fds Number of open file descriptors.\n"
            "# TYPE process_open_fds gauge\nprocess_open_fds %d\n",
            fds);
    bprintf(b,
            "# HELP process_max_fds Maximum number of open file descriptors.\n"
            "# TYPE process_max_fds gauge\nprocess_max_fds %.0f\n",
            maxfds);
    bprintf(
        b,
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.3f\n",
        start_time);
}

static void gauge(buf *b, const char *name, const char *help, double v) {
    bprintf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void render_system(buf *b, const srv_sys_sample *sys) {
    srv_sys_sample x = *sys;
    gauge(b, "cpu_usage_percent", "Host CPU busy time over the last sampling period, percent.",
          x.cpu_percent);
    gauge(b, "memory_usage_bytes", "Host memory in use (total minus available).", x.mem_used);
    gauge(b, "memory_available_bytes", "Host memory available for new allocations.", x.mem_avail);
    gauge(b, "memory_percent", "Host memory in use, percent of total.", x.mem_percent);
    gauge(b, "disk_usage_bytes", "Bytes used on the file system of the data folder.", x.disk_used);
    gauge(b, "disk_free_bytes", "Bytes available on the file system of the data folder.",
          x.disk_free);
    gauge(b, "disk_space_low",
          "1 while free space in the data folder is below --min-free-disk (uploads refused with "
          "507).",
          x.disk_low);
    gauge(b, "temp_files",
          "Files held in the data folder (uploads, job inputs and stems); the spec's "
          "temp_files_total.",
          (double)x.temp_files);
    gauge(b, "temp_storage_bytes", "Bytes held in those files.", (double)x.temp_bytes);
}

char *srv_metrics_render(const srv_metrics_gauges *g) {
    buf b = {0};
    bprintf(&b,
            "# HELP demix_build_info Build information.\n# TYPE demix_build_info gauge\n"
            "demix_build_info{version=\"%s\",engine=\"%s\"} 1\n",
            DEMIX_SERVER_VERSION, DMX_VERSION_STRING);
    bprintf(&b,
            "# HELP models_loaded Models held in memory.\n# TYPE models_loaded gauge\n"
            "models_loaded %d\n",
            g->models_loaded);
    bprintf(&b,
            "# HELP active_sessions Separations running now.\n# TYPE active_sessions gauge\n"
            "active_sessions %d\n",
            g->active_sessions);
    bprintf(&b,
            "# HELP queue_depth Jobs waiting for a worker.\n# TYPE queue_depth gauge\n"
            "queue_depth %d\n",
            g->queue_depth);
    bprintf(&b,
            "# HELP demix_node_info This node's role: all (API and workers), api or worker.\n"
            "# TYPE demix_node_info gauge\ndemix_node_info{role=\"%s\"} 1\n",
            g->role ? g->role : "all");
    if (g->clustered) {
        gauge(&b, "demix_cluster_queue_depth", "Jobs queued in the shared database.",
              g->cluster_queue_depth);
        gauge(&b, "demix_cluster_jobs_running", "Jobs running on any worker (database).",
              g->cluster_jobs_running);
        gauge(&b, "demix_cluster_workers_live",
              "Worker nodes whose heartbeat is younger than the lease (database).",
              g->cluster_workers_live);
        gauge(&b, "demix_cluster_oldest_queued_seconds",
              "Age of the oldest queued job in seconds, 0 when none (database).",
              g->cluster_oldest_queued_seconds);
    }
    render_process(&b, g->process_start_time);
    render_system(&b, &g->sys);
    bprintf(&b,
            "# HELP circuit_breaker_state Circuit breaker state: 0 closed, 1 open, 2 half-open.\n"
            "# TYPE circuit_breaker_state gauge\n");
    for (int i = 0; i < g->n_breakers; i++) {
        char e[200];
        esc(e, sizeof e, g->breaker_names[i]);
        bprintf(&b, "circuit_breaker_state{breaker=\"%s\"} %d\n", e, g->breaker_states[i]);
    }
    bprintf(&b,
            "# HELP rate_limit_buckets Client buckets held by the rate limiter.\n"
            "# TYPE rate_limit_buckets gauge\nrate_limit_buckets %d\n",
            g->rate_limit_buckets);
    bprintf(&b,
            "# HELP jobs_unsaved Jobs whose last row write the job store refused (the janitor "
            "writes them again).\n# TYPE jobs_unsaved gauge\njobs_unsaved %d\n",
            g->jobs_unsaved);
    pthread_mutex_lock(&mlock);
    bprintf(&b,
            "# HELP rate_limited_requests_total Requests refused with 429.\n"
            "# TYPE rate_limited_requests_total counter\nrate_limited_requests_total %.17g\n",
            rate_limited);
    bprintf(&b,
            "# HELP retries_total Retries of transient failures.\n"
            "# TYPE retries_total counter\nretries_total %.17g\n",
            retries);
    bprintf(&b,
            "# HELP store_write_failures_total Row writes of accepted jobs the job store "
            "refused.\n# TYPE store_write_failures_total counter\n"
            "store_write_failures_total %.17g\n",
            store_write_failures);
    bprintf(&b,
            "# HELP demix_lease_expirations_total Expired job leases this node re-queued or "
            "failed.\n# TYPE demix_lease_expirations_total counter\n"
            "demix_lease_expirations_total %.17g\n",
            lease_expirations);
    /* Histograms with no labels exist from the start (all zero). */
    find(&sep_size, "");
    find(&sep_audio, "");
    find(&queue_wait, "");
    render_family(&b, &sep_size);
    render_family(&b, &sep_audio);
    render_family(&b, &queue_wait);
    render_family(&b, &load_dur);
    render_family(&b, &inf_dur);
    render_family(&b, &alerts_total);
    render_family(&b, &br_trans);
    render_family(&b, &http_total);
    render_family(&b, &http_dur);
    render_family(&b, &sep_total);
    render_family(&b, &sep_dur);
    render_family(&b, &err_total);
    pthread_mutex_unlock(&mlock);
    return b.p;
}
