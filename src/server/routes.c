/*
 * routes.c - the route table of `demix serve` and its handlers. The
 * table is the one place that lists the API; its templates ("/jobs/{id}")
 * are also the `endpoint` label of logs and metrics, so raw paths (which
 * hold job ids) never multiply metric series.
 */
#define _GNU_SOURCE
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

static enum MHD_Result send_fd(struct MHD_Connection *c, dmx_req *r, int fd, const char *ctype,
                               const char *filename);

/* ---- probes, models, metrics ----------------------------------------------------- */

static enum MHD_Result h_livez(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    return dmx_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_health(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    int avail = dmx_models_any_available();
    int depth = dmx_jobs_queue_depth();
    int disk_low = dmx_data_disk_low(NULL);
    int degraded = !avail || depth >= dmx_srv_cfg.queue_max || dmx_breakers_any_open() || disk_low;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", degraded ? "degraded" : "ok");
    cJSON_AddStringToObject(o, "version", DEMIX_SERVER_VERSION);
    cJSON_AddNumberToObject(o, "uptime_seconds", dmx_srv_now() - dmx_srv_start_time);
    cJSON_AddNumberToObject(o, "models_loaded", dmx_models_loaded());
    cJSON_AddNumberToObject(o, "queue_depth", depth);
    cJSON_AddNumberToObject(o, "queue_capacity", dmx_srv_cfg.queue_max);
    cJSON_AddNumberToObject(o, "active_jobs", dmx_jobs_active());
    cJSON_AddNumberToObject(o, "workers", dmx_srv_cfg.workers);
    cJSON_AddItemToObject(o, "circuit_breakers", dmx_breakers_json());
    cJSON_AddBoolToObject(o, "disk_low", disk_low);
    struct statvfs v;
    if (statvfs(dmx_srv_cfg.data_dir, &v) == 0)
        cJSON_AddNumberToObject(o, "disk_free_bytes", (double)v.f_bavail * (double)v.f_frsize);
    return dmx_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_readyz(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    const char *why = NULL;
    if (!dmx_models_any_available())
        why = "no model available";
    else if (dmx_jobs_queue_depth() >= dmx_srv_cfg.queue_max)
        why = "job queue full";
    else if (dmx_breakers_any_open())
        why = "a circuit breaker is open";
    else if (dmx_data_disk_low(NULL))
        why = "free disk space in the data folder is below --min-free-disk";
    if (why) return dmx_respond_error(c, r, "not_ready", "%s", why);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ready");
    return dmx_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_models(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "models", dmx_models_json());
    return dmx_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_metrics(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    char *s = dmx_metrics_render();
    if (!s) return dmx_respond_error(c, r, "internal", "out of memory");
    size_t len = strlen(s);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return dmx_respond(c, r, 200, resp, (int64_t)len);
}

/* ---- jobs --------------------------------------------------------------------------- */

static enum MHD_Result h_jobs(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    const char *l = query(c, "limit"), *o = query(c, "offset");
    int limit = l ? atoi(l) : 50, offset = o ? atoi(o) : 0;
    if (limit < 1 || limit > 1000 || offset < 0)
        return dmx_respond_error(c, r, dmx_error_code(DMX_E_INVALID_ARGUMENT),
                                 "limit must be 1..1000 and offset >= 0");
    return dmx_respond_json(c, r, 200, dmx_jobs_list_json(limit, offset), NULL, NULL);
}

static enum MHD_Result h_job(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    dmx_job *j = dmx_job_get(r->id);
    if (!j) return dmx_respond_error(c, r, dmx_error_code(DMX_E_JOB_NOT_FOUND), "no job %s", r->id);
    cJSON *o = dmx_job_json(j);
    dmx_job_put(j);
    return dmx_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_job_delete(struct MHD_Connection *c, dmx_req *r, const char *u,
                                    size_t *n) {
    dmx_job *j = dmx_job_get(r->id);
    if (!j) return dmx_respond_error(c, r, dmx_error_code(DMX_E_JOB_NOT_FOUND), "no job %s", r->id);
    dmx_job_delete(j);
    cJSON *o = dmx_job_json(j);
    dmx_job_put(j);
    cJSON_AddBoolToObject(o, "deleted", 1);
    return dmx_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_stem(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    dmx_job *j = dmx_job_get(r->id);
    if (!j) return dmx_respond_error(c, r, "job_not_found", "no job %s", r->id);
    char *path = dmx_job_stem_path(j, r->stem);
    char fmt[8];
    snprintf(fmt, sizeof fmt, "%s", j->format);
    dmx_job_put(j);
    if (!path)
        return dmx_respond_error(c, r, "stem_not_found",
                                 "job %s has no stem '%s' (or is not done)", r->id, r->stem);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return dmx_respond_error(c, r, "stem_not_found", "stem file is gone");
    char fname[100];
    snprintf(fname, sizeof fname, "%s.%s", r->stem, fmt);
    return send_fd(c, r, fd,
                   !strcmp(fmt, "mp3") ? "audio/mpeg" : !strcmp(fmt, "flac") ? "audio/flac" : "audio/wav",
                   fname);
}

/* Sends a file from disk (takes fd). */
static enum MHD_Result send_fd(struct MHD_Connection *c, dmx_req *r, int fd, const char *ctype,
                               const char *filename) {
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return dmx_respond_error(c, r, "stem_not_found", "file is gone");
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    char disp[200];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", filename);
    MHD_add_response_header(resp, "Content-Disposition", disp);
    return dmx_respond(c, r, 200, resp, (int64_t)st.st_size);
}

/* The job's stems as one zip (built once, then kept with the stems). */
enum MHD_Result dmx_send_zip(struct MHD_Connection *c, dmx_req *r, dmx_job *j) {
    char **paths, **names;
    int n = dmx_job_stem_files(j, &paths, &names);
    if (n == 0) {
        dmx_job_put(j);
        return dmx_respond_error(c, r, "job_not_done", "job %s has no results (yet)", r->id);
    }
    char *zp = NULL, fname[64];
    snprintf(fname, sizeof fname, "%s.zip", j->id);
    if (asprintf(&zp, "%s/stems.zip", j->dir) < 0) zp = NULL;
    dmx_job_put(j);
    int fd = zp ? open(zp, O_RDONLY | O_CLOEXEC) : -1;
    if (zp && fd < 0 && dmx_zip_write(zp, paths, names, n) == 0) fd = open(zp, O_RDONLY | O_CLOEXEC);
    free(zp);
    dmx_strv_free(paths, n);
    dmx_strv_free(names, n);
    if (fd < 0) return dmx_respond_error(c, r, "storage_error", "cannot build the zip");
    return send_fd(c, r, fd, "application/zip", fname);
}

static enum MHD_Result h_zip(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    dmx_job *j = dmx_job_get(r->id);
    if (!j) return dmx_respond_error(c, r, "job_not_found", "no job %s", r->id);
    return dmx_send_zip(c, r, j);
}

/* ---- documentation -------------------------------------------------------------------- */

static enum MHD_Result send_text(struct MHD_Connection *c, dmx_req *r, char *s,
                                 const char *ctype) {
    if (!s) return dmx_respond_error(c, r, "internal", "out of memory");
    size_t len = strlen(s);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", ctype);
    return dmx_respond(c, r, 200, resp, (int64_t)len);
}

static enum MHD_Result h_openapi(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    return send_text(c, r, dmx_openapi_json(), "application/json");
}

static enum MHD_Result h_docs(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    return send_text(c, r, dmx_openapi_html(), "text/html; charset=utf-8");
}

/* ---- the table ---------------------------------------------------------------------- */

/* The web page (web.c: web/ embedded at build time). */
#include "web.h"

/* Method, template, handler, needs the API key, summary, statuses, 2xx type. */
static const dmx_route_info ROUTES[] = {
    {"GET", "/", dmx_web_index, 0, "The web page (index.html).", "200 304", "text/html"},
    {"GET", "/static/{stem}", dmx_web_static, 0, "A file of the web page.", "200 304 404", "*/*"},
    {"GET", "/livez", h_livez, 0, "Liveness probe: the process answers.", "200", "application/json"},
    {"GET", "/health", h_health, 0, "Health: version, uptime, models, breakers, queue, disk.", "200", "application/json"},
    {"GET", "/readyz", h_readyz, 0, "Readiness probe: 503 while no model can run, a breaker is open, the queue is full or the disk is low.", "200 503", "application/json"},
    {"GET", "/models", h_models, 0, "Available and loaded models.", "200", "application/json"},
    {"GET", "/metrics", h_metrics, 0, "Prometheus metrics (text format 0.0.4).", "200", "text/plain"},
    {"GET", "/openapi.json", h_openapi, 0, "This API as an OpenAPI 3 document.", "200", "application/json"},
    {"GET", "/docs", h_docs, 0, "This API as a readable page.", "200", "text/html"},
    {"POST", "/alerts", dmx_h_alerts, 0, "Alertmanager webhook receiver: logs and counts each alert.", "200 400 413 415", "application/json"},
    {"POST", "/separate", dmx_h_separate, 1, "Upload audio (multipart: file, model_name, two_stems, format, shifts, overlap, wait) and start a separation job.", "200 202 400 401 413 415 422 429 503 507", "application/json"},
    {"GET", "/jobs", h_jobs, 1, "Recent jobs, newest first (limit, offset).", "200 400 401", "application/json"},
    {"GET", "/jobs/{id}", h_job, 1, "A job: status, progress, ETA, stems, error.", "200 401 404", "application/json"},
    {"DELETE", "/jobs/{id}", h_job_delete, 1, "Cancel a job and delete its files.", "200 401 404", "application/json"},
    {"GET", "/jobs/{id}/stems/{stem}", h_stem, 1, "Download one stem.", "200 401 404", "audio/*"},
    {"GET", "/jobs/{id}/zip", h_zip, 1, "Download all stems as a zip.", "200 401 404 409", "application/zip"},
};

const dmx_route_info *dmx_routes(size_t *n) {
    *n = sizeof ROUTES / sizeof *ROUTES;
    return ROUTES;
}

/* Matches PATH against TMPL segment by segment, capturing {id} and {stem}. */
static int match(const char *tmpl, const char *path, dmx_req *r) {
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

const dmx_route_info *dmx_route(const char *method, const char *path, dmx_req *r,
                                int *mismatch) {
    *mismatch = 0;
    for (size_t i = 0; i < sizeof ROUTES / sizeof *ROUTES; i++) {
        if (!match(ROUTES[i].tmpl, path, r)) continue;
        r->endpoint = ROUTES[i].tmpl;
        if (!strcmp(ROUTES[i].method, method)) return &ROUTES[i];
        *mismatch = 1;
    }
    return NULL;
}
