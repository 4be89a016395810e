/*
 * errors.h - every error code `demix serve` gives a client, in one X-macro
 * table (like DMX_STATUS_MAP in include/demix/status.h): the code string
 * that API clients match on, the HTTP status it is answered with, and
 * whether a job can end with it (a job's "error.code"). Request errors
 * (srv_respond_error) and job errors (runner.c, recovery.c) both come from
 * here, so a code and its status are written once.
 */
#ifndef DEMIX_SERVER_ERRORS_H
#define DEMIX_SERVER_ERRORS_H

#include <stddef.h>

/* X(ENUM, "code", HTTP status, 1 if a job can end with it) */
#define SRV_ERROR_MAP(X)                                        \
    X(INVALID_ARGUMENT, "invalid_argument", 400, 1)             \
    X(MISSING_FILE, "missing_file", 400, 0)                     \
    X(UNKNOWN_MODEL, "unknown_model", 400, 0)                   \
    X(UNKNOWN_SOURCE, "unknown_source", 400, 0)                 \
    X(OPTION_NOT_APPLICABLE, "option_not_applicable", 400, 0)   \
    X(INVALID_JSON, "invalid_json", 400, 0)                     \
    X(INVALID_PAYLOAD, "invalid_payload", 400, 0)               \
    X(UNAUTHORIZED, "unauthorized", 401, 0)                     \
    X(JOB_NOT_FOUND, "job_not_found", 404, 0)                   \
    X(NOT_FOUND, "not_found", 404, 0)                           \
    X(STEM_NOT_FOUND, "stem_not_found", 404, 0)                 \
    X(METHOD_NOT_ALLOWED, "method_not_allowed", 405, 0)         \
    X(JOB_NOT_DONE, "job_not_done", 409, 0)                     \
    X(CANCELLED, "cancelled", 409, 1)                           \
    X(PAYLOAD_TOO_LARGE, "payload_too_large", 413, 0)           \
    X(UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415, 0) \
    X(UNDECODABLE_AUDIO, "undecodable_audio", 422, 1)           \
    X(AUDIO_TOO_LONG, "audio_too_long", 422, 1)                 \
    X(RATE_LIMITED, "rate_limited", 429, 0)                     \
    X(INTERNAL, "internal", 500, 1)                             \
    X(STORAGE_ERROR, "storage_error", 500, 0)                   \
    X(INPUT_LOST, "input_lost", 500, 1)                         \
    X(WORKER_LOST, "worker_lost", 500, 1)                       \
    X(SEPARATION_FAILED, "separation_failed", 500, 1)           \
    X(ENCODE_FAILED, "encode_failed", 500, 1)                   \
    X(OUT_OF_MEMORY, "out_of_memory", 503, 1)                   \
    X(MODEL_UNAVAILABLE, "model_unavailable", 503, 1)           \
    X(NOT_READY, "not_ready", 503, 0)                           \
    X(QUEUE_FULL, "queue_full", 503, 0)                         \
    X(SHUTTING_DOWN, "shutting_down", 503, 0)                   \
    X(STORE_UNAVAILABLE, "store_unavailable", 503, 0)           \
    X(TIMEOUT, "timeout", 504, 1)                               \
    X(INSUFFICIENT_STORAGE, "insufficient_storage", 507, 0)

typedef enum srv_error {
#define SRV__ERROR_ENUM(e, code, status, job) SRV_E_##e,
    SRV_ERROR_MAP(SRV__ERROR_ENUM)
#undef SRV__ERROR_ENUM
        SRV_E_COUNT
} srv_error;

/* The code string ("queue_full"); static, never NULL. */
const char *srv_error_code(srv_error e);
/* The HTTP status of an error code (500 for a code not in the table). */
int srv_error_status(const char *code);
int srv_error_status_of(srv_error e);
/* The i-th code of the table and its status; NULL past the end (for
 * metrics that create every error series at 0). */
const char *srv_error_code_at(size_t i, int *status);
/* Messages for clients name no server path: every word holding a '/' is
 * cut down to its last component, in place ("data/jobs/ID/input: x" ->
 * "input: x"). Log the message first if the path matters. */
void srv_error_scrub_paths(char *msg);

#endif
