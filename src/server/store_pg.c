/*
 * store_pg.c - the job store (store.h) in PostgreSQL through libpq:
 * `--store postgresql://USER@HOST/DB?...` (any libpq connection URI).
 *
 * The same table as store_sqlite.c (one row per job, keyed by id) plus the
 * shared queue of the clustered mode (store.h's srv__cluster_vt: claim,
 * renew, conditional finish, reap, NOTIFY and LISTEN, the workers table,
 * advisory locks; cluster.c holds the policy). In the clustered mode (every
 * postgresql:// store) cluster.c writes through the queue statements; the
 * save/load/delete calls of the table and the outage keeping below serve
 * the embedded-style callers. Every value is a statement parameter
 * (PQexecParams, text format); only the fixed schema DDL is sent as plain
 * text. The LISTEN connection is a second one, used by the listener thread
 * alone.
 *
 * Schema: checked on every (re)connection; created or migrated only when
 * schema_version is older, inside a transaction holding a
 * transaction-scoped advisory lock, so nodes starting together do not race
 * (and a running cluster takes no DDL lock); schema_version holds one row
 * with the version.
 *
 * The connection going away (a database restart, a network cut): libpq
 * reports CONNECTION_BAD after the failed statement; the next call
 * reconnects at once, then with a doubling backoff (0.2 s .. 5 s) while the
 * server stays away. Meanwhile calls fail fast (-1: submissions answer
 * 503, /readyz says not ready) and the process keeps running. A state
 * change of an accepted job (running, done, failed, cancelled) or a delete
 * that could not be written is kept in memory, latest per job, and written
 * on reconnection, so a job accepted before the outage ends in the database
 * as it ended in the service. A queued row is never kept (that is the
 * submission, refused with 503, or a checkpoint whose stored "running" row
 * a restart re-queues anyway). TCP keepalives and tcp_user_timeout bound how
 * long a statement waits on a dead peer.
 *
 * One connection, serialised by pg_lock (the write rate is a few rows per
 * job). Callers hold queue.c's jobs lock around saves, so a connection
 * attempt (connect_timeout 5 s) can hold them that long, at most once per
 * backoff period.
 */
#define _GNU_SOURCE
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include "store.h"

#define N_COLS      17
#define MAX_PENDING 4096

static PGconn *conn;
static char *uri;
static pthread_mutex_t pg_lock = PTHREAD_MUTEX_INITIALIZER;
static double next_try, backoff; /* monotonic seconds */
static int was_down;
static double ready_checked; /* last /readyz ping, monotonic */
static int ready_cached;

/* A row (or a delete) that could not be written while disconnected. */
typedef struct pending {
    char id[64];
    int del;
    char *vals[N_COLS];
} pending;
static pending *pend;
static int n_pend;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void log_pg(const char *what, const char *detail) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "type", "storage");
    cJSON_AddStringToObject(f, "detail", detail ? detail : "?");
    srv_log(DMX_LOG_ERROR, "demix.store", "error", NULL, f, "postgresql: %s failed", what);
}

/* The tables, indexes and columns of SRV_STORE_PG_SCHEMA_VERSION, each
 * idempotent; run only when the version is older (ALTER TABLE takes the
 * table's exclusive lock even when the column exists: run on every
 * connection, it deadlocked with other nodes' claims). */
static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);"
    "CREATE TABLE IF NOT EXISTS jobs ("
    " id text PRIMARY KEY, request_id text, model text NOT NULL, two_stems text,"
    " format text NOT NULL, shifts integer, overlap double precision, upload_name text,"
    " state text NOT NULL, error text, error_code text, stems text,"
    " file_size bigint, audio_seconds double precision,"
    " created double precision, started double precision, finished double precision);"
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);"
    /* 2: the shared queue */
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS progress double precision NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS worker_id text;"
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS lease_expires double precision;"
    "CREATE INDEX IF NOT EXISTS jobs_queued ON jobs(created, id) WHERE state = 'queued';"
    "CREATE INDEX IF NOT EXISTS jobs_leases ON jobs(lease_expires) WHERE state = 'running';"
    "CREATE TABLE IF NOT EXISTS workers (worker_id text PRIMARY KEY, host text, pid integer,"
    " role text, started double precision, last_heartbeat double precision NOT NULL);";

/* The version the database holds: 0 without a schema_version table (or a
 * row in it), -1 when it cannot be read. */
static int schema_version_read(void) {
    PGresult *r = PQexec(conn, "SELECT to_regclass('schema_version') IS NOT NULL");
    int v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                ? !strcmp(PQgetvalue(r, 0, 0), "t")
                : -1;
    PQclear(r);
    if (v <= 0) return v;
    r = PQexec(conn, "SELECT coalesce(max(version), 0) FROM schema_version");
    v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

/* Creates or upgrades the schema when it is older than ours (under
 * pg_lock, connected): in one transaction holding a transaction-scoped
 * advisory lock, the version read again inside it, so nodes starting
 * together migrate once. */
static int schema_migrate(void) {
    int v = schema_version_read();
    if (v < 0) {
        log_pg("reading schema_version", PQerrorMessage(conn));
        return -1;
    }
    if (v > SRV_STORE_PG_SCHEMA_VERSION) {
        srv_log(DMX_LOG_ERROR, "demix.store", "error", NULL, NULL,
                "postgresql: the database has schema version %d, newer than this demix (%d)", v,
                SRV_STORE_PG_SCHEMA_VERSION);
        return -1;
    }
    if (v == SRV_STORE_PG_SCHEMA_VERSION) return 0;
    PGresult *r = PQexec(conn, "BEGIN; SET LOCAL lock_timeout = '30s';"
                               " SELECT pg_advisory_xact_lock(7314002)");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    if (ok) v = schema_version_read();
    if (ok && v < SRV_STORE_PG_SCHEMA_VERSION) {
        r = PQexec(conn, SCHEMA);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        /* 0 or 1 -> 2: the DDL made the tables and columns; later versions
         * add their steps here. */
        char ver[16];
        snprintf(ver, sizeof ver, "%d", SRV_STORE_PG_SCHEMA_VERSION);
        const char *p[1] = {ver};
        if (ok) {
            r = PQexecParams(conn,
                             "INSERT INTO schema_version (version) SELECT $1::integer"
                             " WHERE NOT EXISTS (SELECT 1 FROM schema_version)",
                             1, NULL, p, NULL, NULL, 0);
            ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            PQclear(r);
        }
        if (ok) {
            r = PQexecParams(conn, "UPDATE schema_version SET version = $1::integer", 1, NULL, p,
                             NULL, NULL, 0);
            ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            PQclear(r);
        }
    }
    if (ok) {
        r = PQexec(conn, "COMMIT");
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    if (!ok) {
        log_pg("schema creation", PQerrorMessage(conn));
        PQclear(PQexec(conn, "ROLLBACK"));
    }
    return ok ? 0 : -1;
}

static void pending_free(pending *p) {
    for (int i = 0; i < N_COLS; i++) free(p->vals[i]);
    memset(p, 0, sizeof *p);
}

static int exec_row(const char *const *vals);
static int exec_delete(const char *id);

/* Writes what waited for the connection, oldest first; stops at the first
 * failure (the rest waits for the next reconnection). */
static void pending_flush(void) {
    static int flushing; /* a reconnection inside the flush must not flush again */
    if (flushing) return;
    flushing = 1;
    int k = 0;
    for (; k < n_pend; k++) {
        int rc =
            pend[k].del ? exec_delete(pend[k].id) : exec_row((const char *const *)pend[k].vals);
        if (rc < 0 && PQstatus(conn) != CONNECTION_OK) break;
        pending_free(&pend[k]);
    }
    if (k > 0) {
        memmove(pend, pend + k, (size_t)(n_pend - k) * sizeof *pend);
        n_pend -= k;
        srv_log(DMX_LOG_INFO, "demix.store", "store_flushed", NULL, NULL,
                "postgresql: wrote %d job change(s) kept during the outage", k);
    }
    flushing = 0;
}

/* A new connection to uri (check PQstatus): the URI first (expand_dbname),
 * then our settings on top of it. */
static PGconn *connect_new(void) {
    const char *kw[] = {"dbname",           "connect_timeout",     "keepalives",
                        "keepalives_idle",  "keepalives_interval", "keepalives_count",
                        "tcp_user_timeout", "application_name",    "options",
                        NULL};
    /* no NOTICEs on stderr (the idempotent DDL raises "already exists") */
    const char *val[] = {uri,     "5",     "1", "10", "5", "3", "15000", "demix",
                         "-c client_min_messages=warning", NULL};
    return PQconnectdbParams(kw, val, 1);
}

/* Connected, or reconnects if the backoff allows: 1 if usable (under pg_lock). */
static int ensure_conn(void) {
    if (conn && PQstatus(conn) == CONNECTION_OK) return 1;
    double now = mono();
    if (now < next_try) return 0;
    if (conn) PQfinish(conn);
    conn = connect_new();
    if (PQstatus(conn) != CONNECTION_OK || schema_migrate() < 0) {
        if (!was_down) log_pg("connection", conn ? PQerrorMessage(conn) : "out of memory");
        was_down = 1;
        PQfinish(conn);
        conn = NULL;
        backoff = backoff <= 0 ? 0.2 : backoff * 2 > 5 ? 5 : backoff * 2;
        next_try = now + backoff;
        return 0;
    }
    backoff = 0;
    next_try = 0;
    if (was_down)
        srv_log(DMX_LOG_INFO, "demix.store", "store_reconnected", NULL, NULL,
                "postgresql: connected again");
    was_down = 0;
    if (n_pend) pending_flush();
    return 1;
}

/* Runs a statement; on a lost connection, reconnects once and retries (the
 * usual case after a database restart: the old socket is dead, the server
 * is back). The result, or NULL if not connected. A statement may so run
 * twice when the connection died after its commit: the shared queue's
 * statements allow it (submit: ON CONFLICT DO NOTHING; renew: the same
 * lease; finish: an already written row counts as written; claim: a row
 * claimed and lost is re-queued when its lease expires). */
static PGresult *run(const char *sql, int n, const char *const *vals) {
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!ensure_conn()) return NULL;
        PGresult *r = PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
        if (PQstatus(conn) == CONNECTION_OK) return r;
        PQclear(r);
        if (!was_down) log_pg("statement (connection lost)", PQerrorMessage(conn));
        was_down = 1;
        next_try = 0; /* reconnect at once, then back off */
    }
    return NULL;
}

static int result_status(PGresult *r, const char *what) {
    if (!r) return -1;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return 0;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    log_pg(what, PQresultErrorMessage(r));
    /* 53100 disk_full, 53200 out_of_memory: the 507 case. */
    return state && !strcmp(state, "53100") ? SRV_STORE_FULL : -1;
}

static int exec_row(const char *const *vals) {
    static const char SQL[] =
        "INSERT INTO jobs (id, request_id, model, two_stems, format, shifts, overlap,"
        " upload_name, state, error, error_code, stems, file_size, audio_seconds, created,"
        " started, finished) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)"
        " ON CONFLICT (id) DO UPDATE SET request_id = EXCLUDED.request_id,"
        " model = EXCLUDED.model, two_stems = EXCLUDED.two_stems, format = EXCLUDED.format,"
        " shifts = EXCLUDED.shifts, overlap = EXCLUDED.overlap,"
        " upload_name = EXCLUDED.upload_name, state = EXCLUDED.state, error = EXCLUDED.error,"
        " error_code = EXCLUDED.error_code, stems = EXCLUDED.stems,"
        " file_size = EXCLUDED.file_size, audio_seconds = EXCLUDED.audio_seconds,"
        " created = EXCLUDED.created, started = EXCLUDED.started, finished = EXCLUDED.finished";
    PGresult *r = run(SQL, N_COLS, vals);
    int rc = result_status(r, "save");
    PQclear(r);
    return rc;
}

static int exec_delete(const char *id) {
    const char *p[1] = {id};
    PGresult *r = run("DELETE FROM jobs WHERE id = $1", 1, p);
    int rc = result_status(r, "delete");
    PQclear(r);
    return rc;
}

/* Keeps a change for the reconnection; the latest per job wins. */
static void pending_keep(const char *id, int del, char *const *vals) {
    int k = 0;
    while (k < n_pend && strcmp(pend[k].id, id)) k++;
    if (k < n_pend) {
        pending_free(&pend[k]);
        memmove(pend + k, pend + k + 1, (size_t)(n_pend - k - 1) * sizeof *pend);
        n_pend--;
    }
    if (!pend && !(pend = calloc(MAX_PENDING, sizeof *pend))) return;
    if (n_pend == MAX_PENDING) {
        log_pg("keeping a change during the outage", "too many kept; the oldest is dropped");
        pending_free(&pend[0]);
        memmove(pend, pend + 1, (size_t)(n_pend - 1) * sizeof *pend);
        n_pend--;
    }
    pending *p = &pend[n_pend++];
    memset(p, 0, sizeof *p);
    snprintf(p->id, sizeof p->id, "%s", id);
    p->del = del;
    for (int i = 0; i < N_COLS && vals; i++) p->vals[i] = vals[i] ? strdup(vals[i]) : NULL;
}

static int pg_open(const char *target) {
    pthread_mutex_lock(&pg_lock);
    free(uri);
    uri = strdup(target);
    next_try = 0;
    int ok = uri && ensure_conn();
    pthread_mutex_unlock(&pg_lock);
    return ok ? 0 : -1;
}

static PGconn *lconn;

static void pg_close(void) {
    if (lconn) PQfinish(lconn); /* the waiting thread has been joined */
    lconn = NULL;
    pthread_mutex_lock(&pg_lock);
    if (conn) {
        if (n_pend) pending_flush();
        PQfinish(conn);
    }
    conn = NULL;
    for (int k = 0; k < n_pend; k++) pending_free(&pend[k]);
    if (n_pend)
        log_pg("writing kept changes at shutdown", "the database is away; a restart re-runs them");
    free(pend);
    pend = NULL;
    n_pend = 0;
    free(uri);
    uri = NULL;
    pthread_mutex_unlock(&pg_lock);
}

/* The N_COLS statement values of j's row; stems and num are their storage. */
static void row_vals(const srv_job *j, char *vals[N_COLS], char stems[SRV_JOB_MAX_STEMS * 81],
                     char num[8][32]) {
    srv__store_join_stems(j, stems, SRV_JOB_MAX_STEMS * 81);
    snprintf(num[0], sizeof num[0], "%d", j->shifts);
    snprintf(num[1], sizeof num[1], "%.17g", j->overlap);
    snprintf(num[2], sizeof num[2], "%lld", (long long)j->file_size);
    snprintf(num[3], sizeof num[3], "%.17g", j->audio_seconds);
    snprintf(num[4], sizeof num[4], "%.17g", j->created);
    snprintf(num[5], sizeof num[5], "%.17g", j->started);
    snprintf(num[6], sizeof num[6], "%.17g", j->finished);
    char *v[N_COLS] = {(char *)j->id,
                       (char *)j->request_id,
                       (char *)j->model,
                       (char *)j->two_stems,
                       (char *)j->format,
                       num[0],
                       num[1],
                       j->upload_name ? j->upload_name : "",
                       (char *)srv_job_state_name(j->state),
                       (char *)j->error,
                       (char *)j->error_code,
                       stems,
                       num[2],
                       num[3],
                       num[4],
                       num[5],
                       num[6]};
    memcpy(vals, v, sizeof v);
}

static int pg_save(const srv_job *j) {
    char stems[SRV_JOB_MAX_STEMS * 81], num[8][32], *vals[N_COLS];
    row_vals(j, vals, stems, num);
    pthread_mutex_lock(&pg_lock);
    int rc = exec_row((const char *const *)vals);
    if (rc < 0 && !(conn && PQstatus(conn) == CONNECTION_OK) && j->state != JOB_QUEUED)
        pending_keep(j->id, 0, vals);
    pthread_mutex_unlock(&pg_lock);
    return rc;
}

static int pg_delete(const char *id) {
    pthread_mutex_lock(&pg_lock);
    int rc = exec_delete(id);
    if (rc < 0 && !(conn && PQstatus(conn) == CONNECTION_OK)) pending_keep(id, 1, NULL);
    pthread_mutex_unlock(&pg_lock);
    return rc;
}

/* The job columns every query returns, in parse_row's order (alias j). */
#define JOB_COLS                                                                            \
    "j.id, j.request_id, j.model, j.two_stems, j.format, j.shifts, j.overlap, j.upload_name," \
    " j.state, j.error, j.error_code, j.stems, j.file_size, j.audio_seconds, j.created,"     \
    " j.started, j.finished, j.progress, j.attempts"
#define N_JOB_COLS 19
/* and, after them, a queued job's place (1 = next to run) */
#define QUEUE_POS_COL                                                                       \
    ", CASE WHEN j.state = 'queued' THEN (SELECT count(*) FROM jobs q WHERE"              \
    " q.state = 'queued' AND (q.created, q.id) <= (j.created, j.id)) ELSE 0 END"

/* Row `row` of r as a new job (refs 0), or NULL (out of memory). */
static srv_job *parse_row(PGresult *r, int row) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    int k = 0;
#define COL() PQgetvalue(r, row, k++)
    snprintf(j->id, sizeof j->id, "%s", COL());
    snprintf(j->request_id, sizeof j->request_id, "%s", COL());
    snprintf(j->model, sizeof j->model, "%s", COL());
    snprintf(j->two_stems, sizeof j->two_stems, "%s", COL());
    snprintf(j->format, sizeof j->format, "%s", COL());
    j->shifts = atoi(COL());
    j->overlap = strtod(COL(), NULL);
    const char *un = COL();
    j->upload_name = *un ? strdup(un) : NULL;
    j->state = srv__store_state_from_name(COL());
    snprintf(j->error, sizeof j->error, "%s", COL());
    snprintf(j->error_code, sizeof j->error_code, "%s", COL());
    srv__store_split_stems(j, COL());
    j->file_size = strtoll(COL(), NULL, 10);
    j->audio_seconds = strtod(COL(), NULL);
    j->created = strtod(COL(), NULL);
    j->started = strtod(COL(), NULL);
    j->finished = strtod(COL(), NULL);
    j->progress = strtod(COL(), NULL);
    j->attempts = atoi(COL());
    if (PQnfields(r) > N_JOB_COLS) j->queue_pos = atoi(COL());
#undef COL
    return j;
}

/* Hands each row of r, parsed, to fn (which takes it) until fn returns < 0.
 * Returns the rows handed over, or -1 when r is an error. */
static int each_job_row(PGresult *r, const char *what, int (*fn)(void *user, srv_job *j),
                        void *user) {
    if (result_status(r, what) < 0) return -1;
    int n = 0;
    for (int row = 0; row < PQntuples(r); row++) {
        srv_job *j = parse_row(r, row);
        if (!j) break;
        n++;
        if (fn(user, j) < 0) break;
    }
    return n;
}

static int pg_load(int (*fn)(void *user, srv_job *j), void *user, int limit) {
    static const char SQL[] =
        "SELECT " JOB_COLS " FROM jobs j ORDER BY " SRV_STORE_LOAD_ORDER " LIMIT $1";
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[1] = {lim};
    pthread_mutex_lock(&pg_lock);
    PGresult *r = run(SQL, 1, p);
    int n = each_job_row(r, "load", fn, user);
    PQclear(r);
    pthread_mutex_unlock(&pg_lock);
    return n;
}

static int pg_delete_past(int keep) {
    static const char SQL[] = SRV_STORE_DELETE_PAST("$1::integer");
    char k[16];
    snprintf(k, sizeof k, "%d", keep);
    const char *p[1] = {k};
    pthread_mutex_lock(&pg_lock);
    PGresult *r = run(SQL, 1, p);
    int n = result_status(r, "delete past the history") < 0 ? -1 : atoi(PQcmdTuples(r));
    PQclear(r);
    pthread_mutex_unlock(&pg_lock);
    return n;
}

/* /readyz asks on every probe: one round trip at most once a second. */
static int pg_ready(void) {
    pthread_mutex_lock(&pg_lock);
    double now = mono();
    if (now - ready_checked >= 1.0 || !ready_cached) {
        PGresult *r = run("SELECT 1", 0, NULL);
        ready_cached = r && PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        ready_checked = now;
    }
    int ok = ready_cached;
    pthread_mutex_unlock(&pg_lock);
    return ok;
}

/* ---- the shared queue (store.h: srv__cluster_vt) ------------------------------------ */

#define NOW_SQL "extract(epoch from now())::float8"

/* Runs a statement under pg_lock: the result (NULL when not connected). */
static PGresult *run_locked(const char *sql, int n, const char *const *vals) {
    pthread_mutex_lock(&pg_lock);
    PGresult *r = run(sql, n, vals);
    pthread_mutex_unlock(&pg_lock);
    return r;
}

static int pg_submit(const srv_job *j) {
    static const char SQL[] =
        "WITH ins AS (INSERT INTO jobs (id, request_id, model, two_stems, format, shifts, overlap,"
        " upload_name, state, error, error_code, stems, file_size, audio_seconds, created,"
        " started, finished) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)"
        " ON CONFLICT (id) DO NOTHING"
        " RETURNING id) SELECT pg_notify('" SRV_STORE_CHANNEL "', id) FROM ins";
    char stems[SRV_JOB_MAX_STEMS * 81], num[8][32], *vals[N_COLS];
    row_vals(j, vals, stems, num);
    PGresult *r = run_locked(SQL, N_COLS, (const char *const *)vals);
    int rc = result_status(r, "submit");
    PQclear(r);
    return rc;
}

static int pg_claim(const char *worker, double lease_s, srv_job **out) {
    static const char SQL[] =
        "UPDATE jobs j SET state = 'running', worker_id = $1, attempts = j.attempts + 1,"
        " lease_expires = " NOW_SQL " + $2::float8, started = " NOW_SQL ", progress = 0,"
        " error = '', error_code = ''"
        " WHERE j.id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY created, id"
        " LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING " JOB_COLS;
    char ls[32];
    snprintf(ls, sizeof ls, "%.17g", lease_s);
    const char *p[2] = {worker, ls};
    PGresult *r = run_locked(SQL, 2, p);
    int rc = result_status(r, "claim");
    if (rc == 0) rc = PQntuples(r) == 1;
    if (rc == 1 && !(*out = parse_row(r, 0))) rc = -1;
    PQclear(r);
    return rc;
}

static int pg_renew(const srv_job *j, const char *worker, double lease_s, double progress) {
    static const char SQL[] =
        "UPDATE jobs SET lease_expires = " NOW_SQL " + $3::float8, progress = $4::float8"
        " WHERE id = $1 AND worker_id = $2 AND attempts = $5::integer AND state = 'running'";
    char ls[32], pr[32], at[16];
    snprintf(ls, sizeof ls, "%.17g", lease_s);
    snprintf(pr, sizeof pr, "%.17g", progress);
    snprintf(at, sizeof at, "%d", j->attempts);
    const char *p[5] = {j->id, worker, ls, pr, at};
    PGresult *r = run_locked(SQL, 5, p);
    int rc = result_status(r, "lease renewal");
    if (rc == 0) rc = atoi(PQcmdTuples(r)) == 1 ? 0 : 1;
    PQclear(r);
    return rc < 0 ? -1 : rc;
}

static int pg_finish(const srv_job *j, const char *worker, int requeue) {
    static const char DONE[] =
        "UPDATE jobs SET state = $4, error = $5, error_code = $6, stems = $7,"
        " progress = $8::float8, finished = " NOW_SQL ", worker_id = NULL, lease_expires = NULL"
        " WHERE id = $1 AND worker_id = $2 AND attempts = $3::integer AND state = 'running'";
    static const char BACK[] =
        "WITH b AS (UPDATE jobs SET state = 'queued', attempts = attempts - 1, progress = 0,"
        " started = 0, worker_id = NULL, lease_expires = NULL"
        " WHERE id = $1 AND worker_id = $2 AND attempts = $3::integer AND state = 'running'"
        " RETURNING id) SELECT pg_notify('" SRV_STORE_CHANNEL "', id) FROM b";
    char at[16], stems[SRV_JOB_MAX_STEMS * 81], pr[32];
    snprintf(at, sizeof at, "%d", j->attempts);
    srv__store_join_stems(j, stems, sizeof stems);
    snprintf(pr, sizeof pr, "%.17g", j->state == JOB_DONE ? 1.0 : j->progress);
    const char *p[8] = {j->id,   worker,       at,    srv_job_state_name(j->state),
                        j->error, j->error_code, stems, pr};
    pthread_mutex_lock(&pg_lock);
    PGresult *r = run(requeue ? BACK : DONE, requeue ? 3 : 8, p);
    int rc = result_status(r, "final write");
    if (rc == 0 && (requeue ? PQntuples(r) : atoi(PQcmdTuples(r))) != 1) {
        /* Not ours any more (taken over, or deleted), or already written:
         * run() sends a statement again after a reconnection, and the first
         * may have committed before the connection died. Already written
         * means the row holds what this write writes, at this attempt (a
         * claim since would have counted one more). */
        PQclear(r);
        const char *q[4] = {j->id, requeue ? "queued" : srv_job_state_name(j->state), at,
                            j->error_code};
        r = run("SELECT state = $2 AND error_code = $4 AND attempts = $3::integer -"
                " (CASE WHEN $2 = 'queued' THEN 1 ELSE 0 END) FROM jobs WHERE id = $1",
                4, q);
        rc = result_status(r, "final write") < 0 ? -1
             : !PQntuples(r)                     ? 2
             : !strcmp(PQgetvalue(r, 0, 0), "t") ? 0
                                                 : 1;
    }
    PQclear(r);
    pthread_mutex_unlock(&pg_lock);
    return rc < 0 ? -1 : rc;
}

static int pg_get(const char *id, srv_job **out) {
    static const char SQL[] = "SELECT " JOB_COLS QUEUE_POS_COL " FROM jobs j WHERE j.id = $1";
    const char *p[1] = {id};
    PGresult *r = run_locked(SQL, 1, p);
    int rc = result_status(r, "get");
    if (rc == 0) rc = PQntuples(r) == 1;
    if (rc == 1 && !(*out = parse_row(r, 0))) rc = -1;
    PQclear(r);
    return rc < 0 ? -1 : rc;
}

static int pg_list(int limit, int offset, int (*fn)(void *user, srv_job *j), void *user,
                   int *total) {
    static const char SQL[] = "SELECT " JOB_COLS QUEUE_POS_COL ", count(*) OVER ()"
                              " FROM jobs j ORDER BY j.created DESC, j.id DESC LIMIT $1 OFFSET $2";
    char lim[16], off[16];
    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(off, sizeof off, "%d", offset);
    const char *p[2] = {lim, off};
    pthread_mutex_lock(&pg_lock);
    PGresult *r = run(SQL, 2, p);
    int n = each_job_row(r, "list", fn, user);
    /* count(*) OVER (): the same on every row */
    *total = n > 0 ? atoi(PQgetvalue(r, 0, N_JOB_COLS + 1)) : 0;
    PQclear(r);
    if (n == 0 && offset > 0) { /* past the end: the total still counts */
        r = run("SELECT count(*) FROM jobs", 0, NULL);
        if (result_status(r, "list") == 0) *total = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    pthread_mutex_unlock(&pg_lock);
    return n;
}

static int pg_remove(const char *id, int *was_running) {
    const char *p[1] = {id};
    PGresult *r = run_locked("DELETE FROM jobs WHERE id = $1 RETURNING state", 1, p);
    int rc = result_status(r, "delete");
    if (rc == 0) rc = PQntuples(r) == 1;
    *was_running = rc == 1 && !strcmp(PQgetvalue(r, 0, 0), "running");
    PQclear(r);
    return rc < 0 ? -1 : rc;
}

static int pg_reap(int max_attempts, int *requeued, int *failed) {
    static const char SQL[] =
        "WITH x AS (SELECT id FROM jobs WHERE state = 'running' AND lease_expires < " NOW_SQL
        " FOR UPDATE SKIP LOCKED),"
        " u AS (UPDATE jobs j SET"
        " state = CASE WHEN j.attempts >= $1::integer THEN 'failed' ELSE 'queued' END,"
        " error = CASE WHEN j.attempts >= $1::integer THEN 'lease expired ' || j.attempts ||"
        " ' times (worker lost)' ELSE '' END,"
        " error_code = CASE WHEN j.attempts >= $1::integer THEN $2 ELSE '' END,"
        " finished = CASE WHEN j.attempts >= $1::integer THEN " NOW_SQL " ELSE 0 END,"
        " started = CASE WHEN j.attempts >= $1::integer THEN j.started ELSE 0 END,"
        " progress = 0, worker_id = NULL, lease_expires = NULL"
        " FROM x WHERE j.id = x.id RETURNING j.state)"
        " SELECT count(*) FILTER (WHERE state = 'queued'), count(*) FILTER (WHERE state = 'failed'),"
        " CASE WHEN count(*) FILTER (WHERE state = 'queued') > 0 THEN"
        " pg_notify('" SRV_STORE_CHANNEL "', 'requeued') END FROM u";
    char ma[16];
    snprintf(ma, sizeof ma, "%d", max_attempts);
    const char *p[2] = {ma, srv_error_code(SRV_E_WORKER_LOST)};
    PGresult *r = run_locked(SQL, 2, p);
    int rc = result_status(r, "re-queueing expired leases");
    *requeued = *failed = 0;
    if (rc == 0 && PQntuples(r) == 1) {
        *requeued = atoi(PQgetvalue(r, 0, 0));
        *failed = atoi(PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return rc < 0 ? -1 : 0;
}

static int pg_expire(double finished_before, int keep, void (*fn)(void *user, const char *id),
                     void *user) {
    static const char SQL[] =
        "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND (finished < $1::float8"
        " OR id IN (SELECT id FROM jobs ORDER BY created DESC, id DESC OFFSET $2::integer))"
        " RETURNING id";
    char t[32], k[16];
    snprintf(t, sizeof t, "%.17g", finished_before);
    snprintf(k, sizeof k, "%d", keep);
    const char *p[2] = {t, k};
    pthread_mutex_lock(&pg_lock);
    PGresult *r = run(SQL, 2, p);
    int n = result_status(r, "expiry") < 0 ? -1 : PQntuples(r);
    for (int i = 0; i < n; i++) fn(user, PQgetvalue(r, i, 0));
    PQclear(r);
    pthread_mutex_unlock(&pg_lock);
    return n;
}

static int pg_stats(double live_seconds, srv__cluster_stats *o) {
    static const char SQL[] =
        "SELECT count(*) FILTER (WHERE state = 'queued'), count(*) FILTER (WHERE state = 'running'),"
        " coalesce(" NOW_SQL " - min(created) FILTER (WHERE state = 'queued'), 0),"
        " (SELECT count(*) FROM workers WHERE last_heartbeat > " NOW_SQL " - $1::float8)"
        " FROM jobs WHERE state IN ('queued', 'running')";
    char ls[32];
    snprintf(ls, sizeof ls, "%.17g", live_seconds);
    const char *p[1] = {ls};
    PGresult *r = run_locked(SQL, 1, p);
    int rc = result_status(r, "cluster metrics");
    if (rc == 0 && PQntuples(r) == 1) {
        o->queued = atoi(PQgetvalue(r, 0, 0));
        o->running = atoi(PQgetvalue(r, 0, 1));
        o->oldest_queued_seconds = strtod(PQgetvalue(r, 0, 2), NULL);
        if (o->oldest_queued_seconds < 0) o->oldest_queued_seconds = 0;
        o->workers_live = atoi(PQgetvalue(r, 0, 3));
    }
    PQclear(r);
    return rc < 0 ? -1 : 0;
}

static int pg_beat(const char *worker, const char *host, int pid, const char *role) {
    static const char SQL[] =
        "INSERT INTO workers (worker_id, host, pid, role, started, last_heartbeat)"
        " VALUES ($1, $2, $3::integer, $4, " NOW_SQL ", " NOW_SQL ")"
        " ON CONFLICT (worker_id) DO UPDATE SET last_heartbeat = EXCLUDED.last_heartbeat";
    char ps[16];
    snprintf(ps, sizeof ps, "%d", pid);
    const char *p[4] = {worker, host, ps, role};
    PGresult *r = run_locked(SQL, 4, p);
    int rc = result_status(r, "heartbeat");
    PQclear(r);
    /* rows of workers gone for an hour: nobody will count them again */
    r = run_locked("DELETE FROM workers WHERE last_heartbeat < " NOW_SQL " - 3600", 0, NULL);
    PQclear(r);
    return rc < 0 ? -1 : 0;
}

static void pg_unbeat(const char *worker) {
    const char *p[1] = {worker};
    PQclear(run_locked("DELETE FROM workers WHERE worker_id = $1", 1, p));
}

static int pg_try_lock(long key) {
    char k[32];
    snprintf(k, sizeof k, "%ld", key);
    const char *p[1] = {k};
    PGresult *r = run_locked("SELECT pg_try_advisory_lock($1::bigint)", 1, p);
    int rc = result_status(r, "advisory lock");
    if (rc == 0) rc = PQntuples(r) == 1 && !strcmp(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    return rc < 0 ? -1 : rc;
}

static void pg_unlock(long key) {
    char k[32];
    snprintf(k, sizeof k, "%ld", key);
    const char *p[1] = {k};
    PQclear(run_locked("SELECT pg_advisory_unlock($1::bigint)", 1, p));
}

/* (lconn, declared above pg_close: the LISTEN connection, the waiting
 * thread's alone, no lock) */

static int pg_wait(double timeout) {
    if (!lconn || PQstatus(lconn) != CONNECTION_OK) {
        if (lconn) PQfinish(lconn);
        lconn = NULL;
        PGconn *c = uri ? connect_new() : NULL; /* uri is set before and after our life */
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            return -1;
        }
        PGresult *r = PQexec(c, "LISTEN " SRV_STORE_CHANNEL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            PQfinish(c);
            return -1;
        }
        lconn = c;
        return 1; /* (re)connected: anything may have been submitted meanwhile */
    }
    int got = 0;
    PGnotify *n;
    if (!PQconsumeInput(lconn)) return -1;
    while ((n = PQnotifies(lconn))) got = 1, PQfreemem(n);
    if (got) return 1;
    int fd = PQsocket(lconn);
    if (fd < 0) return -1;
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(fd, &rd);
    struct timeval tv = {(time_t)timeout, (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    int k = select(fd + 1, &rd, NULL, NULL, &tv);
    if (k < 0) return 0; /* EINTR */
    if (k == 0) return 0;
    if (!PQconsumeInput(lconn)) return -1;
    while ((n = PQnotifies(lconn))) got = 1, PQfreemem(n);
    return got;
}

static const srv__cluster_vt pg_cluster = {
    pg_submit, pg_claim,  pg_renew, pg_finish, pg_get,      pg_list,   pg_remove, pg_reap,
    pg_expire, pg_stats,  pg_beat,  pg_unbeat, pg_try_lock, pg_unlock, pg_wait};

const srv__store_vt srv__store_pg = {"postgresql", pg_open, pg_close,        pg_save,
                                     pg_delete,    pg_load, pg_delete_past, pg_ready, &pg_cluster};
