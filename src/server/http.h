/*
 * http.h - the request object shared by the HTTP front end (http.c) and the
 * route handlers (routes.c).
 */
#ifndef DEMIX_SERVER_HTTP_H
#define DEMIX_SERVER_HTTP_H

#include <microhttpd.h>
#include <stdio.h>

#include "server.h"

#define MAX_EXTRA_HEADERS 4
#define MAX_JSON_BODY     (1 << 20)   /* POST /alerts: Alertmanager batches stay far below */
#define MAX_IGNORED_BODY  (64 * 1024) /* GET/HEAD/DELETE: a body is read, dropped, refused */
#define MAX_DRAINED_BODY  (1 << 20)   /* an unauthorized upload is read and dropped up to this */

/* GET /jobs paging. */
#define SRV_JOBS_DEFAULT_LIMIT 50
#define SRV_JOBS_MAX_LIMIT     1000

/* The endpoint label of POST /separate with wait=true: its latency is a
 * whole separation, so dashboards and latency alerts leave it out. */
#define SRV_ENDPOINT_SEPARATE_WAIT "/separate?wait=true"

typedef struct srv_req {
    double t0;
    char request_id[65];
    char method[16];
    const char *endpoint;  /* route template, for logs and metrics */
    char id[40], stem[80]; /* path parameters */
    int responded;
    char client[64]; /* peer address, or X-Forwarded-For's from a trusted proxy */
    int retry_after; /* seconds for Retry-After on 429/503; 0 = the default */
    int n_extra;
    char extra_name[MAX_EXTRA_HEADERS][32], extra_value[MAX_EXTRA_HEADERS][160];
    char *body; /* JSON request bodies */
    size_t body_len;
    int body_too_large;
    int64_t ignored_body; /* bytes of a body sent with GET/HEAD/DELETE (refused) */
    int64_t drained;      /* bytes of an unauthorized upload read and dropped */
    int draining;         /* 1: answer 401 once the body has been read */
    const char *refuse;   /* error code to answer once the (bounded) body is read */
    char refuse_msg[128];
    int started_upload; /* the handler has seen this request before */
    /* State a handler keeps across the calls of one request (POST
     * /separate: its form and upload, separate.c), freed with
     * route_state_free when the request ends, whatever happened. */
    void *route_state;
    void (*route_state_free)(void *state);
} srv_req;

typedef enum MHD_Result (*srv_handler)(struct MHD_Connection *c, srv_req *r, const char *upload,
                                       size_t *upload_size);

/* A header for the response to come (e.g. rate-limit state). */
void srv_req_header(srv_req *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sends `body` (consumed) with `status`, the request id header and any
 * extra header pair (name may be NULL); logs and counts the request. */
enum MHD_Result srv_respond_json(struct MHD_Connection *c, srv_req *r, int status, cJSON *body,
                                 const char *hname, const char *hvalue);
/* Error body {"error": {code, message, request_id}} with the HTTP status
 * that the error table (errors.h) gives `code`; also counts errors_total. */
enum MHD_Result srv_respond_error(struct MHD_Connection *c, srv_req *r, const char *code,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Makes s valid UTF-8 in place: each byte of an invalid sequence (and,
 * with no_controls, each control character) becomes '?'. Client bytes go
 * through it before they reach a JSON body or a log line. */
void srv_utf8_clean(char *s, int no_controls);
/* The i-th error code of the table and its status; NULL past the end. */
const char *srv_error_code_at(size_t i, int *status);
/* Starts the HTTP daemon on host:port (0: any free port, written to
 * *bound_port); probes_only: a listener that answers the probes alone
 * (--probe-port). NULL when it cannot listen. */
struct MHD_Daemon *srv_http_start(const char *host, int port, int probes_only, int *bound_port);
/* Sends a prepared response (takes ownership) with the common headers. */
enum MHD_Result srv_respond(struct MHD_Connection *c, srv_req *r, int status,
                            struct MHD_Response *resp, int64_t bytes);

/* One row of the route table (routes.c); openapi.c documents from it. */
typedef struct srv_route_info {
    const char *method, *tmpl;
    srv_handler h;
    int auth;              /* 1: needs the API key when one is configured */
    const char *summary;   /* one line, for /openapi.json and /docs */
    const char *responses; /* HTTP statuses it answers, "200 404" */
    const char *produces;  /* content type of the 2xx body */
} srv_route_info;

/* routes.c: finds the route for METHOD PATH; sets r->endpoint and the
 * path parameters. Returns NULL with *method_mismatch set when the path
 * exists for another method. */
const srv_route_info *srv_route(const char *method, const char *path, srv_req *r,
                                int *method_mismatch);
/* The methods PATH has in the table ("GET, HEAD, DELETE"), for the Allow
 * header of a 405; returns the length written to out (0: no such path). */
size_t srv_route_allow(const char *path, char *out, size_t n);
/* The whole table. */
const srv_route_info *srv_routes(size_t *n);

/* openapi.c: the OpenAPI 3 document of the table (malloc'ed JSON) and the
 * HTML page rendered from it. */
char *srv_openapi_json(void);
char *srv_openapi_html(void);

/* separate.c: POST /separate. */
enum MHD_Result srv_h_separate(struct MHD_Connection *c, srv_req *r, const char *upload,
                               size_t *upload_size);
/* routes.c: the stems of a finished job as one zip (takes the reference). */
enum MHD_Result srv_send_zip(struct MHD_Connection *c, srv_req *r, srv_job *j);

/* Appends upload data to r->body (bounded); 1 once the body is complete. */
int srv_collect_body(srv_req *r, const char *upload, size_t *upload_size);

#endif
