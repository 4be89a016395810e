/*
 * routes.c - the route table of `demix serve` and its handlers. The
 * table is the one place that lists the API; its templates ("/jobs/{id}")
 * are also the `endpoint` label of logs and metrics, so raw paths (which
 * hold job ids) never multiply metric series.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "demix/audio.h"
#include "http.h"

/* ---- small helpers ---------------------------------------------------------------- */

static const char *query(struct MHD_Connection *c, const char *k) {
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k);
}

static enum MHD_Result send_fd(struct MHD_Connection *c, srv_req *r, int fd, const char *ctype,
                               const char *filename);

/* ---- probes, models, metrics ----------------------------------------------------- */

static enum MHD_Result h_livez(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    return srv_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_health(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    int avail = srv_models_any_available();
    int depth = srv_jobs_queue_depth();
    int disk_low = srv_data_disk_low(NULL);
    int degraded = !avail || depth >= srv_cfg.queue_max || srv_breakers_any_open() || disk_low;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", degraded ? "degraded" : "ok");
    cJSON_AddStringToObject(o, "version", DEMIX_SERVER_VERSION);
    cJSON_AddNumberToObject(o, "uptime_seconds", srv_now() - srv_start_time);
    cJSON_AddNumberToObject(o, "models_loaded", srv_models_loaded());
    cJSON_AddNumberToObject(o, "queue_depth", depth);
    cJSON_AddNumberToObject(o, "queue_capacity", srv_cfg.queue_max);
    cJSON_AddNumberToObject(o, "active_jobs", srv_jobs_active());
    cJSON_AddNumberToObject(o, "workers", srv_cfg.workers);
    cJSON_AddItemToObject(o, "circuit_breakers", srv_breakers_json());
    cJSON_AddBoolToObject(o, "disk_low", disk_low);
    struct statvfs v;
    if (statvfs(srv_cfg.data_dir, &v) == 0)
        cJSON_AddNumberToObject(o, "disk_free_bytes", (double)v.f_bavail * (double)v.f_frsize);
    return srv_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_readyz(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    const char *why = NULL;
    if (!srv_models_any_available())
        why = "no model available";
    else if (strcmp(srv_cfg.role, "worker") && srv_jobs_queue_depth() >= srv_cfg.queue_max)
        why = "job queue full"; /* (a worker takes no submissions) */
    else if (srv_breakers_any_open())
        why = "a circuit breaker is open";
    else if (!srv_store_ready())
        why = "the job store is unreachable";
    else if (srv_data_disk_low(NULL))
        why = "free disk space in the data folder is below --min-free-disk";
    if (why) return srv_respond_error(c, r, "not_ready", "%s", why);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ready");
    return srv_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_models(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "models", srv_models_json());
    return srv_respond_json(c, r, 200, o, NULL, NULL);
}

/* Breaker states gathered for one scrape. */
typedef struct breaker_list {
    int n, cap;
    char **names;
    int *states;
} breaker_list;

static void collect_breaker(void *user, const char *name, srv_breaker_state st) {
    breaker_list *l = user;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        char **nn = realloc(l->names, sizeof *nn * (size_t)cap);
        if (nn) l->names = nn;
        int *ns = realloc(l->states, sizeof *ns * (size_t)cap);
        if (ns) l->states = ns;
        if (!nn || !ns) return;
        l->cap = cap;
    }
    if (!(l->names[l->n] = strdup(name))) return;
    l->states[l->n++] = (int)st;
}

/* Separations of every available model (each terminal status) and every
 * error a route can answer (the error table's codes whose status the route
 * lists) exist at 0 from the start: increase() then sees the first event. */
void srv_routes_declare_metrics(void) {
    static const srv_job_state terminal[] = {JOB_DONE, JOB_FAILED, JOB_CANCELLED};
    cJSON *models = srv_models_json(), *m;
    cJSON_ArrayForEach(m, models) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (!cJSON_IsString(name)) continue;
        for (size_t k = 0; k < sizeof terminal / sizeof *terminal; k++)
            srv_metrics_declare_separation(name->valuestring, srv_job_state_name(terminal[k]));
    }
    cJSON_Delete(models);
    size_t n;
    const srv_route_info *rt = srv_routes(&n);
    const char *code;
    int status;
    for (size_t i = 0; i < n; i++)
        for (size_t e = 0; (code = srv_error_code_at(e, &status)); e++) {
            char st[8];
            snprintf(st, sizeof st, "%d", status);
            /* the statuses are space-separated three-digit words */
            for (const char *p = rt[i].responses; (p = strstr(p, st)); p += 3)
                if ((p == rt[i].responses || p[-1] == ' ') && (p[3] == ' ' || !p[3])) {
                    srv_metrics_declare_error(code, rt[i].tmpl);
                    break;
                }
        }
}

static enum MHD_Result h_metrics(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    /* Models that appeared since the start get their zero series too. */
    srv_routes_declare_metrics();
    breaker_list bl = {0};
    srv_breakers_each(collect_breaker, &bl);
    srv_metrics_gauges g = {
        .models_loaded = srv_models_loaded(),
        .active_sessions = srv_jobs_active(),
        .queue_depth = srv_jobs_queue_depth(),
        .rate_limit_buckets = srv_ratelimit_buckets(),
        .jobs_unsaved = srv_jobs_unsaved(),
        .process_start_time = srv_wall() - (srv_now() - srv_start_time),
        .n_breakers = bl.n,
        .breaker_names = (const char *const *)bl.names,
        .breaker_states = bl.states,
        .role = srv_cfg.role,
    };
    srv_jobs_cluster_gauges(&g);
    srv_sysmetrics_get(&g.sys);
    char *s = srv_metrics_render(&g);
    srv_strv_free(bl.names, bl.n);
    free(bl.states);
    if (!s) return srv_respond_error(c, r, "internal", "out of memory");
    size_t len = strlen(s);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return srv_respond(c, r, 200, resp, (int64_t)len);
}

/* ---- jobs --------------------------------------------------------------------------- */

/* The answer when srv_job_get found nothing: 404, or 503 when (clustered)
 * the database could not say. */
static enum MHD_Result no_job(struct MHD_Connection *c, srv_req *r) {
    if (!srv_jobs_store_ok())
        return srv_respond_error(c, r, srv_error_code(SRV_E_STORE_UNAVAILABLE),
                                 "the job store is unreachable; retry later");
    return srv_respond_error(c, r, srv_error_code(SRV_E_JOB_NOT_FOUND), "no job %s", r->id);
}

static enum MHD_Result h_jobs(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    const char *l = query(c, "limit"), *o = query(c, "offset");
    int limit = l ? atoi(l) : SRV_JOBS_DEFAULT_LIMIT, offset = o ? atoi(o) : 0;
    if (limit < 1 || limit > SRV_JOBS_MAX_LIMIT || offset < 0)
        return srv_respond_error(c, r, srv_error_code(SRV_E_INVALID_ARGUMENT),
                                 "limit must be 1..%d and offset >= 0", SRV_JOBS_MAX_LIMIT);
    cJSON *list = srv_jobs_list_json(limit, offset);
    if (!list)
        return srv_respond_error(c, r, srv_error_code(SRV_E_STORE_UNAVAILABLE),
                                 "the job store is unreachable; retry later");
    return srv_respond_json(c, r, 200, list, NULL, NULL);
}

static enum MHD_Result h_job(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    srv_job *j = srv_job_get(r->id);
    if (!j) return no_job(c, r);
    cJSON *o = srv_job_json(j);
    srv_job_put(j);
    return srv_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_job_delete(struct MHD_Connection *c, srv_req *r, const char *u,
                                    size_t *n) {
    srv_job *j = srv_job_get(r->id);
    if (!j) return no_job(c, r);
    if (srv_job_delete(j) < 0) {
        srv_job_put(j);
        return srv_respond_error(c, r, srv_error_code(SRV_E_STORE_UNAVAILABLE),
                                 "the job store is unreachable; nothing was deleted; retry later");
    }
    cJSON *o = srv_job_json(j);
    srv_job_put(j);
    cJSON_AddBoolToObject(o, "deleted", 1);
    return srv_respond_json(c, r, 200, o, NULL, NULL);
}

/* ---- downloads ------------------------------------------------------------------------ */

/* The track name of a job's files: the upload's name without its extension,
 * with what file systems refuse (/ \ : * ? " < > |, controls) as '_',
 * leading/trailing dots and spaces trimmed, at most 100 bytes of UTF-8;
 * "stems" when nothing is left. */
static void track_name(const char *upload, char *out, size_t cap) {
    char t[128];
    srv_utf8_copy(t, sizeof t, upload ? upload : "");
    char *dot = strrchr(t, '.');
    if (dot && dot != t) *dot = '\0';
    for (unsigned char *p = (unsigned char *)t; *p; p++)
        if (*p < 0x20 || *p == 0x7F || strchr("/\\:*?\"<>|", *p)) *p = '_';
    char *b = t;
    while (*b == ' ' || *b == '.') b++;
    size_t n = strlen(b);
    while (n && (b[n - 1] == ' ' || b[n - 1] == '.')) b[--n] = '\0';
    srv_utf8_copy(out, cap < 101 ? cap : 101, *b ? b : "stems");
}

/* Content-Disposition for NAME (valid UTF-8, no quotes or controls): RFC
 * 6266 attachment with an ASCII filename (other bytes as '_') for old
 * clients and filename* (RFC 8187, percent-encoded UTF-8). */
static void disposition(const char *name, char *out, size_t cap) {
    size_t k = (size_t)snprintf(out, cap, "attachment; filename=\"");
    for (const unsigned char *p = (const unsigned char *)name; *p && k + 2 < cap; p++)
        out[k++] = *p < 0x80 ? (char)*p : '_';
    k += (size_t)snprintf(out + k, k < cap ? cap - k : 0, "\"; filename*=UTF-8''");
    for (const unsigned char *p = (const unsigned char *)name; *p && k + 4 < cap; p++) {
        if (isalnum(*p) || strchr("!#$&+-.^_`|~", *p))
            out[k++] = (char)*p;
        else
            k += (size_t)snprintf(out + k, cap - k, "%%%02X", *p);
    }
    if (k < cap) out[k] = '\0';
}

static enum MHD_Result h_stem(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    srv_job *j = srv_job_get(r->id);
    if (!j) return no_job(c, r);
    char *path = srv_job_stem_path(j, r->stem);
    char fmt[8], track[128];
    snprintf(fmt, sizeof fmt, "%s", j->format);
    track_name(j->upload_name, track, sizeof track);
    srv_job_put(j);
    if (!path)
        return srv_respond_error(c, r, "stem_not_found", "job %s has no stem '%s' (or is not done)",
                                 r->id, r->stem);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return srv_respond_error(c, r, "stem_not_found", "stem file is gone");
    char fname[256];
    snprintf(fname, sizeof fname, "%s_%s.%s", track, r->stem, fmt);
    return send_fd(c, r, fd,
                   !strcmp(fmt, "mp3")    ? "audio/mpeg"
                   : !strcmp(fmt, "flac") ? "audio/flac"
                                          : "audio/wav",
                   fname);
}

/* Sends a file from disk (takes fd) as an attachment named FILENAME. */
static enum MHD_Result send_fd(struct MHD_Connection *c, srv_req *r, int fd, const char *ctype,
                               const char *filename) {
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return srv_respond_error(c, r, "stem_not_found", "file is gone");
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    char disp[1024];
    disposition(filename, disp, sizeof disp);
    MHD_add_response_header(resp, "Content-Disposition", disp);
    return srv_respond(c, r, 200, resp, (int64_t)st.st_size);
}

/* The job's stems as one zip (built once, then kept with the stems). */
enum MHD_Result srv_send_zip(struct MHD_Connection *c, srv_req *r, srv_job *j) {
    char **paths, **names;
    int n = srv_job_stem_files(j, &paths, &names);
    if (n == 0) {
        srv_job_put(j);
        return srv_respond_error(c, r, "job_not_done", "job %s has no results (yet)", r->id);
    }
    char *zp = NULL, track[128], fname[160];
    track_name(j->upload_name, track, sizeof track);
    snprintf(fname, sizeof fname, "%s_stems.zip", track);
    if (asprintf(&zp, "%s/stems.zip", j->dir) < 0) zp = NULL;
    srv_job_put(j);
    int fd = zp ? open(zp, O_RDONLY | O_CLOEXEC) : -1;
    if (zp && fd < 0 && srv_zip_write(zp, paths, names, n) == 0)
        fd = open(zp, O_RDONLY | O_CLOEXEC);
    free(zp);
    srv_strv_free(paths, n);
    srv_strv_free(names, n);
    if (fd < 0) return srv_respond_error(c, r, "storage_error", "cannot build the zip");
    return send_fd(c, r, fd, "application/zip", fname);
}

static enum MHD_Result h_zip(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    srv_job *j = srv_job_get(r->id);
    if (!j) return no_job(c, r);
    return srv_send_zip(c, r, j);
}

/* ---- POST /alerts ----------------------------------------------------------------------- */

/* Constant-time comparison: the secret must not leak through timing. */
static int secret_matches(const char *given, const char *secret) {
    size_t a = strlen(given), b = strlen(secret);
    unsigned char d = (unsigned char)(a != b);
    for (size_t i = 0; i < b; i++) d |= (unsigned char)(secret[i] ^ (i < a ? given[i] : 0));
    return d == 0;
}

/* With --alerts-token, Alertmanager must send it as a bearer token
 * (webhook_config http_config.authorization); the answer waits for the
 * (bounded) body, like every refusal of a request with one. */
static enum MHD_Result h_alerts(struct MHD_Connection *c, srv_req *r, const char *upload,
                                size_t *upload_size) {
    if (!r->started_upload) {
        r->started_upload = 1;
        const char *tok = srv_cfg.alerts_token;
        const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        if (tok && *tok) {
            const char *given = h && !strncasecmp(h, "Bearer ", 7) ? h + 7 : "";
            while (*given == ' ') given++;
            if (!secret_matches(given, tok)) {
                r->refuse = "unauthorized";
                snprintf(r->refuse_msg, sizeof r->refuse_msg,
                         "POST /alerts needs the alerts token (Authorization: Bearer)");
            }
        }
        if (!r->refuse && (!ct || strncasecmp(ct, "application/json", 16))) {
            r->refuse = "unsupported_media_type";
            snprintf(r->refuse_msg, sizeof r->refuse_msg, "POST /alerts takes application/json");
        }
        return MHD_YES;
    }
    if (!srv_collect_body(r, upload, upload_size)) return MHD_YES;
    if (r->refuse) return srv_respond_error(c, r, r->refuse, "%s", r->refuse_msg);
    if (r->body_too_large)
        return srv_respond_error(c, r, "payload_too_large", "the payload exceeds %d bytes",
                                 MAX_JSON_BODY);
    const char *why;
    int n = srv_alerts_receive(r->body, r->body_len, r->request_id, &why);
    if (n == -1) return srv_respond_error(c, r, "invalid_json", "the body is not valid JSON");
    if (n < 0) return srv_respond_error(c, r, "invalid_payload", "%s", why);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddNumberToObject(o, "received", n);
    return srv_respond_json(c, r, 200, o, NULL, NULL);
}

/* ---- documentation -------------------------------------------------------------------- */

static enum MHD_Result send_text(struct MHD_Connection *c, srv_req *r, char *s, const char *ctype) {
    if (!s) return srv_respond_error(c, r, "internal", "out of memory");
    size_t len = strlen(s);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", ctype);
    return srv_respond(c, r, 200, resp, (int64_t)len);
}

static enum MHD_Result h_openapi(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    return send_text(c, r, srv_openapi_json(), "application/json");
}

static enum MHD_Result h_docs(struct MHD_Connection *c, srv_req *r, const char *u, size_t *n) {
    return send_text(c, r, srv_openapi_html(), "text/html; charset=utf-8");
}

/* ---- the table ---------------------------------------------------------------------- */

/* The web page (web.c: web/ embedded at build time). */
#include "web.h"

/* Method, template, handler, needs the API key, summary, statuses, 2xx type. */
static const srv_route_info ROUTES[] = {
    {"GET", "/", srv_web_index, 0, "The web page (index.html).", "200 304", "text/html"},
    {"GET", "/static/{stem}", srv_web_static, 0, "A file of the web page.", "200 304 404", "*/*"},
    {"GET", "/livez", h_livez, 0, "Liveness probe: the process answers.", "200",
     "application/json"},
    {"GET", "/health", h_health, 0, "Health: version, uptime, models, breakers, queue, disk.",
     "200", "application/json"},
    {"GET", "/readyz", h_readyz, 0,
     "Readiness probe: 503 while no model can run, a breaker is open, the queue is full, the job "
     "store is unreachable or the disk is low.",
     "200 503", "application/json"},
    {"GET", "/models", h_models, 0, "Available and loaded models.", "200", "application/json"},
    {"GET", "/metrics", h_metrics, 0, "Prometheus metrics (text format 0.0.4).", "200",
     "text/plain"},
    {"GET", "/openapi.json", h_openapi, 0, "This API as an OpenAPI 3 document.", "200",
     "application/json"},
    {"GET", "/docs", h_docs, 0, "This API as a readable page.", "200", "text/html"},
    {"POST", "/alerts", h_alerts, 0,
     "Alertmanager webhook receiver: logs and counts each alert (bearer token when --alerts-token "
     "is set).",
     "200 400 401 413 415", "application/json"},
    {"POST", "/separate", srv_h_separate, 1,
     "Upload audio (multipart: file, model_name, two_stems, format, shifts, overlap, wait) and "
     "start a separation job.",
     "200 202 400 401 413 415 422 429 503 507", "application/json"},
    {"GET", "/jobs", h_jobs, 1, "Recent jobs, newest first (limit, offset).", "200 400 401 503",
     "application/json"},
    {"GET", "/jobs/{id}", h_job, 1, "A job: status, progress, ETA, stems, error.", "200 401 404 503",
     "application/json"},
    {"DELETE", "/jobs/{id}", h_job_delete, 1, "Cancel a job and delete its files.", "200 401 404 503",
     "application/json"},
    {"GET", "/jobs/{id}/stems/{stem}", h_stem, 1, "Download one stem.", "200 401 404 503", "audio/*"},
    {"GET", "/jobs/{id}/zip", h_zip, 1, "Download all stems as a zip.", "200 401 404 409 503",
     "application/zip"},
};

const srv_route_info *srv_routes(size_t *n) {
    *n = sizeof ROUTES / sizeof *ROUTES;
    return ROUTES;
}

/* Matches PATH against TMPL segment by segment, capturing {id} and {stem}. */
static int match(const char *tmpl, const char *path, srv_req *r) {
    char id[sizeof r->id] = "", stem[sizeof r->stem] = "";
    while (*tmpl && *path) {
        if (*tmpl != '/' || *path != '/') return 0;
        tmpl++, path++;
        const char *te = strchrnul(tmpl, '/'), *pe = strchrnul(path, '/');
        size_t tl = (size_t)(te - tmpl), pl = (size_t)(pe - path);
        if (tl && tmpl[0] == '{') {
            char *dst = !strncmp(tmpl, "{id}", 4) ? id : stem;
            size_t cap = dst == id ? sizeof id : sizeof stem;
            if (pl == 0 || pl >= cap) return 0;
            memcpy(dst, path, pl);
            dst[pl] = '\0';
        } else if (tl != pl || strncmp(tmpl, path, tl)) {
            return 0;
        }
        tmpl = te, path = pe;
    }
    if (*tmpl || (*path && strcmp(path, "/"))) return 0;
    memcpy(r->id, id, sizeof id);
    memcpy(r->stem, stem, sizeof stem);
    return 1;
}

const srv_route_info *srv_route(const char *method, const char *path, srv_req *r, int *mismatch) {
    *mismatch = 0;
    for (size_t i = 0; i < sizeof ROUTES / sizeof *ROUTES; i++) {
        if (!match(ROUTES[i].tmpl, path, r)) continue;
        r->endpoint = ROUTES[i].tmpl;
        if (!strcmp(ROUTES[i].method, method)) return &ROUTES[i];
        *mismatch = 1;
    }
    return NULL;
}

size_t srv_route_allow(const char *path, char *out, size_t n) {
    srv_req scratch; /* match() writes the path parameters here */
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof ROUTES / sizeof *ROUTES; i++) {
        if (!match(ROUTES[i].tmpl, path, &scratch)) continue;
        const char *m = ROUTES[i].method;
        /* libmicrohttpd answers HEAD from the GET handler, body left out */
        int with_head = !strcmp(m, "GET");
        int w = snprintf(out + k, n - k, "%s%s%s", k ? ", " : "", m, with_head ? ", HEAD" : "");
        if (w < 0 || (size_t)w >= n - k) break;
        k += (size_t)w;
    }
    return k;
}
