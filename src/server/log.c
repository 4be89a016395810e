/*
 * log.c - structured logging for `demix serve`: one JSON object per line on
 * stderr (timestamp RFC 3339 UTC with milliseconds, level, logger, message,
 * event_type, request_id, fields), so that log shippers need no parsing
 * rules. `--log-format text` prints the same content as one readable line
 * for people at a terminal; `--log-level` drops lines below a level. A
 * mutex keeps lines from different threads whole.
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

double dmx_srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double dmx_srv_wall(void) {
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

void dmx_srv_log(dmx_log_level level, const char *logger, const char *event_type,
                 const char *request_id, cJSON *fields, const char *fmt, ...) {
    if ((int)level < dmx_srv_cfg.log_level) {
        cJSON_Delete(fields);
        return;
    }
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[40];
    size_t k = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + k, sizeof stamp - k, ".%03ldZ", ts.tv_nsec / 1000000);

    if (dmx_srv_cfg.log_text) {
        char *fs = fields && fields->child ? cJSON_PrintUnformatted(fields) : NULL;
        pthread_mutex_lock(&log_lock);
        fprintf(stderr, "%s %-7s %s [%s] %s%s%s\n", stamp, level_name(level), logger,
                request_id && *request_id ? request_id : "-", msg, fs ? " " : "", fs ? fs : "");
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
    if (request_id && *request_id)
        cJSON_AddStringToObject(o, "request_id", request_id);
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

void dmx_srv_engine_log(void *user, dmx_log_level level, const char *msg) {
    (void)user;
    /* Engine messages may end in a newline; a JSON string keeps it escaped,
     * but a trailing one is noise. */
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", msg);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
    dmx_srv_log(level, "demix.engine", "engine", NULL, NULL, "%s", buf);
}
