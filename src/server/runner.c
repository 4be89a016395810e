/*
 * runner.c - the worker pool of `demix serve`: N threads take jobs from
 * the queue (queue.c) and run each through the same streaming pipeline as
 * `demix separate`.
 *
 * Each worker owns one dmx_session for the model it ran last (sessions
 * hold per-run scratch memory and are never shared); models come shared
 * and read-only from the cache (modelcache.c). Transient failures (I/O,
 * allocation: srv_transient) are retried with full-jitter backoff
 * (--retries); bad input never is. The per-job wall limit (--job-timeout)
 * cancels through the engine's flag from the progress callback and ends
 * the job failed with code "timeout". Every job error code comes from the
 * table in errors.h, and its message reaches the client without server
 * paths (srv__job_fail). Heavy work on the upload (counting the length of
 * audio whose container does not say it) happens here, in the bounded
 * pool, not on the HTTP thread: the pipeline stops at --max-duration.
 * In the clustered mode a run writes into its attempt's own folder
 * (j->stage) and its stems are renamed into the job's folder once all are
 * complete (artifacts.h), so a worker that lost its lease and still runs
 * never shares a temporary file with the job's new run.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "demix/audio.h"
#include "demix/pipeline.h"
#include "artifacts.h"
#include "jobs_int.h"

static pthread_t *workers;
static int n_workers;

typedef struct worker_state {
    const dmx_model *model; /* the model `session` was made for */
    dmx_session *session;
    int n_threads;
} worker_state;

typedef struct run_ctx {
    srv_job *j;
    double deadline; /* srv_now() limit, 0 = none */
} run_ctx;

/* 1 (and the job cancelled as timed out) once the wall limit has passed. */
static int over_time(run_ctx *x) {
    if (x->deadline <= 0 || srv_now() < x->deadline) return 0;
    x->j->timed_out = 1;
    atomic_store(&x->j->cancel, 1);
    return 1;
}

/* Tests only (the tests/server scripts): DEMIX_TEST_HOLD names a file; while it
 * exists a running job waits at its next progress report, still under its
 * wall limit and still cancellable (DELETE, SIGTERM, a lost lease). A test
 * can so keep a job running, or queued behind it, for as long as it needs,
 * whatever the machine's speed. Read once, before the workers start. */
static const char *test_hold;

static int held(run_ctx *x) {
    while (test_hold && access(test_hold, F_OK) == 0) {
        if (over_time(x) || atomic_load(&x->j->cancel)) return 1;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int on_progress(void *user, int64_t done, int64_t total) {
    run_ctx *x = user;
    /* Keep a little room for encoding so 1.0 means "files written". */
    srv__job_progress(x->j, total > 0 ? 0.95 * (double)done / (double)total : 0);
    return held(x) || over_time(x) || atomic_load(&x->j->cancel);
}

/* The detail of the last engine error, or the status's description. */
static const char *detail(dmx_status st) {
    const char *d = dmx_last_error();
    return *d ? d : dmx_status_str(st);
}

/* The worker's session for model m (re-made when the model changes). */
static int use_model(worker_state *w, srv_job *j, const dmx_model *m) {
    if (w->model == m) return 0;
    dmx_session_free(w->session);
    w->session = NULL;
    w->model = NULL;
    dmx_status st = dmx_session_new(m, &w->session);
    if (st != DMX_OK) {
        srv__job_fail(j, SRV_E_INTERNAL, "cannot create a session: %s", dmx_status_str(st));
        return -1;
    }
    w->model = m;
    return 0;
}

/* A pipeline status as the job's error. */
static srv_job_state fail_with(srv_job *j, dmx_status st, int64_t frames_read) {
    if (st == DMX_ERR_CANCELLED || atomic_load(&j->cancel)) {
        /* a timeout also cancels (through the progress callback); the worker
         * reports j->timed_out jobs as failed with code "timeout" */
        srv__job_fail(j, SRV_E_CANCELLED, "cancelled");
        return JOB_CANCELLED;
    }
    if (st == DMX_ERR_BAD_INPUT) /* the pipeline's only BAD_INPUT: past max_frames */
        srv__job_fail(j, SRV_E_AUDIO_TOO_LONG,
                      "the audio lasts longer than this server's limit of %g s",
                      srv_cfg.max_duration_seconds);
    else if (st == DMX_ERR_DECODE || (st == DMX_ERR_IO && frames_read == 0))
        srv__job_fail(j, SRV_E_UNDECODABLE_AUDIO, "%s", detail(st));
    else if (st == DMX_ERR_ENCODE || st == DMX_ERR_IO)
        srv__job_fail(j, SRV_E_ENCODE_FAILED, "cannot write the stems: %s", detail(st));
    else
        srv__job_fail(j, SRV_E_SEPARATION_FAILED, "%s", detail(st));
    return JOB_FAILED;
}

/* Runs the job; returns its final state. */
static srv_job_state run_job(worker_state *w, srv_job *j) {
    char err[512];
    run_ctx x = {j, 0};
    if (srv_cfg.job_timeout_seconds > 0) x.deadline = srv_now() + srv_cfg.job_timeout_seconds;
    const dmx_model *m = srv_model_get(j->model, j->request_id, err, sizeof err);
    if (!m) {
        srv__job_fail(j, SRV_E_MODEL_UNAVAILABLE, "%s", err);
        return JOB_FAILED;
    }
    if (use_model(w, j, m) < 0) return JOB_FAILED;
    int k2 = -1;
    if (j->two_stems[0] && (k2 = dmx_model_source_index(m, j->two_stems)) < 0) {
        srv__job_fail(j, SRV_E_INVALID_ARGUMENT, "model %s has no source '%s'", j->model,
                      j->two_stems);
        return JOB_FAILED;
    }
    dmx_audio_format fmt;
    if (dmx_audio_format_from_name(j->format, &fmt) != DMX_OK ||
        !dmx_audio_container_available(fmt.container)) {
        srv__job_fail(j, SRV_E_INVALID_ARGUMENT, "output format '%s' is not available", j->format);
        return JOB_FAILED;
    }

    /* The stems to write: all, or STEM and no_STEM (sum of the others, as
     * the CLI's default --other-method add). */
    char names[SRV_JOB_MAX_STEMS + 1][DMX_MAX_STEM_NAME];
    int n_out =
        dmx_file_stems(m, k2 >= 0 ? j->two_stems : NULL, DMX_OTHER_ADD, names, SRV_JOB_MAX_STEMS);
    if (n_out < 1 || n_out > SRV_JOB_MAX_STEMS) {
        srv__job_fail(j, SRV_E_INTERNAL, "cannot name the stems of model %s", j->model);
        return JOB_FAILED;
    }
    char *paths[SRV_JOB_MAX_STEMS] = {0};
    int ok = 1;
    for (int s = 0; s < n_out; s++)
        if (asprintf(&paths[s], "%s/%s.%s", j->stage ? j->stage : j->dir, names[s], j->format) < 0)
            paths[s] = NULL, ok = 0;
    if (!ok) {
        for (int q = 0; q < n_out; q++) free(paths[q]);
        srv__job_fail(j, SRV_E_OUT_OF_MEMORY, "out of memory");
        return JOB_FAILED;
    }

    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.shifts = j->shifts;
    o.overlap = j->overlap;
    o.n_threads = w->n_threads;
    o.progress = on_progress;
    o.progress_user = &x;
    o.cancel = &j->cancel;
    /* the same streaming pipeline as `demix separate` with its defaults
     * (rescale anti-clipping): memory does not grow with the upload, and
     * pass 1 stops just past --max-duration */
    dmx_file_job fj = {
        j->input,      k2 >= 0 ? j->two_stems : NULL,
        DMX_OTHER_ADD, DMX_CLIP_RESCALE,
        fmt,           (const char *const *)paths,
        n_out,         (int64_t)(srv_cfg.max_duration_seconds * dmx_model_samplerate(m))};
    dmx_status st;
    int64_t n = 0;
    double t_inf = srv_now();
    for (int attempt = 0;; attempt++) {
        st = dmx_separate_file(w->session, &fj, &o, &n);
        /* transient failures only (I/O, memory); never bad input */
        if (st == DMX_OK || !srv_transient(st) || attempt >= srv_cfg.retries ||
            atomic_load(&j->cancel))
            break;
        srv_metrics_retry();
        srv_backoff_sleep(attempt, &j->cancel);
    }
    for (int s = 0; s < n_out; s++) free(paths[s]);
    if (st != DMX_OK) return fail_with(j, st, n);
    srv_metrics_inference(j->model, srv_now() - t_inf);
    /* clustered: the attempt's own folder, published (renamed) whole */
    if (j->stage && srv_artifact_publish(j, names, n_out) < 0) {
        srv__job_fail(j, SRV_E_ENCODE_FAILED, "cannot move the stems into place");
        return JOB_FAILED;
    }
    srv__job_set_stems(j, names, n_out);
    return JOB_DONE;
}

static void log_start(const srv_job *j) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "job", j->id);
    cJSON_AddStringToObject(f, "model", j->model);
    srv_log(DMX_LOG_INFO, "demix.jobs", "separation_start", j->request_id, f, "job %s started",
            j->id);
}

/* superseded: the clustered final write did not land (another run owns
 * the job now, or will: its lease expired while the database was away) */
static void log_end(const srv_job *j, srv_job_state st, int requeue, int superseded, double dt) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "job", j->id);
    cJSON_AddStringToObject(f, "model", j->model);
    const char *status = requeue      ? "checkpointed"
                         : superseded ? "superseded"
                                      : srv_job_state_name(st);
    cJSON_AddStringToObject(f, "status", status);
    cJSON_AddNumberToObject(f, "processing_duration_seconds", dt);
    cJSON_AddNumberToObject(f, "audio_seconds", j->audio_seconds);
    if (st != JOB_DONE) cJSON_AddStringToObject(f, "error", j->error);
    if (st != JOB_DONE) cJSON_AddStringToObject(f, "error_code", j->error_code);
    srv_log(st == JOB_FAILED ? DMX_LOG_WARN : DMX_LOG_INFO, "demix.jobs", "separation",
            j->request_id, f, "job %s %s", j->id,
            requeue      ? "checkpointed as queued"
            : superseded ? "ended; its result was dropped (another run owns the job)"
                         : status);
}

static void *worker_main(void *arg) {
    worker_state w = {0};
    w.n_threads = (int)(intptr_t)arg;
    srv_job *j;
    while ((j = srv__queue_take())) {
        srv_metrics_job(j->file_size, j->audio_seconds, j->started - j->created);
        log_start(j);
        double t0 = srv_now();
        srv_job_state st = run_job(&w, j);
        double dt = srv_now() - t0;
        if (st != JOB_DONE && st != JOB_CANCELLED && atomic_load(&j->cancel)) st = JOB_CANCELLED;
        if (st == JOB_CANCELLED && j->timed_out) {
            st = JOB_FAILED;
            srv__job_fail(j, SRV_E_TIMEOUT, "the job ran past its limit of %g s",
                          srv_cfg.job_timeout_seconds);
        }
        int requeue = st == JOB_CANCELLED && atomic_load(&j->shutdown);
        /* Embedded: the event comes before the job reads as finished (a
         * client that saw it finished finds it logged). Clustered: after
         * the final write, which says whether this run's result landed; a
         * run whose result is dropped is not a separation (the run that
         * owns the job counts). */
        int clustered = srv__cluster_on(), superseded = 0;
        if (clustered) superseded = srv__queue_finish(j, st, requeue) != 0;
        if (!requeue && !superseded) srv_metrics_separation(j->model, srv_job_state_name(st), dt);
        log_end(j, st, requeue, superseded, dt);
        if (!clustered) srv__queue_finish(j, st, requeue);
        srv_job_put(j);
    }
    dmx_session_free(w.session);
    return NULL;
}

int srv__runner_start(int n) {
    workers = calloc((size_t)n, sizeof *workers);
    if (!workers) return -1;
    test_hold = getenv("DEMIX_TEST_HOLD");
    if (test_hold && !*test_hold) test_hold = NULL;
    /* demix.h's one rule for dividing the CPUs between the workers */
    int per = dmx_threads_divide(dmx_cpu_count(), n, srv_cfg.threads).threads_per_job;
    for (int i = 0; i < n; i++) {
        if (pthread_create(&workers[i], NULL, worker_main, (void *)(intptr_t)per)) return -1;
        n_workers++;
    }
    return 0;
}

void srv__runner_join(void) {
    for (int i = 0; i < n_workers; i++) pthread_join(workers[i], NULL);
    free(workers);
    workers = NULL;
    n_workers = 0;
}
