/*
 * store.c - chooses the job store (store.h) from --store / DEMIX_STORE and
 * forwards server.h's srv_store_* calls to it; also the row rules both
 * databases share (stems list, state names).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

static const srv__store_vt *vt;

int srv_store_shared(const char *target) {
    return !strncmp(target, "postgresql://", 13) || !strncmp(target, "postgres://", 11);
}

int srv_store_open(const char *target) {
    const srv__store_vt *v = NULL;
    const char *arg = target;
    if (!strncmp(target, "sqlite:", 7)) {
        v = &srv__store_sqlite;
        arg = target + 7;
    } else if (srv_store_shared(target)) {
#ifdef DEMIX_HAVE_PQ
        v = &srv__store_pg;
#else
        srv_log(DMX_LOG_ERROR, "demix.store", "error", NULL, NULL,
                "--store: this build has no PostgreSQL support (libpq)");
        return -1;
#endif
    }
    if (!v || !*arg) {
        srv_log(DMX_LOG_ERROR, "demix.store", "error", NULL, NULL,
                "--store: expected sqlite:PATH or postgresql://..., got '%s'",
                !strncmp(target, "postgres", 8) ? "postgresql://(hidden)" : target);
        return -1;
    }
    if (v->open(arg) < 0) return -1;
    vt = v;
    return 0;
}

void srv_store_close(void) {
    if (vt) vt->close();
    vt = NULL;
}

int srv_store_save(const srv_job *j) { return vt ? vt->save(j) : -1; }
int srv_store_delete(const char *id) { return vt ? vt->del(id) : -1; }
int srv_store_load(int (*fn)(void *user, srv_job *j), void *user, int limit) {
    return vt ? vt->load(fn, user, limit) : -1;
}
int srv_store_delete_past(int keep) { return vt ? vt->delete_past(keep) : -1; }
int srv_store_ready(void) { return vt && vt->ready(); }
const char *srv_store_kind(void) { return vt ? vt->name : "none"; }
const srv__cluster_vt *srv__store_cluster(void) { return vt ? vt->cluster : NULL; }

void srv__store_join_stems(const srv_job *j, char *out, size_t n) {
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < j->n_stems && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s", i ? "," : "", j->stems[i]);
}

void srv__store_split_stems(srv_job *j, const char *stems) {
    char buf[SRV_JOB_MAX_STEMS * 81];
    snprintf(buf, sizeof buf, "%s", stems);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && j->n_stems < SRV_JOB_MAX_STEMS;
         t = strtok_r(NULL, ",", &save))
        snprintf(j->stems[j->n_stems++], sizeof j->stems[0], "%s", t);
}

srv_job_state srv__store_state_from_name(const char *s) {
    for (int k = JOB_QUEUED; k <= JOB_CANCELLED; k++)
        if (!strcmp(s, srv_job_state_name((srv_job_state)k))) return (srv_job_state)k;
    return JOB_FAILED;
}
