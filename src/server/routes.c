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

static int mkdir_one(const char *p) { return mkdir(p, 0755) == 0 || errno == EEXIST ? 0 : -1; }

static const char *query(struct MHD_Connection *c, const char *k) {
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k);
}

static int truthy(const char *s) {
    return s && (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes"));
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
    int degraded = !avail || depth >= dmx_srv_cfg.queue_max || dmx_breakers_any_open();
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

/* Breaker states gathered for one scrape. */
typedef struct breaker_list {
    int n, cap;
    char **names;
    int *states;
} breaker_list;

static void collect_breaker(void *user, const char *name, dmx_breaker_state st) {
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
void dmx_routes_declare_metrics(void) {
    static const dmx_job_state terminal[] = {JOB_DONE, JOB_FAILED, JOB_CANCELLED};
    cJSON *models = dmx_models_json(), *m;
    cJSON_ArrayForEach(m, models) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (!cJSON_IsString(name)) continue;
        for (size_t k = 0; k < sizeof terminal / sizeof *terminal; k++)
            dmx_metrics_declare_separation(name->valuestring, dmx_job_state_name(terminal[k]));
    }
    cJSON_Delete(models);
    size_t n;
    const dmx_route_info *rt = dmx_routes(&n);
    const char *code;
    int status;
    for (size_t i = 0; i < n; i++)
        for (size_t e = 0; (code = dmx_error_code_at(e, &status)); e++) {
            char st[8];
            snprintf(st, sizeof st, "%d", status);
            /* the statuses are space-separated three-digit words */
            for (const char *p = rt[i].responses; (p = strstr(p, st)); p += 3)
                if ((p == rt[i].responses || p[-1] == ' ') && (p[3] == ' ' || !p[3])) {
                    dmx_metrics_declare_error(code, rt[i].tmpl);
                    break;
                }
        }
}

static enum MHD_Result h_metrics(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    /* Models that appeared since the start get their zero series too. */
    dmx_routes_declare_metrics();
    breaker_list bl = {0};
    dmx_breakers_each(collect_breaker, &bl);
    dmx_metrics_gauges g = {
        .models_loaded = dmx_models_loaded(),
        .active_sessions = dmx_jobs_active(),
        .queue_depth = dmx_jobs_queue_depth(),
        .rate_limit_buckets = dmx_ratelimit_buckets(),
        .process_start_time = dmx_srv_wall() - (dmx_srv_now() - dmx_srv_start_time),
        .n_breakers = bl.n,
        .breaker_names = (const char *const *)bl.names,
        .breaker_states = bl.states,
    };
    dmx_sysmetrics_get(&g.sys);
    char *s = dmx_metrics_render(&g);
    dmx_strv_free(bl.names, bl.n);
    free(bl.states);
    if (!s) return dmx_respond_error(c, r, "internal", "out of memory");
    size_t len = strlen(s);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return dmx_respond(c, r, 200, resp, (int64_t)len);
}

/* ---- jobs --------------------------------------------------------------------------- */

static enum MHD_Result h_jobs(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    const char *l = query(c, "limit"), *o = query(c, "offset");
    int limit = l ? atoi(l) : DMX_JOBS_DEFAULT_LIMIT, offset = o ? atoi(o) : 0;
    if (limit < 1 || limit > DMX_JOBS_MAX_LIMIT || offset < 0)
        return dmx_respond_error(c, r, "invalid_argument",
                                 "limit must be 1..%d and offset >= 0", DMX_JOBS_MAX_LIMIT);
    return dmx_respond_json(c, r, 200, dmx_jobs_list_json(limit, offset), NULL, NULL);
}

static enum MHD_Result h_job(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    dmx_job *j = dmx_job_get(r->id);
    if (!j) return dmx_respond_error(c, r, "job_not_found", "no job %s", r->id);
    cJSON *o = dmx_job_json(j);
    dmx_job_put(j);
    return dmx_respond_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result h_job_delete(struct MHD_Connection *c, dmx_req *r, const char *u,
                                    size_t *n) {
    dmx_job *j = dmx_job_get(r->id);
    if (!j) return dmx_respond_error(c, r, "job_not_found", "no job %s", r->id);
    dmx_job_delete(j);
    cJSON *o = dmx_job_json(j);
    dmx_job_put(j);
    cJSON_AddBoolToObject(o, "deleted", 1);
    return dmx_respond_json(c, r, 200, o, NULL, NULL);
}

/* ---- downloads ------------------------------------------------------------------------ */

/* The track name of a job's files: the upload's name without its extension,
 * with what file systems refuse (/ \ : * ? " < > |, controls) as '_',
 * leading/trailing dots and spaces trimmed, at most 100 bytes of UTF-8;
 * "stems" when nothing is left. */
static void track_name(const char *upload, char *out, size_t cap) {
    char t[128];
    dmx_utf8_copy(t, sizeof t, upload ? upload : "");
    char *dot = strrchr(t, '.');
    if (dot && dot != t) *dot = '\0';
    for (unsigned char *p = (unsigned char *)t; *p; p++)
        if (*p < 0x20 || *p == 0x7F || strchr("/\\:*?\"<>|", *p)) *p = '_';
    char *b = t;
    while (*b == ' ' || *b == '.') b++;
    size_t n = strlen(b);
    while (n && (b[n - 1] == ' ' || b[n - 1] == '.')) b[--n] = '\0';
    dmx_utf8_copy(out, cap < 101 ? cap : 101, *b ? b : "stems");
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
        if (isalnum(*p) || strchr("!#$&+-.^_`|~", *p)) out[k++] = (char)*p;
        else k += (size_t)snprintf(out + k, cap - k, "%%%02X", *p);
    }
    if (k < cap) out[k] = '\0';
}

static enum MHD_Result h_stem(struct MHD_Connection *c, dmx_req *r, const char *u, size_t *n) {
    dmx_job *j = dmx_job_get(r->id);
    if (!j) return dmx_respond_error(c, r, "job_not_found", "no job %s", r->id);
    char *path = dmx_job_stem_path(j, r->stem);
    char fmt[8], track[128];
    snprintf(fmt, sizeof fmt, "%s", j->format);
    track_name(j->upload_name, track, sizeof track);
    dmx_job_put(j);
    if (!path)
        return dmx_respond_error(c, r, "stem_not_found",
                                 "job %s has no stem '%s' (or is not done)", r->id, r->stem);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return dmx_respond_error(c, r, "stem_not_found", "stem file is gone");
    char fname[256];
    snprintf(fname, sizeof fname, "%s_%s.%s", track, r->stem, fmt);
    return send_fd(c, r, fd,
                   !strcmp(fmt, "mp3") ? "audio/mpeg" : !strcmp(fmt, "flac") ? "audio/flac" : "audio/wav",
                   fname);
}

/* Sends a file from disk (takes fd) as an attachment named FILENAME. */
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
    char disp[1024];
    disposition(filename, disp, sizeof disp);
    MHD_add_response_header(resp, "Content-Disposition", disp);
    return dmx_respond(c, r, 200, resp, (int64_t)st.st_size);
}

/* The job's stems as one zip (built once, then kept with the stems). */
static enum MHD_Result send_zip(struct MHD_Connection *c, dmx_req *r, dmx_job *j) {
    char **paths, **names;
    int n = dmx_job_stem_files(j, &paths, &names);
    if (n == 0) {
        dmx_job_put(j);
        return dmx_respond_error(c, r, "job_not_done", "job %s has no results (yet)", r->id);
    }
    char *zp = NULL, track[128], fname[160];
    track_name(j->upload_name, track, sizeof track);
    snprintf(fname, sizeof fname, "%s_stems.zip", track);
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
    return send_zip(c, r, j);
}

static int wants_zip(struct MHD_Connection *c) {
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
    return a && strstr(a, "application/zip") != NULL;
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
static enum MHD_Result h_alerts(struct MHD_Connection *c, dmx_req *r, const char *upload,
                                size_t *upload_size) {
    if (!r->started_upload) {
        r->started_upload = 1;
        const char *tok = dmx_srv_cfg.alerts_token;
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
    if (!dmx_collect_body(r, upload, upload_size)) return MHD_YES;
    if (r->refuse) return dmx_respond_error(c, r, r->refuse, "%s", r->refuse_msg);
    if (r->body_too_large)
        return dmx_respond_error(c, r, "payload_too_large", "the payload exceeds %d bytes",
                                 MAX_JSON_BODY);
    const char *why;
    int n = dmx_alerts_receive(r->body, r->body_len, r->request_id, &why);
    if (n == -1) return dmx_respond_error(c, r, "invalid_json", "the body is not valid JSON");
    if (n < 0) return dmx_respond_error(c, r, "invalid_payload", "%s", why);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddNumberToObject(o, "received", n);
    return dmx_respond_json(c, r, 200, o, NULL, NULL);
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

/* ---- POST /separate ----------------------------------------------------------------- */

/* The client's file name, kept only to show it back: its last path
 * component, valid UTF-8 without control characters, at most 255 bytes. */
static char *clean_filename(const char *name) {
    const char *b = name;
    for (const char *p = name; *p; p++)
        if ((*p == '/' || *p == '\\') && p[1]) b = p + 1;
    char *s = strndup(b, 255);
    if (s) dmx_utf8_clean(s, 1);
    return s;
}

static enum MHD_Result on_post_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *ctype,
                                     const char *encoding, const char *data, uint64_t off,
                                     size_t size) {
    dmx_req *r = cls;
    /* A part without a name (MHD passes NULL): nothing we read. */
    if (!key) return MHD_YES;
    if (!strcmp(key, "file")) {
        /* A second file part starts again at offset 0: two files in one
         * request would be concatenated into one upload, so refuse it. */
        if (r->saw_file && off == 0 && r->file_next_off > 0 && !r->bad_field[0])
            snprintf(r->bad_field, sizeof r->bad_field, "file");
        r->saw_file = 1;
        r->file_next_off = (int64_t)(off + size);
        if (!r->upload_name && filename) r->upload_name = clean_filename(filename);
        if (r->bad_field[0] || r->too_large || r->write_failed || size == 0) return MHD_YES;
        if ((int64_t)(r->upload_bytes + size) > dmx_srv_cfg.max_upload_bytes) {
            /* Keep reading (to answer 413 properly) but stop storing. */
            r->too_large = 1;
            if (r->upload) fclose(r->upload);
            r->upload = NULL;
            return MHD_YES;
        }
        if (!r->upload) {
            if (asprintf(&r->upload_path, "%s/uploads/%s.upload", dmx_srv_cfg.data_dir,
                         r->request_id) < 0) {
                r->upload_path = NULL;
                r->write_failed = 1;
                return MHD_YES;
            }
            /* x: a client reusing a request id must not overwrite another upload. */
            r->upload = fopen(r->upload_path, "wbx");
            if (!r->upload) {
                free(r->upload_path);
                r->upload_path = NULL;
                r->write_failed = 1;
                return MHD_YES;
            }
        }
        if (fwrite(data, 1, size, r->upload) != size) r->write_failed = 1;
        r->upload_bytes += (int64_t)size;
        return MHD_YES;
    }
    char *dst = !strcmp(key, "model_name") ? r->model_name
                : !strcmp(key, "two_stems") ? r->two_stems
                : !strcmp(key, "format")    ? r->format
                : !strcmp(key, "shifts")    ? r->shifts
                : !strcmp(key, "overlap")   ? r->overlap
                : !strcmp(key, "wait")      ? r->wait
                                            : NULL;
    if (!dst) return MHD_YES; /* unknown fields are ignored */
    size_t have = strlen(dst);
    /* A field given twice (its value restarts at 0) or longer than we keep
     * is refused as a whole rather than silently truncated or defaulted. */
    if ((off == 0 && have > 0) || off != have || have + size >= MAX_FIELD) {
        if (!r->bad_field[0]) {
            snprintf(r->bad_field, sizeof r->bad_field, "%.64s", key);
            r->bad_field_long = !(off == 0 && have > 0);
        }
        return MHD_YES;
    }
    memcpy(dst + have, data, size);
    dst[have + size] = '\0';
    return MHD_YES;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Decodes (at the source rate, so no resampling) until the end or just past
 * `limit` seconds; returns the seconds read, or -1 when decoding fails. */
static double count_seconds(dmx_decoder *dec, double limit) {
    const int32_t rate = dmx_decoder_rate(dec), nch = dmx_decoder_channels(dec);
    enum { BLOCK = 16384 };
    float *buf = malloc(sizeof(float) * BLOCK * (size_t)nch);
    float *planes[DMX_AUDIO_MAX_CHANNELS];
    if (!buf || nch < 1 || nch > DMX_AUDIO_MAX_CHANNELS) {
        free(buf);
        return -1;
    }
    for (int ch = 0; ch < nch; ch++) planes[ch] = buf + (size_t)ch * BLOCK;
    int64_t n = 0, got = 0, max = (int64_t)(limit * rate) + 1;
    dmx_status st;
    while ((st = dmx_decoder_read(dec, planes, BLOCK, &got)) == DMX_OK && got > 0 && n <= max)
        n += got;
    free(buf);
    return st == DMX_OK ? (double)n / rate : -1;
}

static enum MHD_Result separate_finish(struct MHD_Connection *c, dmx_req *r) {
    if (r->upload) {
        if (fclose(r->upload) != 0) r->write_failed = 1;
        r->upload = NULL;
    }
    if (r->too_large)
        return dmx_respond_error(c, r, "payload_too_large", "upload exceeds %lld bytes",
                                 (long long)dmx_srv_cfg.max_upload_bytes);
    if (r->write_failed)
        return dmx_respond_error(c, r, "storage_error", "cannot store the upload");
    if (r->malformed)
        return dmx_respond_error(c, r, "invalid_argument", "malformed multipart/form-data body");
    if (r->bad_field[0])
        return dmx_respond_error(c, r, "invalid_argument",
                                 r->bad_field_long ? "the field '%s' is longer than %d bytes"
                                                   : "the field '%s' is given more than once",
                                 r->bad_field, MAX_FIELD - 1);
    if (!r->saw_file || !r->upload_path)
        return dmx_respond_error(c, r, "missing_file",
                                 "the multipart field 'file' is required and must not be empty");
    const char *model = r->model_name[0] ? r->model_name : DMX_SEP_DEFAULT_MODEL;
    const char *fmt = r->format[0] ? r->format : DMX_SEP_DEFAULT_FORMAT;
    if (strcmp(fmt, "wav") && strcmp(fmt, "flac") && strcmp(fmt, "mp3"))
        return dmx_respond_error(c, r, "invalid_argument", "format must be wav, flac or mp3");
    long shifts = DMX_SEP_DEFAULT_SHIFTS;
    if (r->shifts[0] && parse_int(r->shifts, 0, DMX_SEP_MAX_SHIFTS, &shifts))
        return dmx_respond_error(c, r, "invalid_argument", "shifts must be 0..%d", DMX_SEP_MAX_SHIFTS);
    double overlap = DMX_SEP_DEFAULT_OVERLAP;
    if (r->overlap[0]) {
        char *end;
        overlap = strtod(r->overlap, &end);
        if (end == r->overlap || *end || !(overlap >= 0 && overlap < 1))
            return dmx_respond_error(c, r, "invalid_argument", "overlap must be in [0, 1)");
    }
    if (strlen(r->two_stems) >= 60)
        return dmx_respond_error(c, r, "invalid_argument", "two_stems is too long");
    char *mpath = strlen(model) < 100 ? dmx_models_resolve(model) : NULL;
    if (!mpath)
        return dmx_respond_error(c, r, "unknown_model", "model '%s' is not available",
                                 model);
    free(mpath);
    char breaker[160];
    snprintf(breaker, sizeof breaker, "model:%s", model);
    if (dmx_breaker_check(breaker, &r->retry_after) < 0)
        return dmx_respond_error(c, r, "model_unavailable",
                                 "model '%s' failed to load repeatedly; retry in %d s", model,
                                 r->retry_after);
    if (r->two_stems[0]) {
        /* The source names live in the checkpoint: load it now (it is
         * shared and cached, so the job would need it anyway) to refuse an
         * unknown stem while the client is still here. */
        char err[512];
        const dmx_model *m = dmx_model_get(model, r->request_id, err, sizeof err);
        if (!m) {
            dmx_breaker_check(breaker, &r->retry_after);
            return dmx_respond_error(c, r, "model_unavailable", "%s", err);
        }
        if (dmx_model_source_index(m, r->two_stems) < 0) {
            char list[512] = "";
            size_t k = 0;
            for (int i = 0; i < dmx_model_n_sources(m) && k < sizeof list; i++)
                k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "",
                                      dmx_model_source_name(m, i));
            return dmx_respond_error(c, r, "unknown_source",
                                     "model %s has no source '%s' (it has: %s)", model,
                                     r->two_stems, list);
        }
    }
    /* Refuse what cannot be decoded now, while the client is still here. */
    dmx_decoder *dec = NULL;
    dmx_status st = dmx_decoder_open(r->upload_path, 0, 0, &dec);
    if (st != DMX_OK) {
        /* The detail starts with our own file name: keep server paths private. */
        const char *d = dmx_last_error();
        size_t pl = strlen(r->upload_path);
        if (!strncmp(d, r->upload_path, pl) && !strncmp(d + pl, ": ", 2)) d += pl + 2;
        return dmx_respond_error(c, r, "undecodable_audio", "the upload is not audio: %s",
                                 *d ? d : dmx_status_str(st));
    }
    double audio_seconds = 0;
    int64_t frames = dmx_decoder_duration_hint(dec);
    int32_t rate = dmx_decoder_rate(dec);
    if (frames > 0 && rate > 0) {
        audio_seconds = (double)frames / rate;
    } else if (dmx_srv_cfg.max_duration_seconds > 0 && rate > 0) {
        /* No duration in the container (a piped FLAC, a raw stream): count
         * the frames, stopping just past the limit, so a tiny file of hours
         * of silence is refused now and not after hours of work. */
        audio_seconds = count_seconds(dec, dmx_srv_cfg.max_duration_seconds);
        if (audio_seconds < 0) {
            dmx_decoder_close(dec);
            return dmx_respond_error(c, r, "undecodable_audio", "the upload cannot be decoded: %s",
                                     dmx_status_str(DMX_ERR_DECODE));
        }
    }
    dmx_decoder_close(dec);
    if (dmx_srv_cfg.max_duration_seconds > 0 && audio_seconds > dmx_srv_cfg.max_duration_seconds)
        return dmx_respond_error(c, r, "audio_too_long",
                                 "the audio lasts %s%.1f s; this server takes at most %g s",
                                 frames > 0 ? "" : "over ", frames > 0 ? audio_seconds
                                 : dmx_srv_cfg.max_duration_seconds, dmx_srv_cfg.max_duration_seconds);

    dmx_job *j = dmx_job_new();
    if (!j) return dmx_respond_error(c, r, "internal", "cannot create a job");
    snprintf(j->request_id, sizeof j->request_id, "%s", r->request_id);
    /* Lengths were checked above; the precisions only bound the copies. */
    snprintf(j->model, sizeof j->model, "%.127s", model);
    snprintf(j->two_stems, sizeof j->two_stems, "%.63s", r->two_stems);
    snprintf(j->format, sizeof j->format, "%.7s", fmt);
    j->shifts = (int)shifts;
    j->overlap = overlap;
    j->file_size = r->upload_bytes;
    j->audio_seconds = audio_seconds;
    j->upload_name = r->upload_name;
    r->upload_name = NULL;
    if (asprintf(&j->dir, "%s/jobs/%s", dmx_srv_cfg.data_dir, j->id) < 0) j->dir = NULL;
    if (!j->dir || mkdir_one(j->dir) < 0 || asprintf(&j->input, "%s/input", j->dir) < 0 ||
        rename(r->upload_path, j->input) < 0) {
        if (j->dir) rmdir(j->dir);
        dmx_job_put(j);
        return dmx_respond_error(c, r, "storage_error", "cannot store the job");
    }
    free(r->upload_path);
    r->upload_path = NULL;
    if (dmx_job_submit(j) < 0) {
        unlink(j->input);
        rmdir(j->dir);
        dmx_job_put(j);
        return dmx_respond_error(c, r, "queue_full", "the job queue is full; retry later");
    }
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "job", j->id);
    cJSON_AddStringToObject(f, "model", model);
    cJSON_AddNumberToObject(f, "file_size_bytes", (double)r->upload_bytes);
    dmx_srv_log(DMX_LOG_INFO, "demix.jobs", "job_queued", r->request_id, f, "job %s queued",
                j->id);
    char loc[64];
    snprintf(loc, sizeof loc, "/jobs/%s", j->id);
    int wait = truthy(r->wait) || truthy(query(c, "wait"));
    if (wait) r->endpoint = DMX_ENDPOINT_SEPARATE_WAIT; /* kept out of the latency panel */
    if (wait && dmx_job_wait(j) < 0) {
        dmx_job_put(j);
        return dmx_respond_error(c, r, "shutting_down",
                                 "the server is shutting down; job %s stays queued", loc + 6);
    }
    /* Accept: application/zip gets the stems themselves when they exist;
     * a failed job still answers with its JSON, which says why. */
    if (wait && wants_zip(c) && dmx_job_is_done(j)) return send_zip(c, r, j);
    cJSON *o = dmx_job_json(j);
    dmx_job_put(j);
    return dmx_respond_json(c, r, wait ? 200 : 202, o, "Location", loc);
}

static enum MHD_Result h_separate(struct MHD_Connection *c, dmx_req *r, const char *upload,
                                  size_t *upload_size) {
    if (!r->started_upload) {
        r->started_upload = 1;
        /* Rate limit before reading a byte of the upload. */
        int remaining, reset, retry;
        int ok = dmx_ratelimit_take(r->client, &remaining, &reset, &retry);
        if (dmx_srv_cfg.rate_per_minute > 0) {
            /* draft-ietf-httpapi-ratelimit-headers: quota per window (s). */
            dmx_req_header(r, "RateLimit-Policy", "%d;w=%d;burst=%d",
                           (int)dmx_srv_cfg.rate_per_minute, 60, dmx_srv_cfg.rate_burst);
            dmx_req_header(r, "RateLimit", "limit=%d, remaining=%d, reset=%d",
                           dmx_srv_cfg.rate_burst, remaining, reset);
        }
        if (!ok) {
            r->retry_after = retry;
            dmx_metrics_rate_limited();
            return dmx_respond_error(c, r, "rate_limited",
                                     "too many separation requests from %s; retry in %d s",
                                     r->client, retry);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoll(cl, NULL, 10) > dmx_srv_cfg.max_upload_bytes + 64 * 1024)
            return dmx_respond_error(c, r, "payload_too_large", "upload exceeds %lld bytes",
                                     (long long)dmx_srv_cfg.max_upload_bytes);
        /* A body of acceptable size is read (and dropped) before the 415:
         * answering first makes libmicrohttpd close the connection while the
         * client is still sending, which it sees as a broken pipe instead of
         * the answer. */
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        if (!ct || strncasecmp(ct, "multipart/form-data", 19))
            snprintf(r->refuse_msg, sizeof r->refuse_msg, "POST /separate takes multipart/form-data");
        else if (!(r->pp = MHD_create_post_processor(c, 64 * 1024, on_post_field, r)))
            snprintf(r->refuse_msg, sizeof r->refuse_msg, "malformed multipart/form-data (boundary missing?)");
        if (!r->pp) r->refuse = "unsupported_media_type";
        return MHD_YES;
    }
    if (r->refuse) {
        r->body_bytes += (int64_t)*upload_size;
        if (r->body_bytes > dmx_srv_cfg.max_upload_bytes + 64 * 1024) /* chunked, unbounded */
            return dmx_respond_error(c, r, "payload_too_large", "upload exceeds %lld bytes",
                                     (long long)dmx_srv_cfg.max_upload_bytes);
        if (*upload_size) {
            *upload_size = 0;
            return MHD_YES;
        }
        return dmx_respond_error(c, r, r->refuse, "%s", r->refuse_msg);
    }
    if (*upload_size) {
        r->body_bytes += (int64_t)*upload_size;
        /* Past the limit the rest is read only to answer 413 (MHD cannot
         * answer before the body is in); a body far past it (chunked, so
         * no Content-Length to refuse up front) is cut off instead. */
        if (r->too_large && r->body_bytes > 2 * dmx_srv_cfg.max_upload_bytes + (1 << 20)) {
            dmx_srv_log(DMX_LOG_WARN, "demix.http", "error", r->request_id, NULL,
                        "upload far past the limit: connection closed");
            return MHD_NO;
        }
        if (!r->malformed && MHD_post_process(r->pp, upload, *upload_size) != MHD_YES)
            r->malformed = 1;
        *upload_size = 0;
        return MHD_YES;
    }
    return separate_finish(c, r);
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
    {"GET", "/readyz", h_readyz, 0, "Readiness probe: 503 while no model can run, a breaker is open or the queue is full.", "200 503", "application/json"},
    {"GET", "/models", h_models, 0, "Available and loaded models.", "200", "application/json"},
    {"GET", "/metrics", h_metrics, 0, "Prometheus metrics (text format 0.0.4).", "200", "text/plain"},
    {"GET", "/openapi.json", h_openapi, 0, "This API as an OpenAPI 3 document.", "200", "application/json"},
    {"GET", "/docs", h_docs, 0, "This API as a readable page.", "200", "text/html"},
    {"POST", "/alerts", h_alerts, 0, "Alertmanager webhook receiver: logs and counts each alert (bearer token when --alerts-token is set).", "200 400 401 413 415", "application/json"},
    {"POST", "/separate", h_separate, 1, "Upload audio (multipart: file, model_name, two_stems, format, shifts, overlap, wait) and start a separation job.", "200 202 400 401 413 415 422 429 503", "application/json"},
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
