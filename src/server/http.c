/*
 * http.c - the HTTP front end of `demix serve`: the libmicrohttpd daemon
 * (one thread per connection, so `wait=true` can block without stalling
 * other clients), request ids, JSON responses and errors, and the
 * per-request log line and metrics. Routing and the handlers are in
 * routes.c.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "http.h"

static int valid_request_id(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return 0;
    for (; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') || ('0' <= *s && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

enum MHD_Result dmx_respond(struct MHD_Connection *c, dmx_req *r, int status,
                            struct MHD_Response *resp, int64_t bytes) {
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "X-Request-ID", r->request_id);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    double dt = dmx_srv_now() - r->t0;
    dmx_metrics_http(r->method, r->endpoint, status, dt);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char client[64] = "";
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ci->client_addr;
        inet_ntop(AF_INET, &in->sin_addr, client, sizeof client);
    } else if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)ci->client_addr;
        inet_ntop(AF_INET6, &in->sin6_addr, client, sizeof client);
    }
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "method", r->method);
    cJSON_AddStringToObject(f, "endpoint", r->endpoint);
    cJSON_AddNumberToObject(f, "status", status);
    cJSON_AddNumberToObject(f, "duration_seconds", dt);
    cJSON_AddNumberToObject(f, "bytes", (double)bytes);
    cJSON_AddStringToObject(f, "client", client);
    dmx_srv_log(status >= 500 ? DMX_LOG_ERROR : status >= 400 ? DMX_LOG_WARN : DMX_LOG_INFO,
                "demix.http", "request", r->request_id, f, "%s %s %d", r->method, r->endpoint,
                status);
    return ret;
}

enum MHD_Result dmx_respond_json(struct MHD_Connection *c, dmx_req *r, int status, cJSON *body,
                                 const char *hname, const char *hvalue) {
    char *s = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (!s) return MHD_NO;
    size_t n = strlen(s);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (hname) MHD_add_response_header(resp, hname, hvalue);
    return dmx_respond(c, r, status, resp, (int64_t)n);
}

enum MHD_Result dmx_respond_error(struct MHD_Connection *c, dmx_req *r, int status,
                                  const char *code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject(), *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "request_id", r->request_id);
    cJSON_AddItemToObject(o, "error", e);
    dmx_metrics_error(code, r->endpoint);
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "type", code);
    cJSON_AddStringToObject(f, "endpoint", r->endpoint);
    cJSON_AddStringToObject(f, "detail", msg);
    dmx_srv_log(status >= 500 ? DMX_LOG_ERROR : DMX_LOG_WARN, "demix.http", "error",
                r->request_id, f, "%s", msg);
    const char *hn = NULL, *hv = NULL;
    if (status == 503) hn = "Retry-After", hv = "5";
    if (status == 405) hn = "Allow", hv = "GET, POST, DELETE";
    return dmx_respond_json(c, r, status, o, hn, hv);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)cls;
    (void)version;
    dmx_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->t0 = dmx_srv_now();
        snprintf(r->method, sizeof r->method, "%s", method);
        const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-ID");
        if (rid && valid_request_id(rid))
            snprintf(r->request_id, sizeof r->request_id, "%s", rid);
        else
            dmx_random_hex(r->request_id, 16);
        r->endpoint = "unmatched";
    }
    if (r->responded) {
        /* Already answered (e.g. 413 up front): swallow the rest of the body. */
        *upload_size = 0;
        return MHD_YES;
    }
    int mismatch = 0;
    dmx_handler h = dmx_route(method, url, r, &mismatch);
    if (!h) {
        if (mismatch)
            return dmx_respond_error(c, r, 405, "method_not_allowed", "%s is not allowed on %s",
                                     method, r->endpoint);
        return dmx_respond_error(c, r, 404, "not_found", "no route for %s %s", method, url);
    }
    return h(c, r, upload, upload_size);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    dmx_req *r = *con_cls;
    if (!r) return;
    if (r->pp) MHD_destroy_post_processor(r->pp);
    if (r->upload) fclose(r->upload);
    /* An upload that did not become a job is removed: nothing partial stays. */
    if (r->upload_path) {
        unlink(r->upload_path);
        free(r->upload_path);
    }
    free(r->upload_name);
    free(r);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = '\0';
    dmx_srv_log(DMX_LOG_WARN, "demix.mhd", "http_internal", NULL, NULL, "%s", msg);
}

struct MHD_Daemon *dmx_http_start(const char *host, int port, int *bound_port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return NULL;
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG |
            MHD_USE_POLL,
        (uint16_t)port, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        /* Idle connections (slow or stuck clients) are dropped after 60 s. */
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
        MHD_OPTION_END);
    if (!d) return NULL;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = di ? di->port : port;
    return d;
}
