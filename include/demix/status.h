/*
 * status.h - the one status enum shared by every demix module.
 *
 * Every fallible demix function returns a dmx_status. DMX_OK is zero, errors
 * are negative. The table below is the single source of truth: it generates the
 * enum and dmx_status_str(), and the server maps it to HTTP codes.
 *
 * A human-readable detail for the most recent error on the calling thread
 * (naming the tensor, field, offset or file involved) is available from
 * dmx_last_error(); the pointer stays valid until the next demix call on the
 * same thread.
 */
#ifndef DEMIX_STATUS_H
#define DEMIX_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, description) */
#define DMX_STATUS_MAP(X)                                                    \
    X(DMX_OK, 0, "success")                                                  \
    X(DMX_ERR_INVALID_ARG, -1, "invalid argument")                           \
    X(DMX_ERR_NOMEM, -2, "out of memory")                                    \
    X(DMX_ERR_IO, -3, "I/O error")                                           \
    X(DMX_ERR_NOT_FOUND, -4, "not found")                                    \
    X(DMX_ERR_CORRUPT, -5, "corrupt or truncated file")                      \
    X(DMX_ERR_UNSUPPORTED, -6, "unsupported format or feature")              \
    X(DMX_ERR_MODEL, -7, "checkpoint does not match the model architecture") \
    X(DMX_ERR_BAD_INPUT, -8, "bad input data")                               \
    X(DMX_ERR_DECODE, -9, "audio could not be decoded")                      \
    X(DMX_ERR_ENCODE, -10, "audio could not be encoded")                     \
    X(DMX_ERR_CANCELLED, -11, "cancelled")                                   \
    X(DMX_ERR_TIMEOUT, -12, "timed out")                                     \
    X(DMX_ERR_NETWORK, -13, "network error")                                 \
    X(DMX_ERR_CHECKSUM, -14, "checksum mismatch")                            \
    X(DMX_ERR_INTERNAL, -15, "internal error")

typedef enum dmx_status {
#define DMX__STATUS_ENUM(name, value, desc) name = value,
    DMX_STATUS_MAP(DMX__STATUS_ENUM)
#undef DMX__STATUS_ENUM
} dmx_status;

/* Returns a static, never-NULL description of `s` ("unknown status" if `s`
 * is not in the table). */
const char *dmx_status_str(dmx_status s);

/* Returns the symbolic name of `s` ("DMX_ERR_CORRUPT"), static, never NULL. */
const char *dmx_status_name(dmx_status s);

/* Returns the detail message of the last error set on this thread, or "" if
 * none. Owned by the library (thread-local); do not free. */
const char *dmx_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
