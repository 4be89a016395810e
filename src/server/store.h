/*
 * store.h - the job store behind `demix serve`: one table of functions per
 * database, chosen at start by --store (DEMIX_STORE):
 *
 *   sqlite:PATH             the embedded default (DATA_DIR/demix.db when
 *                           --store is not given): store_sqlite.c
 *   postgresql://... or postgres://...   a libpq connection URI: store_pg.c
 *
 * store.c parses the target and forwards the srv_store_* calls of
 * server.h to the chosen implementation. Each implementation creates or
 * migrates its schema on open (table schema_version, one row: the version)
 * and binds every value as a statement parameter. Calls are serialised by
 * the implementation; they may block on I/O, never call back into the jobs.
 *
 * Statuses: 0 on success, -1 when the database cannot be used now (the
 * caller answers 503), SRV_STORE_FULL when it is out of space (507).
 */
#ifndef DEMIX_SERVER_STORE_H
#define DEMIX_SERVER_STORE_H

#include "server.h"

/* The schema every implementation creates; bump and migrate together. */
#define SRV_STORE_SCHEMA_VERSION 1

typedef struct srv__store_vt {
    const char *name; /* "sqlite", "postgresql" (logs, metrics) */
    /* Connects to TARGET (a path or URI, kept by the caller) and creates or
     * migrates the schema. */
    int (*open)(const char *target);
    void (*close)(void);
    int (*save)(const srv_job *j);
    int (*del)(const char *id);
    int (*load)(int (*fn)(void *user, srv_job *j), void *user, int limit);
    int (*delete_older)(double created_before);
    /* 1 when the database answers now (may reconnect), else 0. */
    int (*ready)(void);
} srv__store_vt;

extern const srv__store_vt srv__store_sqlite;
#ifdef DEMIX_HAVE_PQ
extern const srv__store_vt srv__store_pg;
#endif

/* Stems are stored as one comma-separated string (names are
 * [A-Za-z0-9_.-]): the one rule for both databases. */
void srv__store_join_stems(const srv_job *j, char *out, size_t n);
void srv__store_split_stems(srv_job *j, const char *stems);
srv_job_state srv__store_state_from_name(const char *s);

#endif
