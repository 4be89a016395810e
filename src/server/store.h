/*
 * store.h - the job store behind `demix serve`: one table of functions per
 * database, chosen at start by --store (DEMIX_STORE):
 *
 *   sqlite:PATH             the embedded default (DATA_DIR/demix.db when
 *                           --store is not given): store_sqlite.c
 *   postgresql://... or postgres://...   a libpq connection URI: store_pg.c
 *
 * store.c parses the target and forwards the dmx_store_* calls of
 * server.h to the chosen implementation. Each implementation creates or
 * migrates its schema on open (table schema_version, one row: the version)
 * and binds every value as a statement parameter. Calls are serialised by
 * the implementation; they may block on I/O, never call back into the jobs.
 *
 * Statuses: 0 on success, -1 when the database cannot be used now (the
 * caller answers 503), DMX_STORE_FULL when it is out of space (507).
 */
#ifndef DEMIX_SERVER_STORE_H
#define DEMIX_SERVER_STORE_H

#include "server.h"

/* The schema every implementation creates; bump and migrate together. */
#define DMX_STORE_SCHEMA_VERSION 1

typedef struct dmx__store_vt {
    const char *name; /* "sqlite", "postgresql" (logs, metrics) */
    /* Connects to TARGET (a path or URI, kept by the caller) and creates or
     * migrates the schema. */
    int (*open)(const char *target);
    void (*close)(void);
    int (*save)(const dmx_job *j);
    int (*del)(const char *id);
    int (*load)(int (*fn)(void *user, dmx_job *j), void *user, int limit);
    int (*delete_older)(double created_before);
    /* 1 when the database answers now (may reconnect), else 0. */
    int (*ready)(void);
} dmx__store_vt;

extern const dmx__store_vt dmx__store_sqlite;
#ifdef DEMIX_HAVE_PQ
extern const dmx__store_vt dmx__store_pg;
#endif

/* Stems are stored as one comma-separated string (names are
 * [A-Za-z0-9_.-]): the one rule for both databases. */
void dmx__store_join_stems(const dmx_job *j, char *out, size_t n);
void dmx__store_split_stems(dmx_job *j, const char *stems);
dmx_job_state dmx__store_state_from_name(const char *s);

#endif
