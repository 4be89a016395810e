/*
 * http.c - the HTTP front end of `demix serve`: the libmicrohttpd daemon
 * (one thread per connection, so `wait=true` can block without stalling
 * other clients), request ids, JSON responses and errors, and the
 * per-request log line and metrics, the client address, the API key
 * check. Error codes and their HTTP statuses are errors.h's table.
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

void srv_utf8_clean(char *s, int no_controls) {
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n = c < 0x80             ? 0
                : (c & 0xE0) == 0xC0 ? 1
                : (c & 0xF0) == 0xE0 ? 2
                : (c & 0xF8) == 0xF0 ? 3
                                     : -1;
        uint32_t cp = n == 1 ? c & 0x1F : n == 2 ? c & 0x0F : c & 0x07;
        int ok = n >= 0;
        for (int i = 1; ok && i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                ok = 0;
            else
                cp = (cp << 6) | (p[i] & 0x3F);
        }
        /* overlong forms, surrogates and values past U+10FFFF are invalid too */
        if (ok && n > 0 &&
            (cp < (n == 1   ? 0x80u
                   : n == 2 ? 0x800u
                            : 0x10000u) ||
             cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)))
            ok = 0;
        if (!ok) {
            *p++ = '?';
            continue;
        }
        if (n == 0 && no_controls && (c < 0x20 || c == 0x7F)) *p = '?';
        p += n + 1;
    }
}

void srv_req_header(srv_req *r, const char *name, const char *fmt, ...) {
    if (r->n_extra == MAX_EXTRA_HEADERS) return;
    snprintf(r->extra_name[r->n_extra], sizeof r->extra_name[0], "%s", name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->extra_value[r->n_extra], sizeof r->extra_value[0], fmt, ap);
    va_end(ap);
    r->n_extra++;
}

enum MHD_Result srv_respond(struct MHD_Connection *c, srv_req *r, int status,
                            struct MHD_Response *resp, int64_t bytes) {
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "X-Request-ID", r->request_id);
    for (int i = 0; i < r->n_extra; i++)
        MHD_add_response_header(resp, r->extra_name[i], r->extra_value[i]);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    double dt = srv_now() - r->t0;
    if (ret != MHD_YES) {
        /* Nothing reaches the client (libmicrohttpd closes the connection):
         * say so, and count no response that was never sent. */
        srv_log(DMX_LOG_WARN, "demix.http", "response_not_queued", r->request_id, NULL,
                "%s %s: the %d response could not be queued; connection closed", r->method,
                r->endpoint, status);
        return ret;
    }
    srv_metrics_http(r->method, r->endpoint, status, dt);
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "method", r->method);
    cJSON_AddStringToObject(f, "endpoint", r->endpoint);
    cJSON_AddNumberToObject(f, "status", status);
    cJSON_AddNumberToObject(f, "duration_seconds", dt);
    cJSON_AddNumberToObject(f, "bytes", (double)bytes);
    cJSON_AddStringToObject(f, "client", r->client);
    srv_log(status >= 500   ? DMX_LOG_ERROR
            : status >= 400 ? DMX_LOG_WARN
                            : DMX_LOG_INFO,
            "demix.http", "request", r->request_id, f, "%s %s %d", r->method, r->endpoint, status);
    return ret;
}

enum MHD_Result srv_respond_json(struct MHD_Connection *c, srv_req *r, int status, cJSON *body,
                                 const char *hname, const char *hvalue) {
    char *s = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (!s) return MHD_NO;
    size_t n = strlen(s);
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (hname) MHD_add_response_header(resp, hname, hvalue);
    return srv_respond(c, r, status, resp, (int64_t)n);
}

enum MHD_Result srv_respond_error(struct MHD_Connection *c, srv_req *r, const char *code,
                                  const char *fmt, ...) {
    int status = srv_error_status(code);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Messages quote client input (paths, field values): keep the JSON valid. */
    srv_utf8_clean(msg, 0);
    cJSON *o = cJSON_CreateObject(), *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "request_id", r->request_id);
    cJSON_AddItemToObject(o, "error", e);
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "type", code);
    cJSON_AddStringToObject(f, "endpoint", r->endpoint);
    cJSON_AddStringToObject(f, "detail", msg);
    srv_log(status >= 500 ? DMX_LOG_ERROR : DMX_LOG_WARN, "demix.http", "error", r->request_id, f,
            "%s", msg);
    const char *hn = NULL, *hv = NULL;
    char ra[16];
    snprintf(ra, sizeof ra, "%d", r->retry_after > 0 ? r->retry_after : 5);
    if (status == 503 || status == 429) hn = "Retry-After", hv = ra;
    if (status == 401) hn = "WWW-Authenticate", hv = "Bearer realm=\"demix\"";
    /* (405: on_request adds the route's own Allow header) */
    enum MHD_Result ret = srv_respond_json(c, r, status, o, hn, hv);
    if (ret == MHD_YES) srv_metrics_error(code, r->endpoint); /* only errors sent */
    return ret;
}

/* The canonical text of the address in s[0..len) (IPv4 or IPv6; an
 * IPv4-mapped IPv6 address becomes its IPv4 form), so that one client has
 * one spelling and so one rate-limit bucket. 0 if it is not an address. */
static int canon_ip(const char *s, size_t len, char *out, size_t n) {
    char buf[INET6_ADDRSTRLEN + 1];
    while (len && (*s == ' ' || *s == '\t')) s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    unsigned char a[16];
    if (inet_pton(AF_INET, buf, a) == 1) return inet_ntop(AF_INET, a, out, (socklen_t)n) != NULL;
    if (inet_pton(AF_INET6, buf, a) != 1) return 0;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!memcmp(a, mapped, 12)) return inet_ntop(AF_INET, a + 12, out, (socklen_t)n) != NULL;
    return inet_ntop(AF_INET6, a, out, (socklen_t)n) != NULL;
}

/* Is addr (canonical) one of the comma-separated --trusted-proxies? */
static int trusted(const char *addr) {
    const char *l = srv_cfg.trusted_proxies;
    while (l && *l) {
        const char *e = strchrnul(l, ',');
        char t[INET6_ADDRSTRLEN + 1];
        if (canon_ip(l, (size_t)(e - l), t, sizeof t) && !strcmp(t, addr)) return 1;
        l = *e ? e + 1 : e;
    }
    return 0;
}

/* The X-Forwarded-For lines of a request, in order; only the last ones
 * can matter (the walk goes right to left and stops at the first hop that
 * is not a trusted proxy), so a ring keeps the last XFF_LINES. */
#define XFF_LINES 32
typedef struct xff_lines {
    const char *v[XFF_LINES];
    size_t n; /* lines seen */
} xff_lines;

static enum MHD_Result collect_xff(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value) {
    (void)kind;
    xff_lines *x = cls;
    if (key && value && !strcasecmp(key, "X-Forwarded-For")) x->v[x->n++ % XFF_LINES] = value;
    return MHD_YES;
}

/* The client: the peer, unless the peer is a trusted proxy; then the
 * right-most X-Forwarded-For entry that is not itself a trusted proxy
 * (entries further left are whatever the client chose to send). Every
 * X-Forwarded-For line counts (a proxy may add its own line rather than
 * append to the client's), read whole: nothing is cut, and an entry that
 * is not an address stops the walk at the last trusted hop. */
static void client_address(struct MHD_Connection *c, char *out, size_t n) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char peer[INET6_ADDRSTRLEN + 1] = "";
    out[0] = '\0';
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ci->client_addr;
        inet_ntop(AF_INET, &in->sin_addr, peer, sizeof peer);
    } else if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)ci->client_addr;
        inet_ntop(AF_INET6, &in->sin6_addr, peer, sizeof peer);
    }
    if (!canon_ip(peer, strlen(peer), out, n)) snprintf(out, n, "%s", peer);
    if (!trusted(out)) return;
    xff_lines x = {{0}, 0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_xff, &x);
    for (size_t k = 0; k < x.n && k < XFF_LINES; k++) {
        const char *line = x.v[(x.n - 1 - k) % XFF_LINES];
        size_t end = strlen(line);
        for (;;) {
            size_t start = end;
            while (start > 0 && line[start - 1] != ',') start--;
            char item[INET6_ADDRSTRLEN + 1];
            int blank = strspn(line + start, " \t") >= end - start;
            /* "a,,b" or a trailing comma: an empty entry is skipped */
            if (!blank) {
                if (!canon_ip(line + start, end - start, item, sizeof item))
                    return; /* garbage: keep the last trusted hop */
                snprintf(out, n, "%s", item);
                if (!trusted(item)) return;
            }
            if (start == 0) break;
            end = start - 1;
        }
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
    return key_matches(h, srv_cfg.api_key);
}

int srv_collect_body(srv_req *r, const char *upload, size_t *upload_size) {
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

/* The --probe-port listener (its on_request cls) serves these only. */
static const int PROBE_ONLY = 1;
static int probe_route(const char *tmpl) {
    static const char *const probes[] = {"/livez", "/health", "/readyz", "/metrics"};
    for (size_t i = 0; i < sizeof probes / sizeof *probes; i++)
        if (!strcmp(tmpl, probes[i])) return 1;
    return 0;
}

/* Methods whose routes take no request body. */
static int takes_no_body(const char *method) {
    return !strcmp(method, "GET") || !strcmp(method, "HEAD") || !strcmp(method, "DELETE");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    srv_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->t0 = srv_now();
        /* Metric labels and log fields take the method from a fixed set: a
         * client inventing methods must not fill the metric series table. */
        static const char *const known[] = {"GET",    "HEAD",  "POST",   "PUT",
                                            "DELETE", "PATCH", "OPTIONS"};
        const char *label = "other";
        for (size_t i = 0; i < sizeof known / sizeof *known; i++)
            if (!strcmp(method, known[i])) label = known[i];
        snprintf(r->method, sizeof r->method, "%s", label);
        const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-ID");
        if (rid && valid_request_id(rid))
            snprintf(r->request_id, sizeof r->request_id, "%s", rid);
        else
            srv_random_hex(r->request_id, 16);
        r->endpoint = "unmatched";
        client_address(c, r->client, sizeof r->client);
        /* GET, HEAD and DELETE take no body. One that comes anyway is read
         * and dropped (up to MAX_IGNORED_BODY) and the request refused with
         * 400 once it is complete, before the route acts: answering while
         * libmicrohttpd still reads it fails (the client saw an empty
         * reply). Even without a body, answering on this first call would
         * close keep-alive connections: the answer comes on the next. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        long long len = cl ? strtoll(cl, NULL, 10) : 0;
        if (takes_no_body(method) && len > MAX_IGNORED_BODY)
            return srv_respond_error(c, r, "payload_too_large",
                                     "%s takes no request body (this one has %lld bytes)", method,
                                     len);
        if (takes_no_body(method)) return MHD_YES;
        /* POST goes on at once: it answers early (429, 413) */
    }
    if (r->responded) {
        /* Already answered (e.g. 413 up front): swallow the rest of the body. */
        *upload_size = 0;
        return MHD_YES;
    }
    if (takes_no_body(method) && *upload_size) {
        r->ignored_body += (int64_t)*upload_size;
        *upload_size = 0;
        if (r->ignored_body > MAX_IGNORED_BODY) {
            /* chunked, so no Content-Length to refuse up front: nothing can
             * be answered in the middle of a body, so close */
            srv_log(DMX_LOG_WARN, "demix.http", "error", r->request_id, NULL,
                    "%s with a body over %d bytes: connection closed", r->method, MAX_IGNORED_BODY);
            return MHD_NO;
        }
        return MHD_YES;
    }
    int mismatch = 0;
    /* HEAD is GET without the body (libmicrohttpd leaves the body out) */
    const srv_route_info *rt =
        srv_route(strcmp(method, "HEAD") ? method : "GET", url, r, &mismatch);
    if (cls && !probe_route(r->endpoint)) {
        r->endpoint = "unmatched";
        return srv_respond_error(c, r, "not_found",
                                 "the probe listener serves /livez, /health, /readyz and /metrics");
    }
    if (!rt) {
        if (mismatch) {
            char allow[sizeof r->extra_value[0]];
            srv_route_allow(url, allow, sizeof allow);
            srv_req_header(r, "Allow", "%s", allow);
            return srv_respond_error(c, r, "method_not_allowed", "%s is not allowed on %s", method,
                                     r->endpoint);
        }
        return srv_respond_error(c, r, "not_found", "no route for %s %s", method, url);
    }
    if (rt->auth && srv_cfg.api_key && !authorized(c)) {
        /* A small body is read and dropped before the 401: answering in the
         * middle of an upload closes the connection under a client that is
         * still sending, which then sees a broken pipe instead of the
         * answer. A large or endless one is answered (or cut) at once. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        long long len = cl ? strtoll(cl, NULL, 10) : -1;
        int drain = !strcmp(method, "POST") && len != 0 && len <= MAX_DRAINED_BODY;
        if (drain && *upload_size) {
            r->drained += (int64_t)*upload_size;
            *upload_size = 0;
            return r->drained > MAX_DRAINED_BODY ? MHD_NO : MHD_YES;
        }
        if (drain && !r->draining) {
            r->draining = 1; /* the body comes next; answer once it has */
            return MHD_YES;
        }
        return srv_respond_error(c, r, "unauthorized",
                                 "this route needs 'Authorization: Bearer <API key>'");
    }
    if (r->ignored_body)
        return srv_respond_error(c, r, "invalid_argument",
                                 "%s %s takes no request body; %lld bytes were sent", method,
                                 r->endpoint, (long long)r->ignored_body);
    return rt->h(c, r, upload, upload_size);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    srv_req *r = *con_cls;
    if (!r) return;
    if (r->route_state_free) r->route_state_free(r->route_state);
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
    srv_log(DMX_LOG_WARN, "demix.mhd", "http_internal", NULL, NULL, "%s", msg);
}

static int hexval(char c) {
    return '0' <= c && c <= '9'                 ? c - '0'
           : 'a' <= (c | 32) && (c | 32) <= 'f' ? (c | 32) - 'a' + 10
                                                : -1;
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

struct MHD_Daemon *srv_http_start(const char *host, int port, int probes_only, int *bound_port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return NULL;
    /* The probe listener is for the orchestrator alone (kubelet, a load
     * balancer's health check: one or two addresses), so its budget is
     * small and not per address; the main one's is --max-connections, of
     * which one address gets at most --max-connections-per-ip, so a flood
     * of idle sockets from one address leaves room for everyone else. */
    unsigned limit = probes_only ? 16u : (unsigned)srv_cfg.max_connections;
    unsigned per_ip = probes_only ? 0u : (unsigned)srv_cfg.max_connections_per_ip;
    unsigned timeout = (unsigned)ceil(srv_cfg.idle_timeout_seconds);
    if (probes_only && timeout > 10) timeout = 10;
    struct MHD_Daemon *d = MHD_start_daemon(
        /* ITC: lets shutdown quiesce the listening socket (stop accepting)
         * while requests in flight finish. */
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG |
            MHD_USE_POLL | MHD_USE_ITC,
        (uint16_t)port, NULL, NULL, on_request, probes_only ? (void *)&PROBE_ONLY : NULL,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        /* Idle connections (slow or stuck clients, stalled uploads) are
         * dropped after --idle-timeout seconds without a byte. */
        MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_CONNECTION_LIMIT, limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip, MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_END);
    if (!d) return NULL;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = di ? di->port : port;
    return d;
}
