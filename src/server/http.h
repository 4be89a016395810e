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

typedef struct dmx_req {
    double t0;
    char request_id[65];
    char method[16];
    const char *endpoint; /* route template, for logs and metrics */
    char id[40], stem[80]; /* path parameters */
    int responded;
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
    char model_name[MAX_FIELD], two_stems[MAX_FIELD], format[MAX_FIELD], shifts[MAX_FIELD],
        overlap[MAX_FIELD], wait[MAX_FIELD];
} dmx_req;

typedef enum MHD_Result (*dmx_handler)(struct MHD_Connection *c, dmx_req *r, const char *upload,
                                       size_t *upload_size);

/* Sends `body` (consumed) with `status`, the request id header and any
 * extra header pair (name may be NULL); logs and counts the request. */
enum MHD_Result dmx_respond_json(struct MHD_Connection *c, dmx_req *r, int status, cJSON *body,
                                 const char *hname, const char *hvalue);
/* Error body {"error": {code, message, request_id}}; also counts errors_total. */
enum MHD_Result dmx_respond_error(struct MHD_Connection *c, dmx_req *r, int status,
                                  const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Sends a prepared response (takes ownership) with the common headers. */
enum MHD_Result dmx_respond(struct MHD_Connection *c, dmx_req *r, int status,
                            struct MHD_Response *resp, int64_t bytes);

/* routes.c: finds the handler for METHOD PATH; sets r->endpoint and the
 * path parameters. Returns NULL with *method_mismatch set when the path
 * exists for another method. */
dmx_handler dmx_route(const char *method, const char *path, dmx_req *r, int *method_mismatch);

#endif
