/*
 * test_resilience.c - unit test of src/server/resilience.c on its own (no
 * HTTP daemon, no job store): the token bucket (refill, burst, remaining,
 * reset, Retry-After, eviction of idle buckets, a full table, concurrent
 * takes), the circuit breaker (closed -> open -> half-open -> closed or
 * open again, probe slots, Retry-After, the state it shows) and the
 * full-jitter backoff's bounds and cancellation. The clock, the log and the
 * transition counter are this file's stand-ins, so time is moved by hand.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* ---- what resilience.c needs from the rest of the server ------------------------------ */

srv_config srv_cfg;
static double fake_now = 1000;
double srv_now(void) { return fake_now; }

void srv_log(dmx_log_level level, const char *logger, const char *event_type,
                 const char *request_id, cJSON *fields, const char *fmt, ...) {
    (void)level, (void)logger, (void)event_type, (void)request_id, (void)fmt;
    cJSON_Delete(fields);
}

static char transitions[1024]; /* "name:from>to " for each transition, in order */
void srv_metrics_breaker_transition(const char *breaker, const char *from, const char *to) {
    size_t k = strlen(transitions);
    snprintf(transitions + k, sizeof transitions - k, "%s:%s>%s ", breaker, from, to);
}

/* ---- checks ----------------------------------------------------------------------------- */

static int failures;
#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            failures++;                                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                  \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
        }                                                                                    \
    } while (0)

static int take(const char *client, int *remaining, int *reset, int *retry) {
    return srv_ratelimit_take(client, remaining, reset, retry);
}

static void test_bucket(void) {
    int rem, reset, retry;
    srv_cfg.rate_per_minute = 60; /* one token a second */
    srv_cfg.rate_burst = 3;
    /* a new client has the whole burst */
    for (int i = 0; i < 3; i++) {
        CHECK(take("a", &rem, &reset, &retry) == 1, "take %d refused", i);
        CHECK(rem == 2 - i, "remaining %d after %d takes", rem, i + 1);
        CHECK(retry == 0, "retry_after %d while allowed", retry);
    }
    CHECK(reset == 3, "reset %d s with an empty bucket at 1 token/s", reset);
    CHECK(take("a", &rem, &reset, &retry) == 0, "4th take in the same instant allowed");
    CHECK(retry == 1 && rem == 0, "limited: retry_after %d remaining %d", retry, rem);
    /* half a token is not a token; Retry-After is rounded up to whole seconds */
    fake_now += 0.5;
    CHECK(take("a", &rem, &reset, &retry) == 0, "half a token allowed a take");
    CHECK(retry == 1, "retry_after %d for half a token", retry);
    fake_now += 0.5;
    CHECK(take("a", &rem, &reset, &retry) == 1, "refilled token refused");
    /* another client has its own bucket */
    CHECK(take("b", &rem, &reset, &retry) == 1 && rem == 2, "client b: remaining %d", rem);
    /* refill stops at the burst, however long the pause */
    fake_now += 1000;
    int ok = 0;
    for (int i = 0; i < 10; i++) ok += take("a", &rem, &reset, &retry);
    CHECK(ok == 3, "%d takes after a long pause, burst is 3", ok);

    /* a slow rate: Retry-After is the wait for one whole token */
    srv_cfg.rate_per_minute = 6; /* 0.1 token/s */
    srv_cfg.rate_burst = 1;
    fake_now += 1000;
    CHECK(take("slow", &rem, &reset, &retry) == 1, "slow: first take refused");
    CHECK(take("slow", &rem, &reset, &retry) == 0 && retry == 10, "slow: retry_after %d, want 10",
          retry);
    fake_now += 4;
    CHECK(take("slow", &rem, &reset, &retry) == 0 && retry == 6, "slow: retry_after %d, want 6",
          retry);

    /* eviction: a bucket that has refilled completely is forgotten */
    fake_now += 1000;
    CHECK(take("c", &rem, &reset, &retry) == 1, "c refused");
    CHECK(srv_ratelimit_buckets() == 1, "%d buckets; idle ones should be evicted",
          srv_ratelimit_buckets());
    /* a full table of limited clients: a newcomer is still served, memory is bounded */
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "10.0.%d.%d", i / 256, i % 256);
        take(name, &rem, &reset, &retry);
    }
    int n = srv_ratelimit_buckets();
    CHECK(n == 4096, "%d buckets after 5000 clients (table of 4096)", n);
    CHECK(take("newcomer", &rem, &reset, &retry) == 1, "newcomer refused when the table is full");
    CHECK(srv_ratelimit_buckets() == n, "table grew past its bound");

    /* rate 0: no limit at all */
    srv_cfg.rate_per_minute = 0;
    ok = 0;
    for (int i = 0; i < 100; i++) ok += take("x", &rem, &reset, &retry);
    CHECK(ok == 100, "rate 0 limited %d of 100", 100 - ok);
}

/* Threads taking from one bucket at one instant: exactly the burst passes. */
static atomic_int passed;
static void *taker(void *arg) {
    (void)arg;
    int rem, reset, retry;
    for (int i = 0; i < 200; i++) passed += srv_ratelimit_take("shared", &rem, &reset, &retry);
    return NULL;
}

static void test_bucket_threads(void) {
    srv_cfg.rate_per_minute = 60;
    srv_cfg.rate_burst = 25;
    fake_now += 1000;
    pthread_t th[8];
    for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, taker, NULL);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    CHECK(atomic_load(&passed) == 25, "%d of 1600 concurrent takes passed, burst is 25",
          atomic_load(&passed));
}

static const char *shown(const char *name) {
    cJSON *o = srv_breakers_json();
    static char buf[32];
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, name);
    snprintf(buf, sizeof buf, "%s", cJSON_IsString(s) ? s->valuestring : "(none)");
    cJSON_Delete(o);
    return buf;
}

static void test_breaker(void) {
    int retry;
    srv_cfg.breaker_threshold = 3;
    srv_cfg.breaker_open_seconds = 10;
    srv_cfg.breaker_probes = 1;
    const char *m = "model:m";
    /* closed: a success resets the count of consecutive failures */
    CHECK(srv_breaker_acquire(m, &retry) == 0, "new breaker refuses");
    srv_breaker_record(m, 0);
    srv_breaker_record(m, 0);
    srv_breaker_record(m, 1);
    srv_breaker_record(m, 0);
    srv_breaker_record(m, 0);
    CHECK(!strcmp(shown(m), "closed"), "state %s after 2 failures since a success", shown(m));
    CHECK(srv_breaker_check(m, &retry) == 0 && retry == 0, "closed breaker refuses");
    /* the threshold opens it */
    srv_breaker_record(m, 0);
    CHECK(!strcmp(shown(m), "open"), "state %s after 3 consecutive failures", shown(m));
    CHECK(srv_breakers_any_open(), "any_open is 0 with an open breaker");
    CHECK(srv_breaker_check(m, &retry) == -1 && retry == 10, "open: check %d s", retry);
    CHECK(srv_breaker_acquire(m, &retry) == -1 && retry == 10, "open: acquire %d s", retry);
    fake_now += 4;
    CHECK(srv_breaker_acquire(m, &retry) == -1 && retry == 6, "open after 4 s: retry %d", retry);
    /* after the open period it shows half_open and admits one probe */
    fake_now += 6.5;
    CHECK(!strcmp(shown(m), "half_open"), "state %s after the open period", shown(m));
    CHECK(!srv_breakers_any_open(), "any_open after the open period");
    CHECK(srv_breaker_check(m, &retry) == 0, "check refuses when a probe is due");
    CHECK(srv_breaker_acquire(m, &retry) == 0, "the probe is refused");
    CHECK(srv_breaker_acquire(m, &retry) == -1 && retry == 1, "a 2nd probe admitted (probes=1)");
    /* a failed probe opens it again for a whole period */
    srv_breaker_record(m, 0);
    CHECK(!strcmp(shown(m), "open"), "state %s after a failed probe", shown(m));
    CHECK(srv_breaker_acquire(m, &retry) == -1 && retry == 10, "reopened: retry %d", retry);
    /* a successful probe closes it */
    fake_now += 10.5;
    CHECK(srv_breaker_acquire(m, &retry) == 0, "second probe refused");
    srv_breaker_record(m, 1);
    CHECK(!strcmp(shown(m), "closed"), "state %s after a good probe", shown(m));
    CHECK(srv_breaker_acquire(m, &retry) == 0 && srv_breaker_acquire(m, &retry) == 0,
          "closed breaker limits calls");
    /* and it counts failures from zero again */
    srv_breaker_record(m, 0);
    srv_breaker_record(m, 0);
    CHECK(!strcmp(shown(m), "closed"), "state %s: failures before it opened still counted",
          shown(m));
    const char *want = "model:m:closed>open model:m:open>half_open model:m:half_open>open "
                       "model:m:open>half_open model:m:half_open>closed ";
    CHECK(!strcmp(transitions, want), "transitions:\n  %s\nwant:\n  %s", transitions, want);

    /* several probe slots */
    srv_cfg.breaker_threshold = 1;
    srv_cfg.breaker_probes = 2;
    const char *p = "model:p";
    srv_breaker_record(p, 0);
    CHECK(!strcmp(shown(p), "open"), "threshold 1: state %s", shown(p));
    fake_now += 11;
    CHECK(srv_breaker_acquire(p, &retry) == 0, "probe 1 refused");
    CHECK(srv_breaker_acquire(p, &retry) == 0, "probe 2 refused");
    CHECK(srv_breaker_acquire(p, &retry) == -1, "probe 3 admitted with 2 slots");
    /* breakers are independent */
    CHECK(srv_breaker_acquire("model:other", &retry) == 0, "another breaker refuses");
}

static void test_backoff(void) {
    srv_cfg.retry_base_seconds = 0.5;
    for (int a = 0; a < 64; a++) {
        double cap = fmin(0.5 * pow(2, a), 30);
        CHECK(srv_backoff_delay(a, 0) == 0, "attempt %d: u=0 gives %g", a, srv_backoff_delay(a, 0));
        double hi = srv_backoff_delay(a, 1);
        CHECK(fabs(hi - cap) < 1e-12, "attempt %d: cap %g, want %g", a, hi, cap);
        double mid = srv_backoff_delay(a, 0.5);
        CHECK(mid >= 0 && mid <= cap && fabs(mid - cap / 2) < 1e-12, "attempt %d: %g", a, mid);
    }
    CHECK(srv_backoff_delay(100000, 1) == 30, "huge attempt: %g", srv_backoff_delay(100000, 1));
    CHECK(srv_backoff_delay(-3, 1) == 0.5, "negative attempt: %g", srv_backoff_delay(-3, 1));
    CHECK(srv_backoff_delay(2, 7) <= 2 && srv_backoff_delay(2, NAN) == 0, "u out of range");
    /* a cancelled sleep returns at once, whatever the delay (the fake
     * clock does not move, so a sleep that ignored it would never end) */
    atomic_int cancel = 1;
    srv_cfg.retry_base_seconds = 60;
    srv_backoff_sleep(5, &cancel);
    /* base 0: no delay at all */
    srv_cfg.retry_base_seconds = 0;
    srv_backoff_sleep(5, NULL);
    CHECK(srv_transient(DMX_ERR_IO) && srv_transient(DMX_ERR_NOMEM) &&
              !srv_transient(DMX_ERR_DECODE) && !srv_transient(DMX_OK),
          "transient classification");
}

int main(void) {
    test_bucket();
    test_bucket_threads();
    test_breaker();
    test_backoff();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
