/*
 * metrics.c - Prometheus metrics of `demix serve`, rendered in the text
 * exposition format 0.0.4. Series are kept in small fixed tables keyed by
 * their label values; labels are route templates and model names, never raw
 * paths or client addresses, so the number of series stays bounded.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define MAX_SERIES 256
#define MAX_BUCKETS 16

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
    series s[MAX_SERIES];
} family;

static const double HTTP_BOUNDS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1, 2.5, 5, 10, 30, 60, 300};
/* Separations run from a fraction of a second (tiny models) to half an hour. */
static const double SEP_BOUNDS[] = {0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800};

#define NB(a) ((int)(sizeof a / sizeof *a))
static family http_total = {.name = "http_requests_total",
                            .help = "HTTP requests by method, route and status.",
                            .type = "counter"};
static family http_dur = {.name = "http_request_duration_seconds",
                          .help = "HTTP request latency by route.", .type = "histogram",
                          .bounds = HTTP_BOUNDS, .n_bounds = NB(HTTP_BOUNDS)};
static family sep_total = {.name = "separations_total",
                           .help = "Separation jobs finished, by model and status.",
                           .type = "counter"};
static family sep_dur = {.name = "separation_duration_seconds",
                         .help = "Wall time of separation jobs.", .type = "histogram",
                         .bounds = SEP_BOUNDS, .n_bounds = NB(SEP_BOUNDS)};
static family err_total = {.name = "errors_total", .help = "Errors by type and route.",
                           .type = "counter"};

static pthread_mutex_t mlock = PTHREAD_MUTEX_INITIALIZER;

/* Label values come from route templates, model names and status names; the
 * escaping still follows the format so that nothing can break a line. */
static void esc(char *out, size_t n, const char *v) {
    size_t k = 0;
    for (; *v && k + 3 < n; v++) {
        if (*v == '\\' || *v == '"') out[k++] = '\\', out[k++] = *v;
        else if (*v == '\n') out[k++] = '\\', out[k++] = 'n';
        else out[k++] = *v;
    }
    out[k] = '\0';
}

static series *find(family *f, const char *labels) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->s[i].labels, labels)) return &f->s[i];
    if (f->n == MAX_SERIES) return NULL; /* bounded: drop rather than grow */
    series *s = &f->s[f->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->labels, sizeof s->labels, "%s", labels);
    return s;
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

void dmx_metrics_http(const char *method, const char *endpoint, int status, double seconds) {
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

void dmx_metrics_separation(const char *model, const char *status, double seconds) {
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

void dmx_metrics_error(const char *type, const char *endpoint) {
    char t[64], e[128], l[256];
    esc(t, sizeof t, type);
    esc(e, sizeof e, endpoint);
    pthread_mutex_lock(&mlock);
    snprintf(l, sizeof l, "type=\"%s\",endpoint=\"%s\"", t, e);
    add(&err_total, l, 1);
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
        const series *s = &f->s[i];
        if (!f->bounds) {
            bprintf(b, "%s{%s} %.17g\n", f->name, s->labels, s->value);
            continue;
        }
        /* f->name ends in _seconds; bucket/sum/count series derive from it. */
        for (int k = 0; k < f->n_bounds; k++)
            bprintf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", f->name, s->labels, f->bounds[k],
                    (unsigned long long)s->buckets[k]);
        bprintf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", f->name, s->labels,
                (unsigned long long)s->count);
        bprintf(b, "%s_sum{%s} %.17g\n", f->name, s->labels, s->value);
        bprintf(b, "%s_count{%s} %llu\n", f->name, s->labels, (unsigned long long)s->count);
    }
}

char *dmx_metrics_render(void) {
    buf b = {0};
    bprintf(&b, "# HELP demix_build_info Build information.\n# TYPE demix_build_info gauge\n"
                "demix_build_info{version=\"%s\",engine=\"%s\"} 1\n",
            DEMIX_SERVER_VERSION, DMX_VERSION_STRING);
    bprintf(&b, "# HELP models_loaded Models held in memory.\n# TYPE models_loaded gauge\n"
                "models_loaded %d\n",
            dmx_models_loaded());
    bprintf(&b, "# HELP active_sessions Separations running now.\n# TYPE active_sessions gauge\n"
                "active_sessions %d\n",
            dmx_jobs_active());
    bprintf(&b, "# HELP queue_depth Jobs waiting for a worker.\n# TYPE queue_depth gauge\n"
                "queue_depth %d\n",
            dmx_jobs_queue_depth());
    bprintf(&b, "# HELP process_start_time_seconds Start time since the Unix epoch.\n"
                "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.3f\n",
            dmx_srv_wall() - (dmx_srv_now() - dmx_srv_start_time));
    pthread_mutex_lock(&mlock);
    render_family(&b, &http_total);
    render_family(&b, &http_dur);
    render_family(&b, &sep_total);
    render_family(&b, &sep_dur);
    render_family(&b, &err_total);
    pthread_mutex_unlock(&mlock);
    return b.p;
}
