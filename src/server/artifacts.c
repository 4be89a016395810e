/*
 * artifacts.c - the job files in the data folder (artifacts.h). A leaf:
 * the configuration, the log and the folder clearing of queue.c.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifacts.h"
#include "jobs_int.h"

int srv_artifact_paths(srv_job *j) {
    free(j->dir);
    free(j->input);
    j->dir = j->input = NULL;
    if (asprintf(&j->dir, "%s/jobs/%s", srv_cfg.data_dir, j->id) < 0) j->dir = NULL;
    if (j->dir && asprintf(&j->input, "%s/input", j->dir) < 0) j->input = NULL;
    return j->dir && j->input ? 0 : -1;
}

void srv_artifact_clear_outputs(const srv_job *j) { srv__dir_clear(j->dir, "input", 0); }

int srv_artifact_input_ok(const srv_job *j) { return j->input && access(j->input, R_OK) == 0; }

void srv_artifact_remove(const char *id) {
    char *d = NULL;
    if (asprintf(&d, "%s/jobs/%s", srv_cfg.data_dir, id) < 0) return;
    srv__dir_clear(d, NULL, 1);
    free(d);
}

static int is_job_id(const char *s) {
    size_t n = strspn(s, "0123456789abcdef");
    return n == 32 && s[n] == '\0';
}

/* 1 when PATH was modified less than min_age seconds ago (or cannot be read). */
static int recent(const char *path, double min_age) {
    struct stat st;
    if (stat(path, &st) != 0) return 1;
    return (double)st.st_mtime > srv_wall() - min_age;
}

int srv_artifact_sweep(double min_age, int (*is_owned)(void *user, const char *id), void *user) {
    char *dir = NULL, *p = NULL;
    int removed = 0;
    if (asprintf(&dir, "%s/uploads", srv_cfg.data_dir) >= 0) {
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.' || asprintf(&p, "%s/%s", dir, e->d_name) < 0) continue;
            if (!recent(p, min_age)) unlink(p);
            free(p);
        }
        if (d) closedir(d);
    }
    free(dir);
    if (asprintf(&dir, "%s/jobs", srv_cfg.data_dir) < 0) return 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!is_job_id(e->d_name) || asprintf(&p, "%s/%s", dir, e->d_name) < 0) continue;
        if (!recent(p, min_age) && is_owned(user, e->d_name) == 0) {
            srv__dir_clear(p, NULL, 1);
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "job", e->d_name);
            srv_log(DMX_LOG_INFO, "demix.jobs", "orphan_removed", NULL, f,
                    "removed folder of job %s: no stored job owns it", e->d_name);
            removed++;
        }
        free(p);
    }
    if (d) closedir(d);
    free(dir);
    return removed;
}
