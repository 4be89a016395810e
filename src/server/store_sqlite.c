/*
 * store_sqlite.c - the job store (store.h) in SQLite: `--store sqlite:PATH`,
 * the embedded default (DATA_DIR/demix.db).
 *
 * Why SQLite: job state must survive a crash or `kill -9` so that a restart
 * re-queues what was interrupted and keeps finished results downloadable.
 * WAL mode lets readers and the one writer proceed together and makes each
 * commit one append to the log; synchronous=NORMAL is durable across
 * process crashes (the case we care about), if not across power loss at the
 * last commit. One connection, serialised by store_lock: the write rate is a
 * few rows per job, far below what needs a pool.
 *
 * Schema: table schema_version (one row) says which version the file
 * holds; a file from before the table existed (jobs only) is version 1.
 *
 * queue.c and recovery.c are the callers (through store.c); they write a row on every state
 * change (not on progress ticks, which are not worth a disk write). A job
 * is acknowledged only after its first row is written (queue.c), so every
 * failure is reported: SQLITE_FULL as SRV_STORE_FULL (the server answers
 * 507), anything else (I/O error, a database locked by another process
 * past the busy timeout) as -1 (503).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

static sqlite3 *db;
static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;

static void log_db_error(const char *what) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "type", "storage");
    cJSON_AddStringToObject(f, "detail", db ? sqlite3_errmsg(db) : "no database");
    srv_log(DMX_LOG_ERROR, "demix.store", "error", NULL, f, "sqlite: %s failed", what);
}

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS jobs ("
    " id TEXT PRIMARY KEY, request_id TEXT, model TEXT NOT NULL, two_stems TEXT,"
    " format TEXT NOT NULL, shifts INTEGER, overlap REAL, upload_name TEXT,"
    " state TEXT NOT NULL, error TEXT, error_code TEXT, stems TEXT,"
    " file_size INTEGER, audio_seconds REAL,"
    " created REAL, started REAL, finished REAL);"
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);"
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);";

/* The schema's version in the file: 0 when schema_version is empty (a new
 * file, or one from before the table: both get version 1's tables, which
 * the CREATE ... IF NOT EXISTS above left as they were), else the row. */
static int schema_version(void) {
    sqlite3_stmt *s = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db, "SELECT max(version) FROM schema_version", -1, &s, NULL) ==
            SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0); /* NULL (no row) reads as 0 */
    sqlite3_finalize(s);
    return v;
}

static int schema_migrate(void) {
    int v = schema_version();
    if (v < 0) return -1;
    if (v > SRV_STORE_SCHEMA_VERSION) {
        srv_log(DMX_LOG_ERROR, "demix.store", "error", NULL, NULL,
                "sqlite: the database has schema version %d, newer than this demix (%d)", v,
                SRV_STORE_SCHEMA_VERSION);
        return -1;
    }
    if (v == SRV_STORE_SCHEMA_VERSION) return 0;
    /* Version 0 -> 1: the tables exist; record the version. Later versions
     * add their steps here, each in one transaction with the row. */
    sqlite3_stmt *s = NULL;
    int rc =
        sqlite3_prepare_v2(db, "INSERT INTO schema_version (version) VALUES (?)", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int(s, 1, SRV_STORE_SCHEMA_VERSION);
        rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK) log_db_error("schema migration");
    return rc == SQLITE_OK ? 0 : -1;
}

static int sq_open(const char *path) {
    if (sqlite3_open_v2(path, &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        log_db_error("open");
        sqlite3_close(db);
        db = NULL;
        return -1;
    }
    /* Another process (or a dying one) may hold the lock briefly. */
    sqlite3_busy_timeout(db, 5000);
    char *err = NULL;
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, &err) !=
            SQLITE_OK ||
        sqlite3_exec(db, SCHEMA, NULL, NULL, &err) != SQLITE_OK || schema_migrate() < 0) {
        srv_log(DMX_LOG_ERROR, "demix.store", "error", NULL, NULL, "sqlite: %s", err ? err : "?");
        sqlite3_free(err);
        sqlite3_close(db);
        db = NULL;
        return -1;
    }
    return 0;
}

static void sq_close(void) {
    pthread_mutex_lock(&store_lock);
    sqlite3_close(db);
    db = NULL;
    pthread_mutex_unlock(&store_lock);
}

static int sq_save(const srv_job *j) {
    static const char SQL[] =
        "INSERT OR REPLACE INTO jobs (id, request_id, model, two_stems, format, shifts, overlap,"
        " upload_name, state, error, error_code, stems, file_size, audio_seconds, created,"
        " started, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    char stems[SRV_JOB_MAX_STEMS * 81];
    srv__store_join_stems(j, stems, sizeof stems);
    pthread_mutex_lock(&store_lock);
    sqlite3_stmt *s = NULL;
    int rc = db ? sqlite3_prepare_v2(db, SQL, -1, &s, NULL) : SQLITE_MISUSE;
    if (rc == SQLITE_OK) {
        int k = 1;
        sqlite3_bind_text(s, k++, j->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, k++, j->request_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, k++, j->model, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, k++, j->two_stems, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, k++, j->format, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, k++, j->shifts);
        sqlite3_bind_double(s, k++, j->overlap);
        sqlite3_bind_text(s, k++, j->upload_name ? j->upload_name : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(s, k++, srv_job_state_name(j->state), -1, SQLITE_STATIC);
        sqlite3_bind_text(s, k++, j->error, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, k++, j->error_code, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, k++, stems, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, k++, j->file_size);
        sqlite3_bind_double(s, k++, j->audio_seconds);
        sqlite3_bind_double(s, k++, j->created);
        sqlite3_bind_double(s, k++, j->started);
        sqlite3_bind_double(s, k++, j->finished);
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) log_db_error("save");
    sqlite3_finalize(s);
    pthread_mutex_unlock(&store_lock);
    return rc == SQLITE_OK ? 0 : (rc & 0xff) == SQLITE_FULL ? SRV_STORE_FULL : -1;
}

static int sq_delete(const char *id) {
    pthread_mutex_lock(&store_lock);
    sqlite3_stmt *s = NULL;
    int rc =
        db ? sqlite3_prepare_v2(db, "DELETE FROM jobs WHERE id = ?", -1, &s, NULL) : SQLITE_MISUSE;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    if (rc != SQLITE_OK) log_db_error("delete");
    sqlite3_finalize(s);
    pthread_mutex_unlock(&store_lock);
    return rc == SQLITE_OK ? 0 : -1;
}

static const char *col(sqlite3_stmt *s, int i) {
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? (const char *)t : "";
}

static int sq_load(int (*fn)(void *user, srv_job *j), void *user, int limit) {
    static const char SQL[] =
        "SELECT id, request_id, model, two_stems, format, shifts, overlap, upload_name, state,"
        " error, error_code, stems, file_size, audio_seconds, created, started, finished"
        " FROM jobs ORDER BY " SRV_STORE_LOAD_ORDER " LIMIT ?";
    pthread_mutex_lock(&store_lock);
    sqlite3_stmt *s = NULL;
    int rc = db ? sqlite3_prepare_v2(db, SQL, -1, &s, NULL) : SQLITE_MISUSE;
    int n = 0, step = SQLITE_DONE;
    if (rc == SQLITE_OK) sqlite3_bind_int(s, 1, limit);
    while (rc == SQLITE_OK && (step = sqlite3_step(s)) == SQLITE_ROW) {
        srv_job *j = calloc(1, sizeof *j);
        if (!j) break;
        int k = 0;
        snprintf(j->id, sizeof j->id, "%s", col(s, k++));
        snprintf(j->request_id, sizeof j->request_id, "%s", col(s, k++));
        snprintf(j->model, sizeof j->model, "%s", col(s, k++));
        snprintf(j->two_stems, sizeof j->two_stems, "%s", col(s, k++));
        snprintf(j->format, sizeof j->format, "%s", col(s, k++));
        j->shifts = sqlite3_column_int(s, k++);
        j->overlap = sqlite3_column_double(s, k++);
        const char *un = col(s, k++);
        j->upload_name = *un ? strdup(un) : NULL;
        j->state = srv__store_state_from_name(col(s, k++));
        snprintf(j->error, sizeof j->error, "%s", col(s, k++));
        snprintf(j->error_code, sizeof j->error_code, "%s", col(s, k++));
        srv__store_split_stems(j, col(s, k++));
        j->file_size = sqlite3_column_int64(s, k++);
        j->audio_seconds = sqlite3_column_double(s, k++);
        j->created = sqlite3_column_double(s, k++);
        j->started = sqlite3_column_double(s, k++);
        j->finished = sqlite3_column_double(s, k++);
        n++;
        if (fn(user, j) < 0) break;
    }
    if (rc != SQLITE_OK || (step != SQLITE_ROW && step != SQLITE_DONE)) {
        log_db_error("load");
        n = -1;
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&store_lock);
    return n;
}

static int sq_delete_past(int keep) {
    static const char SQL[] = SRV_STORE_DELETE_PAST("?");
    pthread_mutex_lock(&store_lock);
    sqlite3_stmt *s = NULL;
    int rc = db ? sqlite3_prepare_v2(db, SQL, -1, &s, NULL) : SQLITE_MISUSE;
    if (rc == SQLITE_OK) {
        sqlite3_bind_int(s, 1, keep);
        rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    int n = rc == SQLITE_OK ? sqlite3_changes(db) : -1;
    sqlite3_finalize(s);
    pthread_mutex_unlock(&store_lock);
    return n;
}

static int sq_ready(void) { return db != NULL; }

const srv__store_vt srv__store_sqlite = {"sqlite",  sq_open, sq_close,        sq_save,
                                         sq_delete, sq_load, sq_delete_past,  sq_ready, NULL};
