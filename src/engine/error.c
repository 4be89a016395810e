/*
 * error.c - status strings (generated from DMX_STATUS_MAP) and the
 * thread-local error detail that dmx_last_error() returns.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local char g_errmsg[1024];

const char *dmx_status_str(dmx_status s) {
    switch (s) {
#define DMX__STATUS_STR(name, value, desc) \
    case name:                              \
        return desc;
        DMX_STATUS_MAP(DMX__STATUS_STR)
#undef DMX__STATUS_STR
    }
    return "unknown status";
}

const char *dmx_status_name(dmx_status s) {
    switch (s) {
#define DMX__STATUS_NAME(name, value, desc) \
    case name:                               \
        return #name;
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
