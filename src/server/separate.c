/*
 * separate.c - POST /separate: a multipart upload becomes a queued job.
 *
 * The request is read in three stages. While the body streams in,
 * on_post_field stores the file part under DATA_DIR/uploads (bounded by
 * --max-upload-mb) and keeps the text fields as received. When the body
 * is complete, separate_finish runs small steps, each either passing or
 * giving the one error the client gets: the upload's own outcome, the
 * form (srv_separate_parse: pure, the defaults written once), free disk
 * space, the model (known, breaker closed, the two_stems source exists),
 * a probe of the audio (decodable; refused at once if its container says
 * it is too long), the job's folder, and submission (which returns only
 * once the job is durable, else 503/507 and the files go). Nothing heavy
 * runs here: audio whose container does not state its length is counted
 * by the worker (runner.c), in the bounded pool, which fails the job with
 * audio_too_long past --max-duration. Then the answer: 202 with the job,
 * or with wait=true the finished job (or its zip with Accept:
 * application/zip).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "demix/audio.h"
#include "http.h"
#include "demix/repo.h"
#include "separate.h"

/* ---- the form, as data ---------------------------------------------------------- */

const srv_separate_request srv_separate_defaults = {.model = SRV_SEP_DEFAULT_MODEL,
                                                    .two_stems = "",
                                                    .format = SRV_SEP_DEFAULT_FORMAT,
                                                    .shifts = SRV_SEP_DEFAULT_SHIFTS,
                                                    .overlap = SRV_SEP_DEFAULT_OVERLAP,
                                                    .wait = 0};

static int truthy(const char *s) {
    return s && (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes"));
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int invalid(srv_error *code, char *msg, size_t n, const char *text) {
    *code = SRV_E_INVALID_ARGUMENT;
    snprintf(msg, n, "%s", text);
    return -1;
}

int srv_separate_parse(const srv_separate_fields *f, srv_separate_request *q, srv_error *code,
                       char *msg, size_t n) {
    *q = srv_separate_defaults;
    if (f->model_name[0]) {
        if (strlen(f->model_name) >= sizeof q->model)
            return invalid(code, msg, n, "model_name is too long");
        snprintf(q->model, sizeof q->model, "%s", f->model_name);
    }
    if (strlen(f->two_stems) >= sizeof q->two_stems)
        return invalid(code, msg, n, "two_stems is too long");
    snprintf(q->two_stems, sizeof q->two_stems, "%s", f->two_stems);
    if (f->format[0]) {
        if (strcmp(f->format, "wav") && strcmp(f->format, "flac") && strcmp(f->format, "mp3"))
            return invalid(code, msg, n, "format must be wav, flac or mp3");
        snprintf(q->format, sizeof q->format, "%.7s", f->format);
    }
    long shifts = q->shifts;
    if (f->shifts[0] && parse_int(f->shifts, 0, SRV_SEP_MAX_SHIFTS, &shifts))
        return invalid(code, msg, n, "shifts must be 0.." SRV__STR(SRV_SEP_MAX_SHIFTS));
    q->shifts = (int)shifts;
    if (f->overlap[0]) {
        char *end;
        double v = strtod(f->overlap, &end);
        if (end == f->overlap || *end || !(v >= 0 && v < 1))
            return invalid(code, msg, n, "overlap must be in [0, 1)");
        q->overlap = v;
    }
    q->wait = truthy(f->wait);
    snprintf(q->demucs_option, sizeof q->demucs_option, "%s",
             f->shifts[0]    ? "shifts"
             : f->overlap[0] ? "overlap"
                             : "");
    return 0;
}

/* ---- receiving the body ----------------------------------------------------------- */

typedef struct sep_state {
    struct MHD_PostProcessor *pp;
    FILE *upload;
    char *upload_path; /* DATA_DIR/uploads/RANDOM.upload until it becomes a job */
    char *upload_name; /* the client's file name, cleaned */
    int64_t upload_bytes, body_bytes;
    int64_t file_next_off; /* offset the current 'file' part expects next */
    int too_large, write_failed, saw_file, malformed;
    int refusing; /* answer `refuse` once the body is read */
    srv_error refuse;
    char refuse_msg[640];
    char bad_field[SRV_FORM_FIELD]; /* a field given twice or too long: 400 */
    int bad_field_long;             /* 1: too long, 0: given twice */
    srv_separate_fields f;
} sep_state;

/* Ends the request's state; an upload that did not become a job goes. */
static void sep_free(void *p) {
    sep_state *s = p;
    if (!s) return;
    if (s->pp) MHD_destroy_post_processor(s->pp);
    if (s->upload) fclose(s->upload);
    if (s->upload_path) unlink(s->upload_path);
    free(s->upload_path);
    free(s->upload_name);
    free(s);
}

/* The client's file name, kept only to show it back: its last path
 * component, valid UTF-8 without control characters, at most 255 bytes. */
static char *clean_filename(const char *name) {
    const char *b = name;
    for (const char *p = name; *p; p++)
        if ((*p == '/' || *p == '\\') && p[1]) b = p + 1;
    char *s = strndup(b, 255);
    if (s) srv_utf8_clean(s, 1);
    return s;
}

static void store_file_part(srv_req *r, sep_state *s, const char *filename, const char *data,
                            uint64_t off, size_t size) {
    /* A second file part starts again at offset 0: two files in one
     * request would be concatenated into one upload, so refuse it. */
    if (s->saw_file && off == 0 && s->file_next_off > 0 && !s->bad_field[0])
        snprintf(s->bad_field, sizeof s->bad_field, "file");
    s->saw_file = 1;
    s->file_next_off = (int64_t)(off + size);
    if (!s->upload_name && filename) s->upload_name = clean_filename(filename);
    if (s->bad_field[0] || s->too_large || s->write_failed || size == 0) return;
    if ((int64_t)(s->upload_bytes + size) > srv_cfg.max_upload_bytes) {
        /* Keep reading (to answer 413 properly) but stop storing. */
        s->too_large = 1;
        if (s->upload) fclose(s->upload);
        s->upload = NULL;
        return;
    }
    if (!s->upload) {
        /* Named by the server only: a request id is the client's to
         * choose, so two uploads could share it. */
        char name[33];
        if (srv_random_hex(name, 16) < 0 ||
            asprintf(&s->upload_path, "%s/uploads/%s.upload", srv_cfg.data_dir, name) < 0) {
            s->upload_path = NULL;
            s->write_failed = 1;
            return;
        }
        /* x: never overwrite another upload, however unlikely the clash. */
        s->upload = fopen(s->upload_path, "wbx");
        if (!s->upload) {
            free(s->upload_path);
            s->upload_path = NULL;
            s->write_failed = 1;
            return;
        }
    }
    if (fwrite(data, 1, size, s->upload) != size) s->write_failed = 1;
    s->upload_bytes += (int64_t)size;
}

static enum MHD_Result on_post_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *ctype, const char *encoding,
                                     const char *data, uint64_t off, size_t size) {
    (void)kind, (void)ctype, (void)encoding;
    srv_req *r = cls;
    sep_state *s = r->route_state;
    /* A part without a name (MHD passes NULL): nothing we read. */
    if (!key) return MHD_YES;
    if (!strcmp(key, "file")) {
        store_file_part(r, s, filename, data, off, size);
        return MHD_YES;
    }
    srv_separate_fields *f = &s->f;
    char *dst = !strcmp(key, "model_name")  ? f->model_name
                : !strcmp(key, "two_stems") ? f->two_stems
                : !strcmp(key, "format")    ? f->format
                : !strcmp(key, "shifts")    ? f->shifts
                : !strcmp(key, "overlap")   ? f->overlap
                : !strcmp(key, "wait")      ? f->wait
                                            : NULL;
    if (!dst) return MHD_YES; /* unknown fields are ignored */
    size_t have = strlen(dst);
    /* A field given twice (its value restarts at 0) or longer than we keep
     * is refused as a whole rather than silently truncated or defaulted. */
    if ((off == 0 && have > 0) || off != have || have + size >= SRV_FORM_FIELD) {
        if (!s->bad_field[0]) {
            snprintf(s->bad_field, sizeof s->bad_field, "%.64s", key);
            s->bad_field_long = !(off == 0 && have > 0);
        }
        return MHD_YES;
    }
    memcpy(dst + have, data, size);
    dst[have + size] = '\0';
    return MHD_YES;
}

/* ---- the steps once the body is in ---------------------------------------------------- */

/* The one error a request gets. */
typedef struct answer {
    srv_error code;
    char msg[640];
} answer;

static int refuse(answer *a, srv_error code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(answer *a, srv_error code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->msg, sizeof a->msg, fmt, ap);
    va_end(ap);
    a->code = code;
    return -1;
}

static int upload_outcome(sep_state *s, answer *a) {
    if (s->upload) {
        if (fclose(s->upload) != 0) s->write_failed = 1;
        s->upload = NULL;
    }
    if (s->too_large)
        return refuse(a, SRV_E_PAYLOAD_TOO_LARGE, "upload exceeds %lld bytes",
                      (long long)srv_cfg.max_upload_bytes);
    if (s->write_failed) return refuse(a, SRV_E_STORAGE_ERROR, "cannot store the upload");
    if (s->malformed)
        return refuse(a, SRV_E_INVALID_ARGUMENT, "malformed multipart/form-data body");
    if (s->bad_field[0])
        return refuse(a, SRV_E_INVALID_ARGUMENT,
                      s->bad_field_long ? "the field '%s' is longer than %d bytes"
                                        : "the field '%s' is given more than once",
                      s->bad_field, SRV_FORM_FIELD - 1);
    if (!s->saw_file || !s->upload_path)
        return refuse(a, SRV_E_MISSING_FILE,
                      "the multipart field 'file' is required and must not be empty");
    return 0;
}

static int parse_form(const sep_state *s, srv_separate_request *q, answer *a) {
    return srv_separate_parse(&s->f, q, &a->code, a->msg, sizeof a->msg);
}

static int check_disk(answer *a) {
    int64_t free_bytes = 0;
    if (!srv_data_disk_low(&free_bytes)) return 0;
    return refuse(a, SRV_E_INSUFFICIENT_STORAGE,
                  "the server is low on disk space (%lld MiB free, needs %lld); retry later",
                  (long long)(free_bytes >> 20), (long long)(srv_cfg.min_free_disk_bytes >> 20));
}

/* The model exists, takes the options sent, its breaker is not open, and it
 * has the two_stems source. */
static int check_model(const srv_separate_request *q, srv_req *r, answer *a) {
    char *path = srv_models_resolve(q->model);
    if (!path) return refuse(a, SRV_E_UNKNOWN_MODEL, "model '%s' is not available", q->model);
    int msst = q->demucs_option[0] && dmx_repo_is_msst_config(path);
    free(path);
    if (msst)
        return refuse(a, SRV_E_OPTION_NOT_APPLICABLE,
                      "%s does not apply to model '%s', a RoFormer: it runs MSST's chunking with "
                      "its config's chunk_size and inference.num_overlap; send shifts and overlap "
                      "only for Demucs models",
                      q->demucs_option, q->model);
    char breaker[160];
    snprintf(breaker, sizeof breaker, "model:%s", q->model);
    if (srv_breaker_check(breaker, &r->retry_after) < 0)
        return refuse(a, SRV_E_MODEL_UNAVAILABLE,
                      "model '%s' failed to load repeatedly; retry in %d s", q->model,
                      r->retry_after);
    if (!q->two_stems[0]) return 0;
    /* The source names live in the checkpoint: load it now (it is shared
     * and cached, so the job would need it anyway) to refuse an unknown
     * stem while the client is still here. */
    char err[512];
    const dmx_model *m = srv_model_get(q->model, r->request_id, err, sizeof err);
    if (!m) {
        srv_breaker_check(breaker, &r->retry_after);
        return refuse(a, SRV_E_MODEL_UNAVAILABLE, "%s", err);
    }
    if (dmx_model_source_index(m, q->two_stems) >= 0) return 0;
    char list[512] = "";
    size_t k = 0;
    for (int i = 0; i < dmx_model_n_sources(m) && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "",
                              dmx_model_source_name(m, i));
    return refuse(a, SRV_E_UNKNOWN_SOURCE, "model %s has no source '%s' (it has: %s)", q->model,
                  q->two_stems, list);
}

/* Opens the upload as audio (FFmpeg's probe reads a bounded prefix) and
 * takes its length from the container when it states one; *seconds stays
 * 0 when it does not (the worker then counts, stopping at the limit). */
static int probe_audio(const char *path, double *seconds, answer *a) {
    dmx_decoder *dec = NULL;
    dmx_status st = dmx_decoder_open(path, 0, 0, &dec);
    if (st != DMX_OK) {
        char d[512];
        snprintf(d, sizeof d, "%s", *dmx_last_error() ? dmx_last_error() : dmx_status_str(st));
        srv_error_scrub_paths(d); /* the detail names our own file */
        return refuse(a, SRV_E_UNDECODABLE_AUDIO, "the upload is not audio: %s", d);
    }
    int64_t frames = dmx_decoder_duration_hint(dec);
    int32_t rate = dmx_decoder_rate(dec);
    dmx_decoder_close(dec);
    *seconds = frames > 0 && rate > 0 ? (double)frames / rate : 0;
    double limit = srv_cfg.max_duration_seconds;
    if (limit > 0 && *seconds > limit)
        return refuse(a, SRV_E_AUDIO_TOO_LONG,
                      "the audio lasts %.1f s; this server takes at most %g s", *seconds, limit);
    return 0;
}

static int mkdir_one(const char *p) { return mkdir(p, 0755) == 0 || errno == EEXIST ? 0 : -1; }

/* The job, with the upload moved into its folder; NULL on failure. */
static srv_job *make_job(const srv_separate_request *q, sep_state *s, const srv_req *r,
                         double seconds, answer *a) {
    srv_job *j = srv_job_new();
    if (!j) {
        refuse(a, SRV_E_INTERNAL, "cannot create a job");
        return NULL;
    }
    snprintf(j->request_id, sizeof j->request_id, "%s", r->request_id);
    snprintf(j->model, sizeof j->model, "%s", q->model);
    snprintf(j->two_stems, sizeof j->two_stems, "%s", q->two_stems);
    snprintf(j->format, sizeof j->format, "%s", q->format);
    j->shifts = q->shifts;
    j->overlap = q->overlap;
    j->file_size = s->upload_bytes;
    j->audio_seconds = seconds;
    j->upload_name = s->upload_name;
    s->upload_name = NULL;
    if (asprintf(&j->dir, "%s/jobs/%s", srv_cfg.data_dir, j->id) < 0) j->dir = NULL;
    if (!j->dir || mkdir_one(j->dir) < 0 || asprintf(&j->input, "%s/input", j->dir) < 0 ||
        rename(s->upload_path, j->input) < 0) {
        if (j->dir) rmdir(j->dir);
        srv_job_put(j);
        refuse(a, SRV_E_STORAGE_ERROR, "cannot store the job");
        return NULL;
    }
    free(s->upload_path);
    s->upload_path = NULL;
    return j;
}

/* Queues the job once durable; on failure its files and the job go. */
static int submit(srv_job *j, answer *a) {
    srv_error why;
    if (srv_job_submit(j, &why) == 0) return 0;
    unlink(j->input);
    rmdir(j->dir);
    srv_job_put(j);
    switch (why) {
        case SRV_E_QUEUE_FULL: return refuse(a, why, "the job queue is full; retry later");
        case SRV_E_SHUTTING_DOWN: return refuse(a, why, "the server is shutting down; retry later");
        case SRV_E_INSUFFICIENT_STORAGE:
            return refuse(a, why, "the server's disk is full: the job could not be stored");
        default:
            return refuse(a, SRV_E_STORE_UNAVAILABLE, "the job could not be stored; retry later");
    }
}

static void log_queued(const srv_req *r, const srv_job *j) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "job", j->id);
    cJSON_AddStringToObject(f, "model", j->model);
    cJSON_AddNumberToObject(f, "file_size_bytes", (double)j->file_size);
    srv_log(DMX_LOG_INFO, "demix.jobs", "job_queued", r->request_id, f, "job %s queued", j->id);
}

static int wants_zip(struct MHD_Connection *c) {
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
    return a && strstr(a, "application/zip") != NULL;
}

/* 202 with the job, or with wait the finished job (or its zip). Takes j. */
static enum MHD_Result respond_job(struct MHD_Connection *c, srv_req *r, srv_job *j, int wait) {
    char loc[64];
    snprintf(loc, sizeof loc, "/jobs/%s", j->id);
    if (wait) r->endpoint = SRV_ENDPOINT_SEPARATE_WAIT; /* kept out of the latency panel */
    if (wait && srv_job_wait(j) < 0) {
        srv_job_put(j);
        return srv_respond_error(c, r, srv_error_code(SRV_E_SHUTTING_DOWN),
                                 "the server is shutting down; job %s stays queued", loc + 6);
    }
    /* Accept: application/zip gets the stems themselves when they exist;
     * a failed job still answers with its JSON, which says why. */
    if (wait && wants_zip(c) && srv_job_is_done(j)) return srv_send_zip(c, r, j);
    cJSON *o = srv_job_json(j);
    srv_job_put(j);
    return srv_respond_json(c, r, wait ? 200 : 202, o, "Location", loc);
}

static enum MHD_Result separate_finish(struct MHD_Connection *c, srv_req *r) {
    sep_state *s = r->route_state;
    answer a;
    srv_separate_request q;
    double seconds = 0;
    srv_job *j = NULL;
    if (upload_outcome(s, &a) < 0 || parse_form(s, &q, &a) < 0 || check_disk(&a) < 0 ||
        check_model(&q, r, &a) < 0 || probe_audio(s->upload_path, &seconds, &a) < 0 ||
        !(j = make_job(&q, s, r, seconds, &a)) || submit(j, &a) < 0)
        return srv_respond_error(c, r, srv_error_code(a.code), "%s", a.msg);
    log_queued(r, j);
    const char *qw = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait");
    return respond_job(c, r, j, q.wait || truthy(qw));
}

/* ---- the handler ---------------------------------------------------------------------- */

static void refuse_after_body(sep_state *s, srv_error code, const char *msg) {
    s->refusing = 1;
    s->refuse = code;
    snprintf(s->refuse_msg, sizeof s->refuse_msg, "%s", msg);
}

/* First call: rate limit and what the headers alone decide. */
static enum MHD_Result separate_begin(struct MHD_Connection *c, srv_req *r) {
    sep_state *s = calloc(1, sizeof *s);
    if (!s) return MHD_NO;
    r->route_state = s;
    r->route_state_free = sep_free;
    /* Rate limit before reading a byte of the upload. */
    int remaining, reset, retry;
    int ok = srv_ratelimit_take(r->client, &remaining, &reset, &retry);
    if (srv_cfg.rate_per_minute > 0) {
        /* draft-ietf-httpapi-ratelimit-headers: quota per window (s). */
        srv_req_header(r, "RateLimit-Policy", "%d;w=%d;burst=%d", (int)srv_cfg.rate_per_minute, 60,
                       srv_cfg.rate_burst);
        srv_req_header(r, "RateLimit", "limit=%d, remaining=%d, reset=%d", srv_cfg.rate_burst,
                       remaining, reset);
    }
    if (!ok) {
        r->retry_after = retry;
        srv_metrics_rate_limited();
        return srv_respond_error(c, r, srv_error_code(SRV_E_RATE_LIMITED),
                                 "too many separation requests from %s; retry in %d s", r->client,
                                 retry);
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoll(cl, NULL, 10) > srv_cfg.max_upload_bytes + 64 * 1024)
        return srv_respond_error(c, r, srv_error_code(SRV_E_PAYLOAD_TOO_LARGE),
                                 "upload exceeds %lld bytes", (long long)srv_cfg.max_upload_bytes);
    /* A body of acceptable size is read (and dropped) before these answers:
     * answering first makes libmicrohttpd close the connection while the
     * client is still sending, which it sees as a broken pipe instead of
     * the answer. */
    answer a;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct || strncasecmp(ct, "multipart/form-data", 19))
        refuse_after_body(s, SRV_E_UNSUPPORTED_MEDIA_TYPE,
                          "POST /separate takes multipart/form-data");
    else if (check_disk(&a) < 0)
        refuse_after_body(s, a.code, a.msg);
    else if (!(s->pp = MHD_create_post_processor(c, 64 * 1024, on_post_field, r)))
        refuse_after_body(s, SRV_E_UNSUPPORTED_MEDIA_TYPE,
                          "malformed multipart/form-data (boundary missing?)");
    return MHD_YES;
}

enum MHD_Result srv_h_separate(struct MHD_Connection *c, srv_req *r, const char *upload,
                               size_t *upload_size) {
    if (!r->started_upload) {
        r->started_upload = 1;
        return separate_begin(c, r);
    }
    sep_state *s = r->route_state;
    s->body_bytes += (int64_t)*upload_size;
    if (s->refusing) {
        if (s->body_bytes > srv_cfg.max_upload_bytes + 64 * 1024) /* chunked, unbounded */
            return srv_respond_error(c, r, srv_error_code(SRV_E_PAYLOAD_TOO_LARGE),
                                     "upload exceeds %lld bytes",
                                     (long long)srv_cfg.max_upload_bytes);
        if (*upload_size) {
            *upload_size = 0;
            return MHD_YES;
        }
        return srv_respond_error(c, r, srv_error_code(s->refuse), "%s", s->refuse_msg);
    }
    if (*upload_size) {
        /* Past the limit the rest is read only to answer 413 (MHD cannot
         * answer before the body is in); a body far past it (chunked, so
         * no Content-Length to refuse up front) is cut off instead. */
        if (s->too_large && s->body_bytes > 2 * srv_cfg.max_upload_bytes + (1 << 20)) {
            srv_log(DMX_LOG_WARN, "demix.http", "error", r->request_id, NULL,
                    "upload far past the limit: connection closed");
            return MHD_NO;
        }
        if (!s->malformed && MHD_post_process(s->pp, upload, *upload_size) != MHD_YES)
            s->malformed = 1;
        *upload_size = 0;
        return MHD_YES;
    }
    return separate_finish(c, r);
}
