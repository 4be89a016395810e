/*
 * models.c - where models come from: the registry of upstream's pretrained
 * HTDemucs checkpoints, the local cache, upstream-style local repositories
 * (--repo), resumable downloads with libcurl, and sha256 verification with
 * OpenSSL's libcrypto. Also the `demix models` subcommand.
 *
 * Upstream names a checkpoint SIG-HASH.th where HASH is a prefix of the
 * file's sha256; that prefix is the only integrity check there is, so a file
 * enters the cache (is renamed from NAME.part) only once it matches.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define DEFAULT_MODEL_URL "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"

/* ---- registry ------------------------------------------------------------------ */

/* The upstream models this build can run (HTDemucs v4). File names are those
 * of upstream's demucs/remote/files.txt; the htdemucs_ft bag lists its members
 * by signature as upstream's remote/htdemucs_ft.yaml does. Sizes are only
 * shown before a download, so approximate figures are enough. */
typedef struct reg_model {
    const char *name;
    const char *sources;
    const char *approx_size;
    const char *load_file;  /* what dmx_model_load() gets, inside the cache */
    const char *files[5];   /* what to download, NULL-terminated */
    const char *bag_yaml;   /* written as load_file for a bag */
} reg_model;

static const char HTDEMUCS_FT_YAML[] =
    "# htdemucs_ft: four fine-tuned HTDemucs models, each used for one source\n"
    "# (written by demix; the same bag as upstream's remote/htdemucs_ft.yaml).\n"
    "models: ['f7e0c4bc', 'd12395a8', '92cfc3b6', '04573f0d']\n"
    "weights: [\n"
    "  [1., 0., 0., 0.],\n"
    "  [0., 1., 0., 0.],\n"
    "  [0., 0., 1., 0.],\n"
    "  [0., 0., 0., 1.],\n"
    "]\n";

static const reg_model REGISTRY[] = {
    {"htdemucs", "drums, bass, other, vocals", "~80 MiB", "955717e8-8726e21a.th",
     {"955717e8-8726e21a.th", NULL}, NULL},
    {"htdemucs_ft", "drums, bass, other, vocals", "~320 MiB", "htdemucs_ft.yaml",
     {"f7e0c4bc-ba3fe64a.th", "d12395a8-e57c48e6.th", "92cfc3b6-ef3bcb9c.th",
      "04573f0d-f3cf25b2.th", NULL},
     HTDEMUCS_FT_YAML},
    {"htdemucs_6s", "drums, bass, other, vocals, guitar, piano", "~52 MiB",
     "5c90dfd2-34c22ccb.th", {"5c90dfd2-34c22ccb.th", NULL}, NULL},
};
#define N_REGISTRY (sizeof REGISTRY / sizeof REGISTRY[0])

static const reg_model *registry_find(const char *name) {
    for (size_t i = 0; i < N_REGISTRY; i++)
        if (!strcmp(REGISTRY[i].name, name)) return &REGISTRY[i];
    return NULL;
}

/* A registry file by its signature ("955717e8") or full name. */
static const char *registry_file(const char *name) {
    for (size_t i = 0; i < N_REGISTRY; i++)
        for (const char *const *f = REGISTRY[i].files; *f; f++) {
            size_t n = strlen(name);
            if (!strcmp(*f, name) || (!strncmp(*f, name, n) && (*f)[n] == '-')) return *f;
        }
    return NULL;
}

static int is_hex(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i])) return 0;
    return 1;
}

/* Splits a checkpoint file name "SIG-HASH.th" into its signature and hash
 * (hex, 4+ digits). Returns 1 when the name carries a hash. */
static int split_checkpoint_name(const char *file, char *sig, size_t siglen, char *hash,
                                 size_t hashlen) {
    const char *dot = strrchr(file, '.');
    size_t stem = dot ? (size_t)(dot - file) : strlen(file);
    const char *dash = memchr(file, '-', stem);
    if (!dash) return 0;
    size_t hn = stem - (size_t)(dash + 1 - file);
    if (hn < 4 || hn >= hashlen || !is_hex(dash + 1, hn)) return 0;
    size_t sn = (size_t)(dash - file);
    if (sn == 0 || sn >= siglen) return 0;
    memcpy(sig, file, sn);
    sig[sn] = '\0';
    memcpy(hash, dash + 1, hn);
    hash[hn] = '\0';
    for (char *p = hash; *p; p++) *p = (char)tolower((unsigned char)*p);
    return 1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* A model name becomes part of file names: keep it a plain stem. */
static int valid_model_name(const char *name) {
    if (!name || !*name || !strcmp(name, ".") || !strcmp(name, "..")) return 0;
    return strchr(name, '/') == NULL;
}

char *models_cache_dir(void) {
    const char *d = getenv("DEMIX_MODELS");
    if (d && *d) return xstrdup(d);
    d = getenv("XDG_CACHE_HOME");
    if (d && *d == '/') return path_join(d, "demix");
    d = getenv("HOME");
    if (d && *d) return xasprintf("%s%s.cache/demix", d, ends_with(d, "/") ? "" : "/");
    return xstrdup(".cache/demix");
}

static char *model_url(const char *file) {
    const char *base = getenv("DEMIX_MODEL_URL");
    if (!base || !*base) base = DEFAULT_MODEL_URL;
    return xasprintf("%s%s%s", base, ends_with(base, "/") ? "" : "/", file);
}

/* ---- sha256 --------------------------------------------------------------------- */

/* Full hex sha256 of a file into hex[65]; 0 or -1 (errno set). */
static int sha256_file(const char *path, char hex[65]) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    size_t bufsz = 1 << 20;
    unsigned char *buf = xmalloc(bufsz);
    int err = 0;
    while (ok) {
        ssize_t n = read(fd, buf, bufsz);
        if (n < 0) {
            if (errno == EINTR) continue;
            err = errno;
            ok = 0;
            break;
        }
        if (n == 0) break;
        ok = EVP_DigestUpdate(ctx, buf, (size_t)n) == 1;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (ok) ok = EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32;
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    if (!ok) {
        errno = err ? err : EIO;
        return -1;
    }
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* Checks `path` against the hash in its file name (if any). Returns 1 match,
 * 0 mismatch (actual prefix in got[]), -1 unreadable, 2 no hash in the name. */
static int verify_named_file(const char *path, const char *name, char got[65],
                             char expect[65]) {
    char sig[128];
    if (!split_checkpoint_name(name, sig, sizeof sig, expect, 65)) return 2;
    if (sha256_file(path, got) != 0) return -1;
    return strncmp(got, expect, strlen(expect)) == 0;
}

/* ---- download --------------------------------------------------------------- */

typedef struct dl_ctx {
    int fd;
    int64_t start;    /* offset asked for with Range */
    int64_t pos;      /* where the next body byte goes */
    int64_t base;     /* offset the transfer counters are relative to */
    long status;      /* status of the latest response header block */
    int64_t cr_start; /* Content-Range start of that response, -1 if none */
    int body_started;
    int range_mismatch; /* a 206 for some other range: start again */
    int write_errno;
    int interrupted;
    int slot;
} dl_ctx;

static size_t dl_header(char *buf, size_t size, size_t nitems, void *user) {
    dl_ctx *c = user;
    size_t n = size * nitems;
    if (n >= 5 && !strncmp(buf, "HTTP/", 5)) {
        /* A new response (redirects and 100-continue each have their own). */
        const char *sp = memchr(buf, ' ', n);
        c->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        c->cr_start = -1;
    } else if (n > 14 && !strncasecmp(buf, "Content-Range:", 14)) {
        char tmp[128];
        size_t m = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
        memcpy(tmp, buf, m);
        tmp[m] = '\0';
        long long a;
        if (sscanf(tmp + 14, " bytes %lld-", &a) == 1) c->cr_start = a;
    }
    return n;
}

static size_t dl_write(char *data, size_t size, size_t nmemb, void *user) {
    dl_ctx *c = user;
    size_t n = size * nmemb;
    if (!c->body_started) {
        c->body_started = 1;
        if (c->status == 206) {
            if (c->cr_start != c->start) {
                c->range_mismatch = 1;
                return 0; /* aborts the transfer */
            }
        } else if (c->start > 0) {
            /* The server ignored Range and sends the whole file: start over
             * in place rather than making a second request. */
            if (ftruncate(c->fd, 0) != 0) {
                c->write_errno = errno;
                return 0;
            }
            c->pos = 0;
            c->base = 0;
            cli_debug("the server ignored the range request; downloading from the start");
        }
    }
    size_t off = 0;
    while (off < n) {
        ssize_t w = pwrite(c->fd, data + off, n - off, c->pos);
        if (w < 0) {
            if (errno == EINTR) continue;
            c->write_errno = errno;
            return 0;
        }
        off += (size_t)w;
        c->pos += w;
    }
    return n;
}

static int dl_xferinfo(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    (void)ultotal;
    (void)ulnow;
    dl_ctx *c = user;
    if (atomic_load(&cli_cancel)) {
        c->interrupted = 1;
        return 1;
    }
    if (c->body_started)
        progress_update(c->slot, c->base + dlnow, dltotal > 0 ? c->base + dltotal : -1);
    return 0;
}

static long env_seconds(const char *var, long dflt) {
    const char *s = getenv(var);
    if (!s || !*s) return dflt;
    char *end;
    long v = strtol(s, &end, 10);
    return (*end || v <= 0) ? dflt : v;
}

static int64_t file_size_fd(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Opens and locks DEST.part so that two demix processes never write the same
 * partial file; if another one finished meanwhile, *done_by_other is set. */
static int open_locked_part(const char *part, const char *dest, int *done_by_other) {
    *done_by_other = 0;
    for (int tries = 0; tries < 20; tries++) {
        int fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return -1;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK) {
                int e = errno;
                close(fd);
                errno = e;
                return -1;
            }
            cli_info("Waiting for another demix process that is downloading %s...", part);
            if (flock(fd, LOCK_EX) != 0) {
                int e = errno;
                close(fd);
                errno = e;
                return -1;
            }
        }
        if (path_exists(dest)) {
            /* Drop the empty .part we may have just created. */
            struct stat a, b;
            if (fstat(fd, &a) == 0 && stat(part, &b) == 0 && a.st_ino == b.st_ino &&
                a.st_dev == b.st_dev && a.st_size == 0)
                unlink(part);
            close(fd);
            *done_by_other = 1;
            return -1;
        }
        /* The holder may have renamed or deleted the file we waited on. */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(part, &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev)
            return fd;
        close(fd);
    }
    errno = EAGAIN;
    return -1;
}

/* How to get the file without us, appended to every download failure. */
static void print_manual_hint(const char *what, const char *url, const char *dest,
                              const char *model, int resumable) {
    cli_err("%s; run 'demix models fetch %s' to %s, or download %s elsewhere and save it as %s",
            what, model, resumable ? "resume" : "retry", url, dest);
}

/* Downloads one file into the cache, resuming DEST.part and verifying the
 * hash in its name. Returns EXIT_OK, EXIT_RUNTIME or EXIT_INTERRUPT. */
static int fetch_file(const char *cache, const char *file, const char *model) {
    char *dest = path_join(cache, file);
    char *part = xasprintf("%s.part", dest);
    char *url = model_url(file);
    int rc = EXIT_RUNTIME;
    int fd = -1;
    CURL *h = NULL;

    if (mkdir_p(cache, NULL, NULL) != 0) {
        cli_err("cannot create the model cache %s: %s (set DEMIX_MODELS to another folder)",
                cache, strerror(errno));
        goto out;
    }
    int done_by_other;
    fd = open_locked_part(part, dest, &done_by_other);
    if (fd < 0) {
        if (done_by_other) {
            rc = EXIT_OK;
        } else {
            cli_err("cannot write %s: %s", part, strerror(errno));
        }
        goto out;
    }

    h = curl_easy_init();
    if (!h) {
        cli_err("cannot initialise libcurl");
        goto out;
    }
    char errbuf[CURL_ERROR_SIZE];
    dl_ctx c;
    for (int attempt = 0; attempt < 3; attempt++) {
        memset(&c, 0, sizeof c);
        c.fd = fd;
        c.start = c.pos = c.base = file_size_fd(fd);
        if (c.start < 0) c.start = c.pos = c.base = 0;
        c.cr_start = -1;
        c.slot = 0;
        errbuf[0] = '\0';

        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        /* Only the web: no file://, ftp:// or others via a redirect. */
#if LIBCURL_VERSION_NUM >= 0x075500
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
        curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
        curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "demix/" DEMIX_CLI_VERSION);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        /* A dead network must fail in seconds, not hang: bounded connect
         * time, and abort when under 1 KiB/s for the stall window. */
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, env_seconds("DEMIX_CONNECT_TIMEOUT", 20));
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, env_seconds("DEMIX_STALL_TIMEOUT", 30));
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, dl_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &c);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, dl_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &c);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, dl_xferinfo);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, &c);
        char range[48];
        if (c.start > 0) {
            snprintf(range, sizeof range, "%lld-", (long long)c.start);
            curl_easy_setopt(h, CURLOPT_RANGE, range);
            cli_info("Resuming %s from %s at byte %lld", file, url, (long long)c.start);
        } else {
            cli_info("Downloading %s from %s", file, url);
        }

        progress_start(0, file, PROGRESS_BYTES);
        CURLcode res = curl_easy_perform(h);
        progress_end(0);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);

        if (c.interrupted) {
            cli_err("download of %s interrupted; %lld bytes kept in %s for 'demix models fetch "
                    "%s' to resume",
                    file, (long long)c.pos, part, model);
            rc = EXIT_INTERRUPT;
            goto out;
        }
        if (c.write_errno) {
            cli_err("cannot write %s: %s", part, strerror(c.write_errno));
            goto out;
        }
        if (c.range_mismatch) {
            cli_debug("the server answered a different range; downloading from the start");
            if (ftruncate(fd, 0) != 0) {
                cli_err("cannot truncate %s: %s", part, strerror(errno));
                goto out;
            }
            continue;
        }
        int complete = res == CURLE_OK;
        /* 416: nothing left after our offset - the part may be whole. */
        if (res == CURLE_HTTP_RETURNED_ERROR && status == 416 && c.start > 0) complete = 1;
        if (!complete) {
            char what[1024];
            const char *reason = errbuf[0] ? errbuf : curl_easy_strerror(res);
            if (res == CURLE_HTTP_RETURNED_ERROR)
                snprintf(what, sizeof what, "downloading %s failed: HTTP %ld", url, status);
            else
                snprintf(what, sizeof what, "downloading %s failed: %s%s", url, reason,
                         (res == CURLE_OPERATION_TIMEDOUT) ? " (network too slow or stalled)" : "");
            int64_t have = file_size_fd(fd);
            if (have <= 0) {
                unlink(part);
                print_manual_hint(what, url, dest, model, 0);
            } else {
                char kept[1200];
                snprintf(kept, sizeof kept, "%s (%lld bytes kept in %s)", what, (long long)have,
                         part);
                print_manual_hint(kept, url, dest, model, 1);
            }
            goto out;
        }

        /* Whole file on disk: check it before it may be used. */
        char got[65], expect[65];
        int v = verify_named_file(part, file, got, expect);
        if (v == 1 || v == 2) {
            if (fsync(fd) != 0 || rename(part, dest) != 0) {
                cli_err("cannot move %s into place: %s", dest, strerror(errno));
                goto out;
            }
            cli_info("Saved %s", dest);
            rc = EXIT_OK;
            goto out;
        }
        if (v < 0) {
            cli_err("cannot read back %s: %s", part, strerror(errno));
            goto out;
        }
        if (c.start > 0 && attempt == 0) {
            /* A resumed file can be spoiled by a stale .part from another
             * server version: one clean retry before giving up. */
            cli_warn("%s does not match its checksum after resuming; downloading it again", file);
            if (ftruncate(fd, 0) != 0) {
                cli_err("cannot truncate %s: %s", part, strerror(errno));
                goto out;
            }
            continue;
        }
        unlink(part);
        cli_err("checksum mismatch for %s: its sha256 starts with %.*s, expected %s; the "
                "download was deleted (is DEMIX_MODEL_URL right?)",
                url, (int)strlen(expect), got, expect);
        goto out;
    }
    cli_err("downloading %s failed: the server keeps sending the wrong byte ranges", url);
out:
    if (h) curl_easy_cleanup(h);
    if (fd >= 0) close(fd);
    free(url);
    free(part);
    free(dest);
    return rc;
}

static int g_curl_ready;

static void curl_once(void) {
    if (!g_curl_ready) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        g_curl_ready = 1;
        atexit(curl_global_cleanup);
    }
}

/* Writes a bag's YAML into the cache atomically. */
static int write_bag_yaml(const char *cache, const reg_model *m) {
    char *dest = path_join(cache, m->load_file);
    char *tmp = xasprintf("%s.part", dest);
    int rc = EXIT_RUNTIME;
    FILE *f = fopen(tmp, "w");
    if (f && fputs(m->bag_yaml, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0) {
        if (fclose(f) == 0 && rename(tmp, dest) == 0) rc = EXIT_OK;
        f = NULL;
    }
    if (f) fclose(f);
    if (rc != EXIT_OK) {
        cli_err("cannot write %s: %s", dest, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    free(dest);
    return rc;
}

/* Makes every file of registry model `m` present in the cache. */
static int fetch_registry_model(const char *cache, const reg_model *m, int verify_present) {
    curl_once();
    progress_init(1);
    int rc = EXIT_OK;
    for (const char *const *f = m->files; *f && rc == EXIT_OK; f++) {
        char *p = path_join(cache, *f);
        if (path_exists(p)) {
            if (verify_present) {
                char got[65], expect[65];
                int v = verify_named_file(p, *f, got, expect);
                if (v == 0) {
                    cli_warn("%s does not match its checksum (sha256 %.8s..., expected %s); "
                             "downloading it again",
                             p, got, expect);
                    unlink(p);
                } else if (v < 0) {
                    cli_err("cannot read %s: %s", p, strerror(errno));
                    rc = EXIT_RUNTIME;
                } else {
                    cli_info("%s is already in the cache and verified", *f);
                }
            }
        }
        if (rc == EXIT_OK && !path_exists(p)) rc = fetch_file(cache, *f, m->name);
        free(p);
    }
    if (rc == EXIT_OK && m->bag_yaml) rc = write_bag_yaml(cache, m);
    progress_shutdown();
    return rc;
}

/* ---- local repositories ------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted list of the names of regular files in dir ending with one of the
 * suffixes. */
static char **list_dir(const char *dir, const char *suf1, const char *suf2, size_t *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char **v = NULL;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (!(ends_with(e->d_name, suf1) || (suf2 && ends_with(e->d_name, suf2)))) continue;
        char *p = path_join(dir, e->d_name);
        struct stat st;
        int reg = stat(p, &st) == 0 && S_ISREG(st.st_mode);
        free(p);
        if (!reg) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            v = realloc(v, cap * sizeof *v);
            if (!v) abort();
        }
        v[(*n)++] = xstrdup(e->d_name);
    }
    closedir(d);
    if (*n) qsort(v, *n, sizeof *v, cmp_str);
    return v;
}

static void free_list(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* Signature of a checkpoint file name: "SIG" of SIG-HASH.th, else the stem. */
static void checkpoint_sig(const char *file, char *sig, size_t n) {
    char hash[65];
    if (split_checkpoint_name(file, sig, n, hash, sizeof hash)) return;
    snprintf(sig, n, "%.*s", (int)(strlen(file) - 3), file);
}

/* Upstream's local repository lookup: a single checkpoint named NAME.th or
 * NAME-HASH.th first, then a bag NAME.yaml. Returns 1 found (*path set),
 * 0 not found, -1 error (printed). `check` verifies the hash like upstream's
 * LocalRepo does on every load. */
static int resolve_local(const char *dir, const char *name, int check, char **path) {
    size_t n;
    char **th = list_dir(dir, ".th", NULL, &n);
    const char *hit = NULL;
    for (size_t i = 0; i < n; i++) {
        char sig[256];
        checkpoint_sig(th[i], sig, sizeof sig);
        if (strcmp(sig, name)) continue;
        if (hit) {
            cli_err("%s holds several checkpoints for model '%s' (%s and %s); delete all but one",
                    dir, name, hit, th[i]);
            free_list(th, n);
            return -1;
        }
        hit = th[i];
    }
    if (hit) {
        char *p = path_join(dir, hit);
        if (check) {
            char got[65], expect[65];
            int v = verify_named_file(p, hit, got, expect);
            if (v == 0) {
                cli_err("checksum mismatch for %s: its sha256 starts with %.*s, expected %s", p,
                        (int)strlen(expect), got, expect);
                free(p);
                free_list(th, n);
                return -1;
            }
            if (v < 0) {
                cli_err("cannot read %s: %s", p, strerror(errno));
                free(p);
                free_list(th, n);
                return -1;
            }
        }
        free_list(th, n);
        *path = p;
        return 1;
    }
    free_list(th, n);
    char *y = xasprintf("%s/%s.yaml", dir, name);
    if (path_exists(y)) {
        *path = y;
        return 1;
    }
    free(y);
    return 0;
}

static void known_names(char *buf, size_t n) {
    buf[0] = '\0';
    for (size_t i = 0; i < N_REGISTRY; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, "%s%s", i ? ", " : "", REGISTRY[i].name);
    }
}

/* Registry model present in the cache? Returns its load path or NULL. */
static char *registry_cached(const char *cache, const reg_model *m, int *n_present) {
    int have = 0, total = 0;
    for (const char *const *f = m->files; *f; f++) {
        char *p = path_join(cache, *f);
        have += path_exists(p);
        total++;
        free(p);
    }
    char *load = path_join(cache, m->load_file);
    int ok = have == total && path_exists(load);
    if (n_present) *n_present = have + (m->bag_yaml && path_exists(load));
    if (!ok) {
        free(load);
        return NULL;
    }
    return load;
}

int models_resolve(const char *name, const char *repo, int allow_fetch, char **path) {
    *path = NULL;
    if (!valid_model_name(name)) return cli_usage_error(NULL, "invalid model name '%s'", name);
    if (repo) {
        if (!is_directory(repo)) {
            cli_err("--repo %s: not a directory", repo);
            return EXIT_RUNTIME;
        }
        int r = resolve_local(repo, name, 1, path);
        if (r < 0) return EXIT_RUNTIME;
        if (r == 0) {
            cli_err("model '%s' not found in %s (looked for %s.th, %s-<hash>.th and %s.yaml)", name,
                    repo, name, name, name);
            return EXIT_RUNTIME;
        }
        return EXIT_OK;
    }

    char *cache = models_cache_dir();
    int rc = EXIT_RUNTIME;
    const reg_model *m = registry_find(name);
    const char *file = m ? NULL : registry_file(name);
    if (m) {
        *path = registry_cached(cache, m, NULL);
        if (!*path && allow_fetch) {
            int have = 0, total = 0;
            for (const char *const *f = m->files; *f; f++, total++) {
                char *p = path_join(cache, *f);
                have += path_exists(p);
                free(p);
            }
            if (have < total)
                cli_info("Model %s (%s) is not in the cache %s yet; downloading it", name,
                         m->approx_size, cache);
            if ((rc = fetch_registry_model(cache, m, 0)) != EXIT_OK) goto out;
            *path = registry_cached(cache, m, NULL);
        }
    } else if (file) {
        *path = path_join(cache, file);
        if (!path_exists(*path)) {
            free(*path);
            *path = NULL;
            if (allow_fetch) {
                curl_once();
                progress_init(1);
                rc = fetch_file(cache, file, name);
                progress_shutdown();
                if (rc != EXIT_OK) goto out;
                *path = path_join(cache, file);
            }
        }
    } else {
        int r = resolve_local(cache, name, 0, path);
        if (r < 0) goto out;
        if (r == 0) {
            char names[256];
            known_names(names, sizeof names);
            cli_err("unknown model '%s': not in the cache %s, and demix can download only %s "
                    "(use --repo DIR for models kept elsewhere)",
                    name, cache, names);
            goto out;
        }
    }
    if (!*path) {
        cli_err("model '%s' is not in the cache %s; run 'demix models fetch %s'", name, cache,
                name);
        goto out;
    }
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK) {
        free(*path);
        *path = NULL;
    }
    free(cache);
    return rc;
}

/* ---- demix models ----------------------------------------------------------------- */

static int64_t file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Is `file` one of the registry's files (so not listed as an extra)? */
static int is_registry_file(const char *file) {
    for (size_t i = 0; i < N_REGISTRY; i++) {
        if (!strcmp(REGISTRY[i].load_file, file)) return 1;
        for (const char *const *f = REGISTRY[i].files; *f; f++)
            if (!strcmp(*f, file)) return 1;
    }
    return 0;
}

static void list_local_models(const char *dir, int skip_registry, int *count) {
    size_t n;
    char **v = list_dir(dir, ".th", ".yaml", &n);
    for (size_t i = 0; i < n; i++) {
        if (skip_registry && is_registry_file(v[i])) continue;
        char sig[256], size[32];
        int bag = ends_with(v[i], ".yaml");
        if (bag)
            snprintf(sig, sizeof sig, "%.*s", (int)(strlen(v[i]) - 5), v[i]);
        else
            checkpoint_sig(v[i], sig, sizeof sig);
        char *p = path_join(dir, v[i]);
        format_bytes(file_size(p), size, sizeof size);
        printf("%-20s %-42s %-10s %s %s\n", sig, bag ? "(bag of models)" : "-", bag ? "-" : size,
               "local:", p);
        free(p);
        (*count)++;
    }
    free_list(v, n);
}

static int models_list(const char *repo) {
    printf("%-20s %-42s %-10s %s\n", "NAME", "SOURCES", "SIZE", "STATUS");
    int count = 0;
    if (repo) {
        if (!is_directory(repo)) {
            cli_err("--repo %s: not a directory", repo);
            return EXIT_RUNTIME;
        }
        list_local_models(repo, 0, &count);
        if (!count) printf("(no .th or .yaml models in %s)\n", repo);
        return EXIT_OK;
    }
    char *cache = models_cache_dir();
    for (size_t i = 0; i < N_REGISTRY; i++) {
        const reg_model *m = &REGISTRY[i];
        int present = 0, nfiles = 0;
        for (const char *const *f = m->files; *f; f++) nfiles++;
        if (m->bag_yaml) nfiles++;
        char *load = registry_cached(cache, m, &present);
        char size[32];
        if (load) {
            int64_t total = 0;
            for (const char *const *f = m->files; *f; f++) {
                char *p = path_join(cache, *f);
                total += file_size(p);
                free(p);
            }
            format_bytes(total, size, sizeof size);
            printf("%-20s %-42s %-10s cached: %s\n", m->name, m->sources, size, load);
        } else if (present) {
            printf("%-20s %-42s %-10s partly cached (%d of %d files)\n", m->name, m->sources,
                   m->approx_size, present, nfiles);
        } else {
            printf("%-20s %-42s %-10s not cached\n", m->name, m->sources, m->approx_size);
        }
        free(load);
    }
    if (is_directory(cache)) list_local_models(cache, 1, &count);
    printf("\nCache: %s (set DEMIX_MODELS to change; 'demix models fetch NAME' downloads)\n",
           cache);
    free(cache);
    return EXIT_OK;
}

/* `demix models fetch NAME`: a registry model, a registry signature, or any
 * upstream-style file name SIG-HASH.th under $DEMIX_MODEL_URL. */
static int models_fetch(const char *name) {
    char *cache = models_cache_dir();
    int rc;
    const reg_model *m = registry_find(name);
    const char *file = m ? NULL : registry_file(name);
    char sig[128], hash[65];
    if (m) {
        rc = fetch_registry_model(cache, m, 1);
        if (rc == EXIT_OK) {
            char *p = path_join(cache, m->load_file);
            cli_info("Model %s is ready: %s", name, p);
            free(p);
        }
    } else if (file || (valid_model_name(name) && ends_with(name, ".th") &&
                        split_checkpoint_name(name, sig, sizeof sig, hash, sizeof hash))) {
        const char *f = file ? file : name;
        reg_model one = {name, "", "", f, {f, NULL}, NULL};
        rc = fetch_registry_model(cache, &one, 1);
    } else {
        char names[256];
        known_names(names, sizeof names);
        rc = cli_usage_error("models",
                             "cannot fetch '%s': expected one of %s, or a checkpoint file name "
                             "SIG-HASH.th",
                             name, names);
    }
    free(cache);
    return rc;
}

/* Verifies one file; prints a line; returns 1 if it is fine. */
static int verify_one(const char *dir, const char *file) {
    char *p = path_join(dir, file);
    char got[65], expect[65];
    int ok = 1;
    if (!path_exists(p)) {
        printf("missing   %s\n", p);
        ok = 0;
    } else {
        int v = verify_named_file(p, file, got, expect);
        if (v == 1)
            printf("ok        %s\n", p);
        else if (v == 2)
            printf("no hash   %s (nothing to verify)\n", p);
        else if (v == 0) {
            printf("MISMATCH  %s (sha256 %.*s..., expected %s)\n", p, (int)strlen(expect), got,
                   expect);
            ok = 0;
        } else {
            printf("ERROR     %s (%s)\n", p, strerror(errno));
            ok = 0;
        }
    }
    fflush(stdout);
    free(p);
    return ok;
}

static int models_verify(char **names, int n, const char *repo) {
    char *dir = repo ? xstrdup(repo) : models_cache_dir();
    int bad = 0, checked = 0;
    if (!is_directory(dir)) {
        int rc = EXIT_OK;
        if (repo || n) {
            cli_err("%s does not exist", dir);
            rc = EXIT_RUNTIME;
        } else {
            cli_info("No models cached in %s.", dir);
        }
        free(dir);
        return rc;
    }
    if (n == 0) {
        size_t k;
        char **v = list_dir(dir, ".th", ".part", &k);
        for (size_t i = 0; i < k; i++) {
            if (ends_with(v[i], ".part")) {
                printf("partial   %s/%s (an unfinished download; 'demix models fetch' resumes it)\n",
                       dir, v[i]);
                continue;
            }
            bad += !verify_one(dir, v[i]);
            checked++;
        }
        free_list(v, k);
    }
    for (int i = 0; i < n; i++) {
        const reg_model *m = repo ? NULL : registry_find(names[i]);
        const char *file = (repo || m) ? NULL : registry_file(names[i]);
        if (m) {
            for (const char *const *f = m->files; *f; f++, checked++) bad += !verify_one(dir, *f);
            if (m->bag_yaml) {
                char *y = path_join(dir, m->load_file);
                if (!path_exists(y)) {
                    printf("missing   %s\n", y);
                    bad++;
                }
                free(y);
            }
        } else if (file) {
            bad += !verify_one(dir, file);
            checked++;
        } else if (valid_model_name(names[i]) && ends_with(names[i], ".th")) {
            bad += !verify_one(dir, names[i]); /* a checkpoint file name */
            checked++;
        } else {
            checked++;
            char *p = NULL;
            int r = valid_model_name(names[i]) ? resolve_local(dir, names[i], 0, &p) : 0;
            if (r < 0) {
                bad++;
            } else if (r == 0) {
                printf("missing   %s (no such model in %s)\n", names[i], dir);
                bad++;
            } else {
                const char *base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
                bad += !verify_one(dir, base);
            }
            free(p);
        }
    }
    free(dir);
    if (bad) {
        cli_err("%d of %d model files failed verification; 'demix models fetch NAME' downloads "
                "missing or damaged files again",
                bad, checked);
        return EXIT_RUNTIME;
    }
    if (checked == 0 && n == 0) cli_info("No model files to verify.");
    return EXIT_OK;
}

static int models_path(const char *name, const char *repo) {
    char *p = NULL;
    if (!repo) {
        const reg_model *m = registry_find(name);
        if (m) {
            char *cache = models_cache_dir();
            p = path_join(cache, m->load_file);
            char *load = registry_cached(cache, m, NULL);
            free(cache);
            printf("%s\n", p);
            fflush(stdout);
            int rc = EXIT_OK;
            if (!load) {
                cli_err("model %s is not downloaded yet; run 'demix models fetch %s'", name, name);
                rc = EXIT_RUNTIME;
            }
            free(load);
            free(p);
            return rc;
        }
    }
    int rc = models_resolve(name, repo, 0, &p);
    if (rc == EXIT_OK) printf("%s\n", p);
    free(p);
    return rc;
}

int cmd_models(int argc, char **argv) {
    static const struct option longopts[] = {
        {"repo", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    const char *repo = NULL;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":hvq", longopts, NULL)) != -1) {
        switch (c) {
        case 'r': repo = optarg; break;
        case 'h': print_models_help(stdout); return EXIT_OK;
        case 'v': cli_verbosity = 1; break;
        case 'q': cli_verbosity = -1; break;
        default: return report_getopt_error("models", argc, argv, c);
        }
    }
    if (optind >= argc)
        return cli_usage_error("models", "missing action: list, fetch, verify or path");
    const char *action = argv[optind++];
    int nargs = argc - optind;
    char **args = argv + optind;
    if (!strcmp(action, "list")) {
        if (nargs) return cli_usage_error("models", "'models list' takes no names");
        return models_list(repo);
    }
    if (!strcmp(action, "fetch")) {
        if (repo) return cli_usage_error("models", "'models fetch' downloads into the cache; --repo does not apply");
        if (!nargs) return cli_usage_error("models", "'models fetch' needs a model name");
        int rc = EXIT_OK;
        for (int i = 0; i < nargs && rc != EXIT_INTERRUPT; i++) {
            int r = models_fetch(args[i]);
            if (r != EXIT_OK && rc == EXIT_OK) rc = r;
            if (r == EXIT_INTERRUPT) rc = r;
        }
        return rc;
    }
    if (!strcmp(action, "verify")) return models_verify(args, nargs, repo);
    if (!strcmp(action, "path")) {
        if (nargs != 1) return cli_usage_error("models", "'models path' needs exactly one model name");
        return models_path(args[0], repo);
    }
    return cli_usage_error("models", "unknown action '%s' (expected list, fetch, verify or path)",
                           action);
}
