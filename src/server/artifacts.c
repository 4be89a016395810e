/*
 * artifacts.c - the job files in the data folder (artifacts.h). A leaf:
 * the configuration, the log and the folder clearing of queue.c. A job's
 * folder holds at most one level of sub-folders (the clustered runs'
 * run-N), so clearing goes one level down.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
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

/* Clears DIR (but `keep`) and each sub-folder (run-N of earlier attempts). */
static void clear_tree(const char *dir, const char *keep, int rmdir_too) {
    if (!dir) return;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *p = NULL;
        if (e->d_name[0] == '.' || (keep && !strcmp(e->d_name, keep)) ||
            asprintf(&p, "%s/%s", dir, e->d_name) < 0)
            continue;
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) srv__dir_clear(p, NULL, 1);
        free(p);
    }
    if (d) closedir(d);
    srv__dir_clear(dir, keep, rmdir_too);
}

void srv_artifact_clear_outputs(const srv_job *j) { clear_tree(j->dir, "input", 0); }

int srv_artifact_stage(srv_job *j) {
    free(j->stage);
    j->stage = NULL;
    if (asprintf(&j->stage, "%s/run-%d", j->dir, j->attempts) < 0) {
        j->stage = NULL;
        return -1;
    }
    srv__dir_clear(j->stage, NULL, 0); /* (a run of this attempt left nothing useful) */
    return mkdir(j->stage, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

int srv_artifact_publish(const srv_job *j, char names[][DMX_MAX_STEM_NAME], int n) {
    int rc = 0;
    for (int s = 0; s < n && rc == 0; s++) {
        char *from = NULL, *to = NULL;
        if (asprintf(&from, "%s/%s.%s", j->stage, names[s], j->format) < 0) from = NULL;
        if (asprintf(&to, "%s/%s.%s", j->dir, names[s], j->format) < 0) to = NULL;
        if (!from || !to || rename(from, to) != 0) rc = -1;
        free(from);
        free(to);
    }
    if (rc == 0) rmdir(j->stage);
    return rc;
}

void srv_artifact_drop_stage(srv_job *j) {
    if (!j->stage) return;
    srv__dir_clear(j->stage, NULL, 1);
    free(j->stage);
    j->stage = NULL;
}

int srv_artifact_input_ok(const srv_job *j) { return j->input && access(j->input, R_OK) == 0; }

void srv_artifact_remove(const char *id) {
    char *d = NULL;
    if (asprintf(&d, "%s/jobs/%s", srv_cfg.data_dir, id) < 0) return;
    clear_tree(d, NULL, 1);
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
            clear_tree(p, NULL, 1);
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
