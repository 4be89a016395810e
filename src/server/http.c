/*
 * http.c - the HTTP front end of `demix serve`: the libmicrohttpd daemon
 * (one thread per connection, so `wait=true` can block without stalling
 * other clients), request ids, JSON responses and errors, and the
 * per-request log line and metrics, the client address, the API key
 * check, and the one table that maps error codes to HTTP statuses.
 * Routing and the handlers are in routes.c.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <math.h>
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

/* Every error code the API returns and its HTTP status: the one place
 * where failures become statuses. */
static const struct {
    const char *code;
    int status;
} ERRORS[] = {
    {"invalid_argument", 400},     {"missing_file", 400},        {"unknown_model", 400},
    {"unknown_source", 400},       {"invalid_json", 400},        {"invalid_payload", 400},
    {"unauthorized", 401},         {"job_not_found", 404},       {"not_found", 404},
    {"stem_not_found", 404},       {"job_not_done", 409},        {"method_not_allowed", 405},
    {"payload_too_large", 413},    {"unsupported_media_type", 415},
    {"undecodable_audio", 422},    {"audio_too_long", 422},      {"rate_limited", 429},
    {"internal", 500},             {"storage_error", 500},       {"model_unavailable", 503},
    {"not_ready", 503},            {"queue_full", 503},          {"shutting_down", 503},
};

void dmx_utf8_clean(char *s, int no_controls) {
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        uint32_t cp = n == 1 ? c & 0x1F : n == 2 ? c & 0x0F : c & 0x07;
        int ok = n >= 0;
        for (int i = 1; ok && i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) ok = 0;
            else cp = (cp << 6) | (p[i] & 0x3F);
        }
        /* overlong forms, surrogates and values past U+10FFFF are invalid too */
        if (ok && n > 0 && (cp < (n == 1 ? 0x80u : n == 2 ? 0x800u : 0x10000u) || cp > 0x10FFFF ||
                            (cp >= 0xD800 && cp <= 0xDFFF)))
            ok = 0;
        if (!ok) {
            *p++ = '?';
            continue;
        }
        if (n == 0 && no_controls && (c < 0x20 || c == 0x7F)) *p = '?';
        p += n + 1;
    }
}

const char *dmx_error_code_at(size_t i, int *status) {
    if (i >= sizeof ERRORS / sizeof *ERRORS) return NULL;
    *status = ERRORS[i].status;
    return ERRORS[i].code;
}

int dmx_error_status(const char *code) {
    for (size_t i = 0; i < sizeof ERRORS / sizeof *ERRORS; i++)
        if (!strcmp(ERRORS[i].code, code)) return ERRORS[i].status;
    return 500;
}

void dmx_req_header(dmx_req *r, const char *name, const char *fmt, ...) {
    if (r->n_extra == MAX_EXTRA_HEADERS) return;
    snprintf(r->extra_name[r->n_extra], sizeof r->extra_name[0], "%s", name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->extra_value[r->n_extra], sizeof r->extra_value[0], fmt, ap);
    va_end(ap);
    r->n_extra++;
}

enum MHD_Result dmx_respond(struct MHD_Connection *c, dmx_req *r, int status,
                            struct MHD_Response *resp, int64_t bytes) {
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "X-Request-ID", r->request_id);
    for (int i = 0; i < r->n_extra; i++)
        MHD_add_response_header(resp, r->extra_name[i], r->extra_value[i]);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    double dt = dmx_srv_now() - r->t0;
    dmx_metrics_http(r->method, r->endpoint, status, dt);
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "method", r->method);
    cJSON_AddStringToObject(f, "endpoint", r->endpoint);
    cJSON_AddNumberToObject(f, "status", status);
    cJSON_AddNumberToObject(f, "duration_seconds", dt);
    cJSON_AddNumberToObject(f, "bytes", (double)bytes);
    cJSON_AddStringToObject(f, "client", r->client);
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

enum MHD_Result dmx_respond_error(struct MHD_Connection *c, dmx_req *r, const char *code,
                                  const char *fmt, ...) {
    int status = dmx_error_status(code);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Messages quote client input (paths, field values): keep the JSON valid. */
    dmx_utf8_clean(msg, 0);
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
    char ra[16];
    snprintf(ra, sizeof ra, "%d", r->retry_after > 0 ? r->retry_after : 5);
    if (status == 503 || status == 429) hn = "Retry-After", hv = ra;
    if (status == 405) hn = "Allow", hv = "GET, POST, DELETE";
    if (status == 401) hn = "WWW-Authenticate", hv = "Bearer realm=\"demix\"";
    return dmx_respond_json(c, r, status, o, hn, hv);
}

/* Is addr one of the comma-separated --trusted-proxies? */
static int trusted(const char *addr) {
    const char *l = dmx_srv_cfg.trusted_proxies;
    size_t n = strlen(addr);
    while (l && *l) {
        const char *e = strchrnul(l, ',');
        while (*l == ' ') l++;
        size_t k = (size_t)(e - l);
        while (k && l[k - 1] == ' ') k--;
        if (k == n && !strncmp(l, addr, n)) return 1;
        l = *e ? e + 1 : e;
    }
    return 0;
}

/* The client: the peer, unless the peer is a trusted proxy; then the
 * right-most X-Forwarded-For entry that is not itself a trusted proxy
 * (entries further left are whatever the client chose to send). */
static void client_address(struct MHD_Connection *c, char *out, size_t n) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = '\0';
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ci->client_addr;
        inet_ntop(AF_INET, &in->sin_addr, out, (socklen_t)n);
    } else if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)ci->client_addr;
        inet_ntop(AF_INET6, &in->sin6_addr, out, (socklen_t)n);
    }
    if (!trusted(out)) return;
    const char *xff = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Forwarded-For");
    if (!xff) return;
    char list[1024];
    snprintf(list, sizeof list, "%s", xff);
    for (;;) {
        char *comma = strrchr(list, ',');
        char *item = comma ? comma + 1 : list;
        while (*item == ' ') item++;
        size_t k = strlen(item);
        while (k && item[k - 1] == ' ') item[--k] = '\0';
        unsigned char tmp[16];
        int valid = inet_pton(AF_INET, item, tmp) == 1 || inet_pton(AF_INET6, item, tmp) == 1;
        if (!valid) return; /* garbage: keep the proxy's own address */
        snprintf(out, n, "%s", item);
        if (!trusted(item) || !comma) return;
        *comma = '\0';
    }
}

/* Constant-time comparison: the key must not leak through timing. */
static int key_matches(const char *given, const char *key) {
    size_t a = strlen(given), b = strlen(key);
    unsigned char d = (unsigned char)(a != b);
    for (size_t i = 0; i < b; i++) d |= (unsigned char)(key[i] ^ (i < a ? given[i] : 0));
    return d == 0;
}

static int authorized(struct MHD_Connection *c) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    while (*h == ' ') h++;
    return key_matches(h, dmx_srv_cfg.api_key);
}

int dmx_collect_body(dmx_req *r, const char *upload, size_t *upload_size) {
    if (!*upload_size) return 1;
    if (!r->body_too_large) {
        if (r->body_len + *upload_size > MAX_JSON_BODY) {
            r->body_too_large = 1;
        } else {
            char *nb = realloc(r->body, r->body_len + *upload_size + 1);
            if (!nb) {
                r->body_too_large = 1;
            } else {
                r->body = nb;
                memcpy(r->body + r->body_len, upload, *upload_size);
                r->body_len += *upload_size;
                r->body[r->body_len] = '\0';
            }
        }
    }
    *upload_size = 0;
    return 0;
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
        /* Metric labels and log fields take the method from a fixed set: a
         * client inventing methods must not fill the metric series table. */
        static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
        const char *label = "other";
        for (size_t i = 0; i < sizeof known / sizeof *known; i++)
            if (!strcmp(method, known[i])) label = known[i];
        snprintf(r->method, sizeof r->method, "%s", label);
        const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-ID");
        if (rid && valid_request_id(rid))
            snprintf(r->request_id, sizeof r->request_id, "%s", rid);
        else
            dmx_random_hex(r->request_id, 16);
        r->endpoint = "unmatched";
        client_address(c, r->client, sizeof r->client);
        /* A response queued on this first call (before libmicrohttpd has
         * read the, here empty, body) makes it close the connection: answer
         * GET/HEAD/DELETE on the next call so keep-alive clients keep
         * theirs. POST still answers early (429, 413) before the upload. */
        if (!strcmp(method, "GET") || !strcmp(method, "HEAD") || !strcmp(method, "DELETE"))
            return MHD_YES;
    }
    if (r->responded) {
        /* Already answered (e.g. 413 up front): swallow the rest of the body. */
        *upload_size = 0;
        return MHD_YES;
    }
    int mismatch = 0;
    /* HEAD is GET without the body (libmicrohttpd leaves the body out) */
    const dmx_route_info *rt = dmx_route(strcmp(method, "HEAD") ? method : "GET", url, r, &mismatch);
    if (!rt) {
        if (mismatch)
            return dmx_respond_error(c, r, "method_not_allowed", "%s is not allowed on %s",
                                     method, r->endpoint);
        return dmx_respond_error(c, r, "not_found", "no route for %s %s", method, url);
    }
    if (rt->auth && dmx_srv_cfg.api_key && *dmx_srv_cfg.api_key && !authorized(c))
        return dmx_respond_error(c, r, "unauthorized",
                                 "this route needs 'Authorization: Bearer <API key>'");
    return rt->h(c, r, upload, upload_size);
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
    free(r->body);
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

static int hexval(char c) {
    return '0' <= c && c <= '9' ? c - '0' : 'a' <= (c | 32) && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : -1;
}

/* MHD's %HH decoding, except that %00 stays as it is: a decoded NUL would
 * silently cut "/jobs/ID%00anything" down to "/jobs/ID". */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    char *w = s;
    for (const char *p = s; *p;) {
        int hi, lo;
        if (p[0] == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0 && (hi | lo)) {
            *w++ = (char)(hi * 16 + lo);
            p += 3;
        } else {
            *w++ = *p++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

struct MHD_Daemon *dmx_http_start(const char *host, int port, int *bound_port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return NULL;
    struct MHD_Daemon *d = MHD_start_daemon(
        /* ITC: lets shutdown quiesce the listening socket (stop accepting)
         * while requests in flight finish. */
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG |
            MHD_USE_POLL | MHD_USE_ITC,
        (uint16_t)port, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        /* Idle connections (slow or stuck clients, stalled uploads) are
         * dropped after --idle-timeout seconds without a byte. */
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ceil(dmx_srv_cfg.idle_timeout_seconds),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_END);
    if (!d) return NULL;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = di ? di->port : port;
    return d;
}
