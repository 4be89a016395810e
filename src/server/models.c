/*
 * models.c - the model registry as `demix serve` shows it: which models the
 * model folder (--repo, else the cache) holds under the names users type,
 * and the file of a model name. Every rule (file names, the cache folder,
 * upstream's names and their members) is the engine's registry
 * (demix/repo.h); this file only shapes its answers for the service.
 * Loading and sharing models is modelcache.c's job.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "demix/repo.h"
#include "server.h"

/* Model registry: every rule (file names, the cache folder, upstream's
 * names and their members) is the engine's registry (demix/repo.h); these
 * functions only shape its answers for the service. The folder is --repo,
 * or the cache when there is none. */

char *srv_models_resolve(const char *name) {
    dmx_repo_hit h;
    if (dmx_repo_resolve(srv_cfg.repo, name, &h) != DMX_OK) return NULL;
    char *p = h.path;
    h.path = NULL;
    dmx_repo_hit_clear(&h);
    return p;
}

/* Sources and family of a model file that the registry's table does not
 * describe, read from the checkpoint once per (path, size, mtime): a probe
 * reads the archive but no tensors. Bounded; the table restarts when full. */
typedef struct probe_entry {
    char *path;
    int64_t size, mtime_ns;
    int ok;
    dmx_repo_probe_info info;
} probe_entry;

#define PROBE_CACHE_MAX 128
static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
static probe_entry probe_cache[PROBE_CACHE_MAX];
static int n_probe_cache;

static int probe_cached(const char *path, dmx_repo_probe_info *out) {
    struct stat st;
    /* Only regular files are read here: a FIFO would block GET /models. */
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    pthread_mutex_lock(&probe_lock);
    probe_entry *e = NULL;
    for (int i = 0; i < n_probe_cache && !e; i++)
        if (!strcmp(probe_cache[i].path, path) && probe_cache[i].size == (int64_t)st.st_size &&
            probe_cache[i].mtime_ns == mt)
            e = &probe_cache[i];
    if (!e) {
        if (n_probe_cache == PROBE_CACHE_MAX) {
            for (int i = 0; i < n_probe_cache; i++) free(probe_cache[i].path);
            n_probe_cache = 0;
        }
        char *pc = strdup(path);
        if (pc) {
            e = &probe_cache[n_probe_cache++];
            e->path = pc;
            e->size = (int64_t)st.st_size;
            e->mtime_ns = mt;
            e->ok = dmx_repo_probe(path, &e->info) == DMX_OK;
        }
    }
    int ok = e && e->ok;
    if (ok) *out = e->info;
    pthread_mutex_unlock(&probe_lock);
    return ok;
}

static int64_t file_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* One GET /models entry: the user-facing name, what is loaded for it, its
 * sources (table, else the file's own) and its network family. */
static void add_model_json(cJSON *arr, const char *name, const dmx_repo_hit *h, const char *dir) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddStringToObject(o, "file", h->file);
    cJSON_AddStringToObject(o, "location", srv_cfg.repo ? "repo" : "cache");
    cJSON_AddStringToObject(o, "kind", h->kind == DMX_REPO_BAG ? "bag" : "checkpoint");
    cJSON *src = cJSON_AddArrayToObject(o, "sources");
    const dmx_repo_model *m = h->known;
    dmx_repo_probe_info pi;
    int64_t size = file_bytes(h->path);
    if (m) {
        char fam[64];
        dmx_repo_model_families(m, fam, sizeof fam);
        for (int32_t i = 0; i < dmx_repo_model_n_sources(m); i++)
            cJSON_AddItemToArray(src, cJSON_CreateString(dmx_repo_model_source(m, i)));
        cJSON_AddStringToObject(o, "family", fam);
        cJSON_AddStringToObject(o, "description", m->description);
        cJSON_AddNumberToObject(o, "members", m->n_members);
        /* A bag's size is its checkpoints' (each distinct file once). */
        if (h->kind == DMX_REPO_BAG) {
            size = 0;
            for (int32_t i = 0; i < m->n_members; i++) {
                int dup = 0;
                for (int32_t j = 0; j < i; j++) dup |= !strcmp(m->members[i], m->members[j]);
                dmx_repo_hit mh;
                if (dup || dmx_repo_find_checkpoint(dir, m->members[i], &mh) != DMX_OK) continue;
                size += file_bytes(mh.path);
                dmx_repo_hit_clear(&mh);
            }
        }
    } else if (probe_cached(h->path, &pi)) {
        for (int32_t i = 0; i < pi.n_sources; i++)
            cJSON_AddItemToArray(src, cJSON_CreateString(pi.sources[i]));
        cJSON_AddStringToObject(o, "family", pi.families);
        /* A RoFormer checkpoint of the registry (NAME.yaml + NAME.ckpt). */
        if (h->msst) cJSON_AddStringToObject(o, "description", h->msst->description);
        /* An MSST config's size is its checkpoint's too. */
        char *ck = NULL;
        if (h->kind == DMX_REPO_BAG && dmx_repo_config_checkpoint(h->path, &ck) == DMX_OK && ck &&
            size >= 0 && file_bytes(ck) >= 0)
            size += file_bytes(ck);
        free(ck);
    } else {
        cJSON_AddStringToObject(o, "family", "unknown"); /* unreadable: `sources` stays empty */
    }
    cJSON_AddNumberToObject(o, "size_bytes", (double)size);
    cJSON_AddBoolToObject(o, "loaded", srv_models_is_loaded(name));
    cJSON_AddItemToArray(arr, o);
}

/* Is this cache file part of an upstream model listed by its own name (or
 * does it carry such a name, so that the name is listed once)? */
static int claimed_by_known(const dmx_repo_item *it) {
    if (dmx_repo_model_find(it->entry.name)) return 1;
    const dmx_repo_file *f = dmx_repo_file_find(it->entry.name);
    return f && !strcmp(f->checksum, it->entry.checksum);
}

cJSON *srv_models_json(void) {
    cJSON *arr = cJSON_CreateArray();
    char *dir = NULL;
    if (srv_cfg.repo)
        dir = strdup(srv_cfg.repo);
    else if (dmx_repo_cache_dir(&dir) != DMX_OK)
        dir = NULL;
    if (!dir) return arr;
    if (!srv_cfg.repo) {
        /* Upstream's names first, each under the name users type. */
        for (size_t i = 0; i < dmx_repo_n_models(); i++) {
            const dmx_repo_model *m = dmx_repo_model_at(i);
            dmx_repo_hit h;
            if (dmx_repo_resolve(NULL, m->name, &h) != DMX_OK) continue;
            add_model_json(arr, m->name, &h, dir);
            dmx_repo_hit_clear(&h);
        }
    }
    dmx_repo_list *l = NULL;
    if (dmx_repo_scan(dir, &l) == DMX_OK) {
        for (size_t i = 0; i < l->n; i++) {
            const dmx_repo_item *it = &l->items[i];
            if (it->problem || (!srv_cfg.repo && claimed_by_known(it))) continue;
            /* A checkpoint wins over a bag of the same name: list the name once. */
            int shadowed = 0;
            for (size_t j = 0; j < l->n && it->entry.kind == DMX_REPO_BAG; j++)
                shadowed |= l->items[j].entry.kind == DMX_REPO_CHECKPOINT && !l->items[j].problem &&
                            !strcmp(l->items[j].entry.name, it->entry.name);
            if (shadowed) continue;
            dmx_repo_hit h;
            if (dmx_repo_find(dir, it->entry.name, &h) != DMX_OK) continue;
            h.known = NULL; /* a user's file: describe what it holds, not the table */
            add_model_json(arr, it->entry.name, &h, dir);
            dmx_repo_hit_clear(&h);
        }
        dmx_repo_list_free(l);
    }
    free(dir);
    return arr;
}

/* /health and /readyz ask on every probe: one folder scan, no JSON, no
 * checkpoint reads. A usable model file in the folder is enough. */
int srv_models_any_available(void) {
    char *dir = NULL;
    if (srv_cfg.repo)
        dir = strdup(srv_cfg.repo);
    else if (dmx_repo_cache_dir(&dir) != DMX_OK)
        dir = NULL;
    dmx_repo_list *l = NULL;
    int found = 0;
    if (dir && dmx_repo_scan(dir, &l) == DMX_OK)
        for (size_t i = 0; i < l->n && !found; i++) found = l->items[i].problem == NULL;
    dmx_repo_list_free(l);
    free(dir);
    return found;
}
