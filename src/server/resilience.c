/*
 * resilience.c - what keeps `demix serve` standing under load and failure:
 *
 *   - a token bucket per client IP for POST /separate: `rate_per_minute`
 *     tokens a minute, up to `rate_burst` saved. Buckets live in a small
 *     open table; a bucket that has refilled completely carries no state
 *     worth keeping, so it is evicted (lazily, when the table is scanned),
 *     which bounds memory by the clients active within one refill period;
 *   - circuit breakers by name ("model:htdemucs"): CLOSED counts
 *     consecutive failures and opens at `breaker_threshold`; OPEN refuses
 *     everything for `breaker_open_seconds`; then HALF_OPEN admits up to
 *     `breaker_probes` trial calls at once: one success closes it, one
 *     failure opens it again. Every transition is logged and counted;
 *   - full-jitter exponential backoff for retries of transient failures.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "server.h"

/* ---- rate limiter ------------------------------------------------------------------- */

#define MAX_BUCKETS 4096

typedef struct bucket {
    char client[64];
    double tokens;
    double last; /* srv_now() of the last refill */
} bucket;

static bucket buckets[MAX_BUCKETS];
static int n_buckets;
static pthread_mutex_t rl_lock = PTHREAD_MUTEX_INITIALIZER;

static void refill(bucket *b, double now, double per_s, double burst) {
    b->tokens += (now - b->last) * per_s;
    if (b->tokens > burst) b->tokens = burst;
    b->last = now;
}

int srv_ratelimit_take(const char *client, int *remaining, int *reset, int *retry_after) {
    double per_s = srv_cfg.rate_per_minute / 60.0;
    double burst = srv_cfg.rate_burst > 0 ? srv_cfg.rate_burst : 1;
    *remaining = (int)burst;
    *reset = 0;
    *retry_after = 0;
    if (per_s <= 0) return 1;
    double now = srv_now();
    pthread_mutex_lock(&rl_lock);
    bucket *b = NULL;
    for (int i = 0; i < n_buckets;) {
        bucket *x = &buckets[i];
        if (strcmp(x->client, client)) {
            refill(x, now, per_s, burst);
            if (x->tokens >= burst) { /* idle: forget it */
                buckets[i] = buckets[--n_buckets];
                continue;
            }
        }
        i++;
    }
    for (int i = 0; i < n_buckets && !b; i++)
        if (!strcmp(buckets[i].client, client)) b = &buckets[i];
    if (!b) {
        if (n_buckets == MAX_BUCKETS) {
            /* Every slot is a client that is actively limited; refusing the
             * newcomer would let a flood lock everyone out, so the fullest
             * bucket is recycled instead. */
            int best = 0;
            for (int i = 1; i < n_buckets; i++)
                if (buckets[i].tokens > buckets[best].tokens) best = i;
            buckets[best] = buckets[--n_buckets];
        }
        b = &buckets[n_buckets++];
        snprintf(b->client, sizeof b->client, "%s", client);
        b->tokens = burst;
        b->last = now;
    }
    refill(b, now, per_s, burst);
    int ok = b->tokens >= 1;
    if (ok) b->tokens -= 1;
    *remaining = (int)floor(b->tokens);
    *reset = (int)ceil((burst - b->tokens) / per_s);
    if (!ok) *retry_after = (int)ceil((1 - b->tokens) / per_s);
    if (!ok && *retry_after < 1) *retry_after = 1;
    pthread_mutex_unlock(&rl_lock);
    return ok;
}

int srv_ratelimit_buckets(void) {
    pthread_mutex_lock(&rl_lock);
    int n = n_buckets;
    pthread_mutex_unlock(&rl_lock);
    return n;
}

/* ---- circuit breakers ---------------------------------------------------------------- */

#define MAX_BREAKERS 64

typedef struct breaker {
    char name[160];
    srv_breaker_state state;
    int failures;  /* consecutive, while closed */
    double opened; /* srv_now() when it opened */
    int probes;    /* trial calls in flight while half-open */
} breaker;

static breaker breakers[MAX_BREAKERS];
static int n_breakers;
static pthread_mutex_t br_lock = PTHREAD_MUTEX_INITIALIZER;

const char *srv_breaker_state_name(srv_breaker_state s) {
    static const char *n[] = {"closed", "open", "half_open"};
    return n[s];
}

static breaker *br_find(const char *name) {
    for (int i = 0; i < n_breakers; i++)
        if (!strcmp(breakers[i].name, name)) return &breakers[i];
    if (n_breakers == MAX_BREAKERS) return NULL; /* bounded; beyond it, no protection */
    breaker *b = &breakers[n_breakers++];
    memset(b, 0, sizeof *b);
    snprintf(b->name, sizeof b->name, "%s", name);
    return b;
}

static void transition(breaker *b, srv_breaker_state to) {
    srv_breaker_state from = b->state;
    if (from == to) return;
    b->state = to;
    if (to == SRV_BREAKER_OPEN) b->opened = srv_now();
    if (to != SRV_BREAKER_HALF_OPEN) b->probes = 0;
    if (to == SRV_BREAKER_CLOSED) b->failures = 0;
    srv_metrics_breaker_transition(b->name, srv_breaker_state_name(from),
                                   srv_breaker_state_name(to));
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "breaker", b->name);
    cJSON_AddStringToObject(f, "from", srv_breaker_state_name(from));
    cJSON_AddStringToObject(f, "to", srv_breaker_state_name(to));
    srv_log(to == SRV_BREAKER_OPEN ? DMX_LOG_WARN : DMX_LOG_INFO, "demix.breaker",
            "circuit_breaker", NULL, f, "circuit breaker %s: %s -> %s", b->name,
            srv_breaker_state_name(from), srv_breaker_state_name(to));
}

static int remaining_open(const breaker *b) {
    double left = b->opened + srv_cfg.breaker_open_seconds - srv_now();
    return left > 0 ? (int)ceil(left) : 0;
}

static int br_gate(const char *name, int *retry_after, int take) {
    *retry_after = 0;
    pthread_mutex_lock(&br_lock);
    breaker *b = br_find(name);
    int r = 0;
    if (b && b->state == SRV_BREAKER_OPEN) {
        int left = remaining_open(b);
        if (left > 0) {
            *retry_after = left;
            r = -1;
        } else if (take) {
            transition(b, SRV_BREAKER_HALF_OPEN);
        }
    }
    if (b && r == 0 && take && b->state == SRV_BREAKER_HALF_OPEN) {
        int max = srv_cfg.breaker_probes > 0 ? srv_cfg.breaker_probes : 1;
        if (b->probes >= max) {
            *retry_after = 1;
            r = -1;
        } else {
            b->probes++;
        }
    }
    pthread_mutex_unlock(&br_lock);
    return r;
}

int srv_breaker_acquire(const char *name, int *retry_after) {
    return br_gate(name, retry_after, 1);
}
int srv_breaker_check(const char *name, int *retry_after) { return br_gate(name, retry_after, 0); }

void srv_breaker_record(const char *name, int ok) {
    pthread_mutex_lock(&br_lock);
    breaker *b = br_find(name);
    if (b) {
        if (b->state == SRV_BREAKER_HALF_OPEN) {
            if (b->probes > 0) b->probes--;
            transition(b, ok ? SRV_BREAKER_CLOSED : SRV_BREAKER_OPEN);
        } else if (ok) {
            b->failures = 0;
        } else if (b->state == SRV_BREAKER_CLOSED &&
                   ++b->failures >=
                       (srv_cfg.breaker_threshold > 0 ? srv_cfg.breaker_threshold : 1)) {
            transition(b, SRV_BREAKER_OPEN);
        }
    }
    pthread_mutex_unlock(&br_lock);
}

/* An open breaker whose period is over reports half_open: that is what the
 * next call will find. */
static srv_breaker_state visible(const breaker *b) {
    if (b->state == SRV_BREAKER_OPEN && remaining_open(b) == 0) return SRV_BREAKER_HALF_OPEN;
    return b->state;
}

cJSON *srv_breakers_json(void) {
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&br_lock);
    for (int i = 0; i < n_breakers; i++)
        cJSON_AddStringToObject(o, breakers[i].name, srv_breaker_state_name(visible(&breakers[i])));
    pthread_mutex_unlock(&br_lock);
    return o;
}

int srv_breakers_any_open(void) {
    int n = 0;
    pthread_mutex_lock(&br_lock);
    for (int i = 0; i < n_breakers; i++) n += visible(&breakers[i]) == SRV_BREAKER_OPEN;
    pthread_mutex_unlock(&br_lock);
    return n > 0;
}

void srv_breakers_each(void (*fn)(void *user, const char *name, srv_breaker_state s), void *user) {
    pthread_mutex_lock(&br_lock);
    for (int i = 0; i < n_breakers; i++) fn(user, breakers[i].name, visible(&breakers[i]));
    pthread_mutex_unlock(&br_lock);
}

/* ---- retries --------------------------------------------------------------------------- */

int srv_transient(dmx_status st) { return st == DMX_ERR_IO || st == DMX_ERR_NOMEM; }

double srv_backoff_delay(int attempt, double u) {
    double cap = srv_cfg.retry_base_seconds * pow(2.0, attempt > 0 ? attempt : 0);
    if (!(cap <= 30)) cap = 30; /* also for an overflow to inf */
    if (!(u >= 0)) u = 0;
    if (u > 1) u = 1;
    /* Full jitter: uniform over [0, cap], so retries of many jobs spread out. */
    return cap * u;
}

void srv_backoff_sleep(int attempt, atomic_int *cancel) {
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint32_t)rand();
    double end = srv_now() + srv_backoff_delay(attempt, (double)r / 4294967296.0);
    while (srv_now() < end) {
        if (cancel && atomic_load(cancel)) return;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
