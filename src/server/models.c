/*
 * models.c - the model registry of `demix serve`: which models the model
 * folder (--repo, else the cache) holds, and the file of a model name.
 * It only lists and resolves files; loading and sharing models is
 * modelcache.c's job. (Moved out of jobs.c as it was; the engine's
 * registry will replace these bodies.)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "server.h"

static char *model_dir(void) {
    if (dmx_srv_cfg.repo) return strdup(dmx_srv_cfg.repo);
    const char *e = getenv("DEMIX_MODELS");
    if (e && *e) return strdup(e);
    char *p = NULL;
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && *x) {
        if (asprintf(&p, "%s/demix", x) < 0) p = NULL;
    } else {
        const char *h = getenv("HOME");
        if (asprintf(&p, "%s/.cache/demix", h ? h : ".") < 0) p = NULL;
    }
    return p;
}

static int valid_name(const char *s) {
    if (!*s || strlen(s) > 100 || s[0] == '.') return 0;
    for (; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') || ('0' <= *s && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return 0;
    return 1;
}

/* The model name of a file in the folder: NAME of NAME.th, NAME-HASH.th
 * (HASH 8+ hex digits) or NAME.yaml; 0 if the file is not a model. */
static int file_model_name(const char *file, char *name, size_t n) {
    size_t l = strlen(file);
    if (l > 5 && !strcmp(file + l - 5, ".yaml")) {
        snprintf(name, n, "%.*s", (int)(l - 5), file);
        return 1;
    }
    if (l <= 3 || strcmp(file + l - 3, ".th")) return 0;
    l -= 3;
    const char *dash = memrchr(file, '-', l);
    if (dash && (size_t)(file + l - dash - 1) >= 8) {
        int hex = 1;
        for (const char *c = dash + 1; c < file + l; c++)
            if (!strchr("0123456789abcdef", *c)) hex = 0;
        if (hex) l = (size_t)(dash - file);
    }
    snprintf(name, n, "%.*s", (int)l, file);
    return 1;
}

char *dmx_models_resolve(const char *name) {
    if (!valid_name(name)) return NULL;
    char *dir = model_dir();
    if (!dir) return NULL;
    DIR *d = opendir(dir);
    char *hit = NULL, *yaml = NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char nm[256];
        if (e->d_name[0] == '.' || !file_model_name(e->d_name, nm, sizeof nm)) continue;
        if (strcmp(nm, name)) continue;
        char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, e->d_name) < 0) continue;
        /* A checkpoint wins over a bag of the same name, as upstream's repo. */
        size_t l = strlen(e->d_name);
        if (!strcmp(e->d_name + l - 5 > e->d_name ? e->d_name + l - 5 : e->d_name, ".yaml")) {
            free(yaml);
            yaml = p;
        } else {
            free(hit);
            hit = p;
        }
    }
    if (d) closedir(d);
    free(dir);
    if (hit) {
        free(yaml);
        return hit;
    }
    return yaml;
}

static int cmp_json_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

cJSON *dmx_models_json(void) {
    cJSON *arr = cJSON_CreateArray();
    char *dir = model_dir();
    DIR *d = dir ? opendir(dir) : NULL;
    char **files = NULL;
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char nm[256];
        if (e->d_name[0] == '.' || !file_model_name(e->d_name, nm, sizeof nm)) continue;
        char **nf = realloc(files, (n + 1) * sizeof *files);
        if (!nf) break;
        files = nf;
        files[n++] = strdup(e->d_name);
    }
    if (d) closedir(d);
    if (n) qsort(files, n, sizeof *files, cmp_json_name);
    for (size_t i = 0; i < n; i++) {
        char nm[256], *p = NULL;
        if (!files[i] || !file_model_name(files[i], nm, sizeof nm)) continue;
        if (asprintf(&p, "%s/%s", dir, files[i]) < 0) continue;
        struct stat st;
        int64_t size = stat(p, &st) == 0 ? (int64_t)st.st_size : -1;
        int loaded = dmx_models_is_loaded(nm);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", nm);
        cJSON_AddStringToObject(o, "file", files[i]);
        cJSON_AddStringToObject(o, "source", dmx_srv_cfg.repo ? "repo" : "cache");
        cJSON_AddStringToObject(o, "kind", strstr(files[i], ".yaml") ? "bag" : "checkpoint");
        cJSON_AddNumberToObject(o, "size_bytes", (double)size);
        cJSON_AddBoolToObject(o, "loaded", loaded);
        cJSON_AddItemToArray(arr, o);
        free(p);
    }
    for (size_t i = 0; i < n; i++) free(files[i]);
    free(files);
    free(dir);
    return arr;
}

/* /health and /readyz ask on every probe: stop at the first model file
 * instead of listing (stat, JSON, sort) the whole folder. */
int dmx_models_any_available(void) {
    char *dir = model_dir();
    DIR *d = dir ? opendir(dir) : NULL;
    int found = 0;
    struct dirent *e;
    while (d && !found && (e = readdir(d))) {
        char nm[256];
        found = e->d_name[0] != '.' && file_model_name(e->d_name, nm, sizeof nm);
    }
    if (d) closedir(d);
    free(dir);
    return found;
}
