/*
 * http.h - the request object shared by the HTTP front end (http.c) and the
 * route handlers (routes.c).
 */
#ifndef DEMIX_SERVER_HTTP_H
#define DEMIX_SERVER_HTTP_H

#include <microhttpd.h>
#include <stdio.h>

#include "server.h"

#define MAX_FIELD 256
#define MAX_EXTRA_HEADERS 4
#define MAX_JSON_BODY (1 << 20) /* POST /alerts: Alertmanager batches stay far below */

/* POST /separate's defaults and bounds, written once: the handler applies
 * them and /openapi.json documents them. 1 shift like upstream's CLI and
 * Separator (and `demix separate`), so the same request gives the same
 * stems everywhere. */
#define DMX_SEP_DEFAULT_MODEL "htdemucs"
#define DMX_SEP_DEFAULT_FORMAT "wav"
#define DMX_SEP_DEFAULT_SHIFTS 1
#define DMX_SEP_MAX_SHIFTS 100
#define DMX_SEP_DEFAULT_OVERLAP 0.25
/* GET /jobs paging. */
#define DMX_JOBS_DEFAULT_LIMIT 50
#define DMX_JOBS_MAX_LIMIT 1000

/* The endpoint label of POST /separate with wait=true: its latency is a
 * whole separation, so dashboards and latency alerts leave it out. */
#define DMX_ENDPOINT_SEPARATE_WAIT "/separate?wait=true"

typedef struct dmx_req {
    double t0;
    char request_id[65];
    char method[16];
    const char *endpoint; /* route template, for logs and metrics */
    char id[40], stem[80]; /* path parameters */
    int responded;
    char client[64];       /* peer address, or X-Forwarded-For's from a trusted proxy */
    int retry_after;       /* seconds for Retry-After on 429/503; 0 = the default */
    int n_extra;
    char extra_name[MAX_EXTRA_HEADERS][32], extra_value[MAX_EXTRA_HEADERS][160];
    char *body;            /* JSON request bodies */
    size_t body_len;
    int body_too_large;
    /* POST /separate upload state */
    struct MHD_PostProcessor *pp;
    int started_upload;
    FILE *upload;
    char *upload_path;
    char *upload_name;
    int64_t upload_bytes;
    int too_large;
    int write_failed;
    int saw_file;
    int64_t file_next_off; /* offset the current 'file' part expects next */
    int64_t body_bytes;    /* raw body bytes read, kept or not */
    const char *refuse;    /* error code to answer once the body is read */
    char refuse_msg[128];
    char bad_field[MAX_FIELD]; /* a field given twice or too long: 400 */
    int bad_field_long;        /* 1: too long, 0: given twice */
    int malformed;         /* the multipart parser gave up */
    char model_name[MAX_FIELD], two_stems[MAX_FIELD], format[MAX_FIELD], shifts[MAX_FIELD],
        overlap[MAX_FIELD], wait[MAX_FIELD];
} dmx_req;

typedef enum MHD_Result (*dmx_handler)(struct MHD_Connection *c, dmx_req *r, const char *upload,
                                       size_t *upload_size);

/* A header for the response to come (e.g. rate-limit state). */
void dmx_req_header(dmx_req *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sends `body` (consumed) with `status`, the request id header and any
 * extra header pair (name may be NULL); logs and counts the request. */
enum MHD_Result dmx_respond_json(struct MHD_Connection *c, dmx_req *r, int status, cJSON *body,
                                 const char *hname, const char *hvalue);
/* Error body {"error": {code, message, request_id}} with the HTTP status
 * that the error table (http.c) gives `code`; also counts errors_total. */
enum MHD_Result dmx_respond_error(struct MHD_Connection *c, dmx_req *r, const char *code,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Makes s valid UTF-8 in place: each byte of an invalid sequence (and,
 * with no_controls, each control character) becomes '?'. Client bytes go
 * through it before they reach a JSON body or a log line. */
void dmx_utf8_clean(char *s, int no_controls);
/* The i-th error code of the table and its status; NULL past the end. */
const char *dmx_error_code_at(size_t i, int *status);
/* The HTTP status of an error code (500 for unknown codes). */
int dmx_error_status(const char *code);
/* Sends a prepared response (takes ownership) with the common headers. */
enum MHD_Result dmx_respond(struct MHD_Connection *c, dmx_req *r, int status,
                            struct MHD_Response *resp, int64_t bytes);

/* One row of the route table (routes.c); openapi.c documents from it. */
typedef struct dmx_route_info {
    const char *method, *tmpl;
    dmx_handler h;
    int auth;              /* 1: needs the API key when one is configured */
    const char *summary;   /* one line, for /openapi.json and /docs */
    const char *responses; /* HTTP statuses it answers, "200 404" */
    const char *produces;  /* content type of the 2xx body */
} dmx_route_info;

/* routes.c: finds the route for METHOD PATH; sets r->endpoint and the
 * path parameters. Returns NULL with *method_mismatch set when the path
 * exists for another method. */
const dmx_route_info *dmx_route(const char *method, const char *path, dmx_req *r,
                                int *method_mismatch);
/* The whole table. */
const dmx_route_info *dmx_routes(size_t *n);


/* openapi.c: the OpenAPI 3 document of the table (malloc'ed JSON) and the
 * HTML page rendered from it. */
char *dmx_openapi_json(void);
char *dmx_openapi_html(void);

/* Appends upload data to r->body (bounded); 1 once the body is complete. */
int dmx_collect_body(dmx_req *r, const char *upload, size_t *upload_size);

#endif
