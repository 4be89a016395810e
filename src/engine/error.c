/*
 * error.c - status strings (generated from DMX_STATUS_MAP) and the
 * thread-local error detail that dmx_last_error() returns, and the log sink.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local char g_errmsg[1024];

static dmx_log_fn g_log_fn;
static void *g_log_user;

void dmx_log_set(dmx_log_fn fn, void *user) {
    g_log_fn = fn;
    g_log_user = user;
}

void dmx__log(dmx_log_level level, const char *fmt, ...) {
    dmx_log_fn fn = g_log_fn;
    if (!fn) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fn(g_log_user, level, buf);
}

const char *dmx_status_str(dmx_status s) {
    switch (s) {
#define DMX__STATUS_STR(name, value, desc) \
    case name: return desc;
        DMX_STATUS_MAP(DMX__STATUS_STR)
#undef DMX__STATUS_STR
    }
    return "unknown status";
}

const char *dmx_status_name(dmx_status s) {
    switch (s) {
#define DMX__STATUS_NAME(name, value, desc) \
    case name: return #name;
        DMX_STATUS_MAP(DMX__STATUS_NAME)
#undef DMX__STATUS_NAME
    }
    return "DMX_UNKNOWN";
}

const char *dmx_last_error(void) { return g_errmsg; }

void dmx__clear_error(void) { g_errmsg[0] = '\0'; }

dmx_status dmx__fail(dmx_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_errmsg, sizeof g_errmsg, fmt, ap);
    va_end(ap);
    return s;
}

void dmx__assert_fail(const char *expr, const char *file, int line) {
    /* The one place the library writes to stderr: a programmer bug, then abort. */
    fprintf(stderr, "demix: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
