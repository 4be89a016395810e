/*
 * log.c - structured logging for `demix serve`: one JSON object per line on
 * stderr (timestamp RFC 3339 UTC with milliseconds, level, logger, message,
 * event_type, request_id, fields), so that log shippers need no parsing
 * rules. `--log-format text` prints the same content as one readable line
 * for people at a terminal, with control characters escaped (\n, \xNN) so
 * that no value can start a forged line; `--log-level` drops lines below a
 * level. A mutex keeps lines from different threads whole.
 *
 * Every string that reaches a line is valid UTF-8, whatever was cut:
 * srv_utf8_copy() is the one truncation rule (also used for metric label
 * values). Engine and FFmpeg messages pass a token bucket (a burst of
 * ENGINE_BURST lines, then ENGINE_RATE per second); what it drops is
 * counted and reported by one "log_suppressed" line when lines flow again
 * or at the next srv_log_flush() (the system metrics thread calls it).
 *
 * A leaf: it needs cJSON and nothing else of the server (its settings come
 * through srv_log_configure()).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_text; /* 1: text lines */
static int log_level = DMX_LOG_INFO;

void srv_log_configure(int text, int level) {
    log_text = text;
    log_level = level;
}

/* Length of the valid UTF-8 character at p (1..4), 0 if the bytes there are
 * not one (stray continuation, overlong form, surrogate, past U+10FFFF or
 * cut by the end of the string). */
static size_t utf8_char(const unsigned char *p) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t n = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!n) return 0;
    uint32_t cp = c & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0; /* also stops at the NUL */
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

size_t srv_utf8_copy(char *dst, size_t cap, const char *src) {
    if (!cap) return 0;
    const unsigned char *p = (const unsigned char *)(src ? src : "");
    size_t k = 0;
    while (*p) {
        size_t n = utf8_char(p);
        if (k + (n ? n : 1) > cap - 1) break; /* whole characters only */
        if (!n) {
            /* A character cut by the end of the string (a truncation
             * upstream) is dropped; other invalid bytes become '?'. */
            size_t need = (*p & 0xE0) == 0xC0   ? 2
                          : (*p & 0xF0) == 0xE0 ? 3
                          : (*p & 0xF8) == 0xF0 ? 4
                                                : 0,
                   i = 1;
            while (i < need && (p[i] & 0xC0) == 0x80) i++;
            if (need && i < need && !p[i]) break;
            dst[k++] = '?';
            p++;
            continue;
        }
        memmove(dst + k, p, n); /* dst may be src: k never passes p */
        k += n;
        p += n;
    }
    dst[k] = '\0';
    return k;
}

static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t n; *p; p += n)
        if (!(n = utf8_char(p))) return 0;
    return 1;
}

/* Every string (keys too) of a fields object made valid UTF-8 in place:
 * fields often quote outside input (alert labels, file names). Written only
 * when invalid: valid strings may be constants (cJSON's CS/reference
 * variants). */
static void clean_strings(cJSON *o) {
    for (; o; o = o->next) {
        if (o->string && !utf8_valid(o->string))
            srv_utf8_copy(o->string, strlen(o->string) + 1, o->string);
        if (cJSON_IsString(o) && o->valuestring && !utf8_valid(o->valuestring))
            srv_utf8_copy(o->valuestring, strlen(o->valuestring) + 1, o->valuestring);
        clean_strings(o->child);
    }
}

/* Text lines: the string with backslash and control characters escaped. */
static void text_escape(char *out, size_t cap, const char *s) {
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && k + 5 < cap; p++) {
        if (*p == '\\')
            k += (size_t)snprintf(out + k, cap - k, "\\\\");
        else if (*p == '\n')
            k += (size_t)snprintf(out + k, cap - k, "\\n");
        else if (*p == '\r')
            k += (size_t)snprintf(out + k, cap - k, "\\r");
        else if (*p == '\t')
            k += (size_t)snprintf(out + k, cap - k, "\\t");
        else if (*p < 0x20 || *p == 0x7F)
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", *p);
        else
            out[k++] = (char)*p;
    }
    out[k] = '\0';
    srv_utf8_copy(out, cap, out); /* a cut at cap must not split a character */
}

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double srv_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *level_name(dmx_log_level l) {
    switch (l) {
        case DMX_LOG_DEBUG: return "debug";
        case DMX_LOG_INFO: return "info";
        case DMX_LOG_WARN: return "warning";
        default: return "error";
    }
}

void srv_log(dmx_log_level level, const char *logger, const char *event_type,
             const char *request_id, cJSON *fields, const char *fmt, ...) {
    if ((int)level < log_level) {
        cJSON_Delete(fields);
        return;
    }
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_utf8_copy(msg, sizeof msg, msg);
    char rid[80];
    srv_utf8_copy(rid, sizeof rid, request_id ? request_id : "");
    if (fields) clean_strings(fields->child);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[40];
    size_t k = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + k, sizeof stamp - k, ".%03ldZ", ts.tv_nsec / 1000000);

    if (log_text) {
        /* Field values are JSON strings (escaped by cJSON); the rest is
         * escaped here. */
        char *fs = fields && fields->child ? cJSON_PrintUnformatted(fields) : NULL;
        char emsg[4 * sizeof msg], erid[4 * sizeof rid], elog[128];
        text_escape(emsg, sizeof emsg, msg);
        text_escape(erid, sizeof erid, *rid ? rid : "-");
        text_escape(elog, sizeof elog, logger);
        pthread_mutex_lock(&log_lock);
        fprintf(stderr, "%s %-7s %s [%s] %s%s%s\n", stamp, level_name(level), elog, erid, emsg,
                fs ? " " : "", fs ? fs : "");
        fflush(stderr);
        pthread_mutex_unlock(&log_lock);
        free(fs);
        cJSON_Delete(fields);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        cJSON_Delete(fields);
        return;
    }
    cJSON_AddStringToObject(o, "timestamp", stamp);
    cJSON_AddStringToObject(o, "level", level_name(level));
    cJSON_AddStringToObject(o, "logger", logger);
    cJSON_AddStringToObject(o, "message", msg);
    cJSON_AddStringToObject(o, "event_type", event_type);
    if (*rid)
        cJSON_AddStringToObject(o, "request_id", rid);
    else
        cJSON_AddNullToObject(o, "request_id");
    cJSON_AddItemToObject(o, "fields", fields ? fields : cJSON_CreateObject());
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line) return;
    pthread_mutex_lock(&log_lock);
    fputs(line, stderr);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
    free(line);
}

/* The engine's token bucket (guarded by eng_lock). */
#define ENGINE_BURST 20.0
#define ENGINE_RATE  5.0 /* lines per second after the burst */
static pthread_mutex_t eng_lock = PTHREAD_MUTEX_INITIALIZER;
static double eng_tokens = ENGINE_BURST, eng_last, eng_drop_since;
static long eng_dropped;

/* Logs how many engine lines were dropped, if any (takes eng_lock). */
static void report_dropped(void) {
    pthread_mutex_lock(&eng_lock);
    long n = eng_dropped;
    double since = eng_drop_since;
    eng_dropped = 0;
    pthread_mutex_unlock(&eng_lock);
    if (!n) return;
    cJSON *f = cJSON_CreateObject();
    cJSON_AddNumberToObject(f, "dropped", (double)n);
    cJSON_AddNumberToObject(f, "seconds", srv_now() - since);
    srv_log(DMX_LOG_WARN, "demix.engine", "log_suppressed", NULL, f,
            "%ld engine/FFmpeg log lines dropped by the rate limit (%g/s, burst %g)", n,
            ENGINE_RATE, ENGINE_BURST);
}

void srv_log_flush(void) { report_dropped(); }

void srv_engine_log(void *user, dmx_log_level level, const char *msg) {
    (void)user;
    if ((int)level < log_level) return; /* dropped lines cost no tokens */
    double now = srv_now();
    pthread_mutex_lock(&eng_lock);
    if (eng_last > 0) eng_tokens += (now - eng_last) * ENGINE_RATE;
    if (eng_tokens > ENGINE_BURST) eng_tokens = ENGINE_BURST;
    eng_last = now;
    int ok = eng_tokens >= 1;
    if (ok) {
        eng_tokens -= 1;
    } else if (eng_dropped++ == 0) {
        eng_drop_since = now;
    }
    long pending = eng_dropped;
    pthread_mutex_unlock(&eng_lock);
    if (!ok) return;
    if (pending) report_dropped();
    /* Engine messages may end in a newline; a JSON string keeps it escaped,
     * but a trailing one is noise. */
    char buf[2048];
    srv_utf8_copy(buf, sizeof buf, msg);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
    srv_log(level, "demix.engine", "engine", NULL, NULL, "%s", buf);
}
