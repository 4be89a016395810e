/*
 * error.h - internal helpers for the thread-local error detail and asserts.
 */
#ifndef DMX_ENGINE_ERROR_H
#define DMX_ENGINE_ERROR_H

#include "demix/demix.h"
#include "demix/status.h"

/* Formats the thread-local detail message (see dmx_last_error) and returns
 * `s` so callers can write `return dmx__fail(DMX_ERR_CORRUPT, "...", ...)`. */
dmx_status dmx__fail(dmx_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sends a formatted message to the log callback installed with dmx_log_set
 * (nothing happens when none is installed). Used by every demix library. */
void dmx__log(dmx_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears the thread-local detail message. */
void dmx__clear_error(void);

/* Aborts with file:line on a programmer error (never on bad input). */
void dmx__assert_fail(const char *expr, const char *file, int line);
#define DMX_ASSERT(x) ((x) ? (void)0 : dmx__assert_fail(#x, __FILE__, __LINE__))

#endif
