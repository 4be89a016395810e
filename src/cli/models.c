/*
 * models.c - the `demix models` subcommand and model resolution for
 * `demix separate`: resumable downloads with libcurl and sha256 verification
 * with OpenSSL's libcrypto, on top of the engine's model registry
 * (include/demix/repo.h), which alone knows upstream's models and files, the
 * naming rule, the cache folder and how a name finds its file.
 *
 * Upstream names a checkpoint SIG-CHECKSUM.th where CHECKSUM is a prefix of
 * the file's sha256; that prefix is the only integrity check there is, so a
 * file enters the cache (is renamed from NAME.part) only once it matches.
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
#include "demix/demix.h"
#include "demix/repo.h"

/* ---- registry ------------------------------------------------------------------ */

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

char *models_cache_dir(void) {
    char *d = NULL;
    if (dmx_repo_cache_dir(&d) != DMX_OK) abort(); /* out of memory only */
    return d;
}

static char *model_url(const char *file) {
    char *u = NULL;
    if (dmx_repo_file_url(file, &u) != DMX_OK) abort(); /* out of memory only */
    return u;
}

/* "drums, bass, other, vocals" of a known model. */
static void model_sources(const dmx_repo_model *m, char *buf, size_t n) {
    buf[0] = '\0';
    for (int32_t i = 0; i < dmx_repo_model_n_sources(m); i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, "%s%s", i ? ", " : "", dmx_repo_model_source(m, i));
    }
}

static void approx_size(const dmx_repo_model *m, char *buf, size_t n) {
    int64_t b = dmx_repo_model_approx_bytes(m);
    if (b > 0) {
        char t[24];
        format_bytes(b, t, sizeof t);
        snprintf(buf, n, "~%s", t);
    } else {
        snprintf(buf, n, "?");
    }
}

/* The distinct checkpoint files of a known model (members may repeat). */
static int model_files(const dmx_repo_model *m, const dmx_repo_file **out) {
    int n = 0;
    for (int32_t i = 0; i < m->n_members; i++) {
        const dmx_repo_file *f = dmx_repo_model_member(m, i);
        int dup = 0;
        for (int j = 0; j < n; j++) dup |= out[j] == f;
        if (!dup) out[n++] = f;
    }
    return n;
}

/* ---- sha256 --------------------------------------------------------------------- */

/* Full hex digest (sha256, or md5 with `md5`) of a file into hex[65]; 0 or
 * -1 (errno set). */
static int digest_file(const char *path, int md5, char hex[65]) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, md5 ? EVP_md5() : EVP_sha256(), NULL) == 1;
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
    if (ok) ok = EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == (md5 ? 16u : 32u);
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    if (!ok) {
        errno = err ? err : EIO;
        return -1;
    }
    for (unsigned i = 0; i < mdlen; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static int sha256_file(const char *path, char hex[65]) { return digest_file(path, 0, hex); }

/* What a downloaded file must be: a sha256 (full, or the prefix an upstream
 * name carries), an md5, an exact size, an MSST config of a known model.
 * Whatever is set is checked. */
typedef struct file_check {
    char sha256[65];
    char md5[33];
    int64_t bytes;
    const dmx_repo_msst_model *config_of;
} file_check;

/* The check an upstream file name implies (its checksum prefix). */
static file_check named_check(const char *name) {
    file_check c;
    memset(&c, 0, sizeof c);
    dmx_repo_entry e;
    if (dmx_repo_parse_name(name, &e) == DMX_OK && e.kind == DMX_REPO_CHECKPOINT)
        snprintf(c.sha256, sizeof c.sha256, "%s", e.checksum);
    return c;
}

static file_check remote_check(const dmx_repo_remote *r, const dmx_repo_msst_model *config_of) {
    file_check c;
    memset(&c, 0, sizeof c);
    if (r->sha256) snprintf(c.sha256, sizeof c.sha256, "%s", r->sha256);
    if (r->md5) snprintf(c.md5, sizeof c.md5, "%s", r->md5);
    c.bytes = r->bytes;
    c.config_of = config_of;
    return c;
}

/* 1 when a check has a digest: the file is then identified, not just plausible. */
static int check_has_digest(const file_check *c) { return c->sha256[0] || c->md5[0]; }

/* Checks `path` against `c`. Returns 1 match, 0 mismatch (why[] says how:
 * "checksum ..." for a digest), -1 unreadable (errno set), 2 nothing to
 * check. */
static int check_file(const char *path, const file_check *c, char *why, size_t wn) {
    why[0] = '\0';
    int checked = 0;
    if (c->bytes > 0) {
        struct stat st;
        if (stat(path, &st) != 0) return -1;
        if ((int64_t)st.st_size != c->bytes) {
            snprintf(why, wn, "size mismatch: %lld bytes, expected %lld", (long long)st.st_size,
                     (long long)c->bytes);
            return 0;
        }
        checked = 1;
    }
    for (int md5 = 0; md5 < 2; md5++) {
        const char *want = md5 ? c->md5 : c->sha256;
        if (!want[0]) continue;
        char got[65];
        if (digest_file(path, md5, got) != 0) return -1;
        if (strncmp(got, want, strlen(want))) {
            snprintf(why, wn, "checksum mismatch: its %s starts with %.*s, expected %s",
                     md5 ? "md5" : "sha256", (int)strlen(want), got, want);
            return 0;
        }
        checked = 1;
    }
    if (c->config_of) {
        if (dmx_repo_msst_check_config(c->config_of, path) != DMX_OK) {
            snprintf(why, wn, "not the config of %s: %s", c->config_of->name, dmx_last_error());
            return 0;
        }
        checked = 1;
    }
    return checked ? 1 : 2;
}

/* Checks `path` against the checksum in its file name `name` (the naming
 * rule's). Returns 1 match, 0 mismatch (actual prefix in got[]), -1
 * unreadable, 2 no checksum in the name. */
static int verify_named_file(const char *path, const char *name, char got[65], char expect[65]) {
    dmx_repo_entry e;
    if (dmx_repo_parse_name(name, &e) != DMX_OK || e.kind != DMX_REPO_CHECKPOINT || !e.checksum[0])
        return 2;
    snprintf(expect, 65, "%s", e.checksum);
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

/* Downloads `url` into the cache as `file`, resuming FILE.part, and moves it
 * into place only once it passes `chk`. Returns EXIT_OK, EXIT_RUNTIME or
 * EXIT_INTERRUPT. */
static int fetch_file(const char *cache, const char *file, const char *url_in,
                      const file_check *chk, const char *model) {
    char *dest = path_join(cache, file);
    char *part = xasprintf("%s.part", dest);
    char *url = xstrdup(url_in);
    int rc = EXIT_RUNTIME;
    int fd = -1;
    CURL *h = NULL;

    if (mkdir_p(cache, NULL, NULL) != 0) {
        cli_err("cannot create the model cache %s: %s (set DEMIX_MODELS to another folder)", cache,
                strerror(errno));
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
        char why[1024];
        int v = check_file(part, chk, why, sizeof why);
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
            cli_warn("%s does not pass its check after resuming (%s); downloading it again", file,
                     why);
            if (ftruncate(fd, 0) != 0) {
                cli_err("cannot truncate %s: %s", part, strerror(errno));
                goto out;
            }
            continue;
        }
        unlink(part);
        cli_err("%s for %s; the download was deleted (is DEMIX_MODEL_URL right?)", why, url);
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

/* Writes a known bag's YAML (upstream's remote/NAME.yaml) into the cache
 * atomically, so that the cache resolves NAME like upstream's repo does. */
static int write_bag_yaml(const char *cache, const dmx_repo_model *m) {
    char *name = xasprintf("%s.yaml", m->name);
    char *dest = path_join(cache, name);
    char *tmp = xasprintf("%s.part", dest);
    int rc = EXIT_RUNTIME;
    FILE *f = fopen(tmp, "w");
    if (f && fputs(m->yaml, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0) {
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
    free(name);
    return rc;
}

/* Makes one file present in the cache as `file` (verifying a present one
 * first if asked); `url` NULL: upstream's URL of that name. */
static int fetch_checked_file(const char *cache, const char *file, const char *url,
                              const file_check *chk, const char *model, int verify_present) {
    char *p = path_join(cache, file);
    int rc = EXIT_OK;
    if (path_exists(p) && verify_present) {
        char why[1024];
        int v = check_file(p, chk, why, sizeof why);
        if (v == 0) {
            cli_warn("%s: %s; downloading it again", p, why);
            unlink(p);
        } else if (v < 0) {
            cli_err("cannot read %s: %s", p, strerror(errno));
            rc = EXIT_RUNTIME;
        } else {
            cli_info("%s is already in the cache and verified", file);
        }
    }
    if (rc == EXIT_OK && !path_exists(p)) {
        char *u = url ? xstrdup(url) : model_url(file);
        rc = fetch_file(cache, file, u, chk, model);
        free(u);
    }
    free(p);
    return rc;
}

static int fetch_known_file(const char *cache, const char *file, const char *model,
                            int verify_present) {
    file_check chk = named_check(file);
    return fetch_checked_file(cache, file, NULL, &chk, model, verify_present);
}

/* A RoFormer checkpoint of the table: its .ckpt, then its config (whose
 * presence makes NAME resolve), both checked; a checkpoint that no public
 * checksum identifies must also load with the config (every tensor's name
 * and shape), or both files are removed. */
static int fetch_msst_model(const char *cache, const dmx_repo_msst_model *m, int verify_present) {
    curl_once();
    progress_init(1);
    char *ck_file = xasprintf("%s.ckpt", m->name), *y_file = xasprintf("%s.yaml", m->name);
    char *ck_path = path_join(cache, ck_file), *y_path = path_join(cache, y_file);
    char *u = NULL;
    int had_yaml = path_exists(y_path);
    file_check ck = remote_check(&m->checkpoint, NULL), yc = remote_check(&m->config, m);
    if (dmx_repo_msst_url(m, 1, &u) != DMX_OK) abort(); /* out of memory only */
    int rc = fetch_checked_file(cache, ck_file, u, &ck, m->name, verify_present);
    free(u);
    if (rc == EXIT_OK) {
        if (dmx_repo_msst_url(m, 0, &u) != DMX_OK) abort();
        rc = fetch_checked_file(cache, y_file, u, &yc, m->name, verify_present);
        free(u);
    }
    if (rc == EXIT_OK && !check_has_digest(&ck) && (!had_yaml || verify_present)) {
        cli_info("No public checksum identifies %s; checking that it loads with its config",
                 ck_file);
        dmx_model *model = NULL;
        if (dmx_model_load_config(y_path, ck_path, &model) != DMX_OK) {
            cli_err("%s does not load with its config (%s); both files were deleted (is "
                    "DEMIX_MODEL_URL right?)",
                    ck_file, dmx_last_error());
            unlink(y_path);
            unlink(ck_path);
            rc = EXIT_RUNTIME;
        }
        dmx_model_free(model);
    }
    progress_shutdown();
    free(ck_path);
    free(y_path);
    free(ck_file);
    free(y_file);
    return rc;
}

/* Makes every file of known model `m` present in the cache; then writes its
 * YAML unless loading its one member is the same model. */
static int fetch_known_model(const char *cache, const dmx_repo_model *m, int verify_present) {
    curl_once();
    progress_init(1);
    const dmx_repo_file *files[DMX_REPO_MAX_MEMBERS];
    int n = model_files(m, files);
    int rc = EXIT_OK;
    for (int i = 0; i < n && rc == EXIT_OK; i++)
        rc = fetch_known_file(cache, files[i]->file, m->name, verify_present);
    if (rc == EXIT_OK && !m->direct) rc = write_bag_yaml(cache, m);
    progress_shutdown();
    return rc;
}

static int fetch_one_file(const char *cache, const char *file, const char *model,
                          int verify_present) {
    curl_once();
    progress_init(1);
    int rc = fetch_known_file(cache, file, model, verify_present);
    progress_shutdown();
    return rc;
}

/* ---- resolution ------------------------------------------------------------------ */

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

static void known_names(char *buf, size_t n) {
    buf[0] = '\0';
    for (size_t i = 0; i < dmx_repo_n_models(); i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, "%s%s", i ? ", " : "", dmx_repo_model_at(i)->name);
    }
    size_t l = strlen(buf);
    snprintf(buf + l, n - l, " (Demucs) or a RoFormer checkpoint of 'demix models list'");
}

/* Upstream's LocalRepo checks a checkpoint's checksum on every load. */
static int check_hit(const dmx_repo_hit *h) {
    if (h->kind != DMX_REPO_CHECKPOINT || !h->checksum[0]) return 0;
    char got[65], expect[65];
    int v = verify_named_file(h->path, h->file, got, expect);
    if (v == 0) {
        cli_err("checksum mismatch for %s: its sha256 starts with %.*s, expected %s", h->path,
                (int)strlen(expect), got, expect);
        return -1;
    }
    if (v < 0) {
        cli_err("cannot read %s: %s", h->path, strerror(errno));
        return -1;
    }
    return 0;
}

/* How many of a known model's files are in the cache (the YAML counts as one
 * for a model that needs it); 1 if it resolves there. */
static int known_cached(const char *cache, const dmx_repo_model *m, int *present, int *total) {
    const dmx_repo_file *files[DMX_REPO_MAX_MEMBERS];
    int n = model_files(m, files);
    *present = 0;
    *total = n + !m->direct;
    for (int i = 0; i < n; i++) {
        char *p = path_join(cache, files[i]->file);
        *present += path_exists(p);
        free(p);
    }
    if (!m->direct) {
        char *y = xasprintf("%s/%s.yaml", cache, m->name);
        *present += path_exists(y);
        free(y);
    }
    return *present == *total;
}

int models_resolve(const char *name, const char *repo, int allow_fetch, char **path) {
    *path = NULL;
    if (!dmx_repo_name_valid(name)) return cli_usage_error(NULL, "invalid model name '%s'", name);
    dmx_repo_hit h;
    dmx_status st;
    if (repo) {
        if (!is_directory(repo)) {
            cli_err("--repo %s: not a directory", repo);
            return EXIT_RUNTIME;
        }
        if ((st = dmx_repo_find(repo, name, &h)) != DMX_OK) {
            cli_err("%s", dmx_last_error());
            return EXIT_RUNTIME;
        }
        int bad = check_hit(&h);
        if (!bad) *path = xstrdup(h.path);
        dmx_repo_hit_clear(&h);
        return bad ? EXIT_RUNTIME : EXIT_OK;
    }

    char *cache = models_cache_dir();
    int rc = EXIT_RUNTIME;
    st = dmx_repo_resolve(NULL, name, &h);
    if (st == DMX_ERR_NOT_FOUND && allow_fetch) {
        /* Upstream's remote repo: a known name or a known signature; or a
         * RoFormer checkpoint of the table. */
        const dmx_repo_model *m = h.known;
        const dmx_repo_msst_model *rf = h.msst;
        const dmx_repo_file *f = m || rf ? NULL : dmx_repo_file_find(name);
        if (m || f || rf) {
            if (rf) {
                cli_info("Model %s is not in the cache %s yet; downloading it", name, cache);
                rc = fetch_msst_model(cache, rf, 0);
            } else if (m) {
                char size[32];
                approx_size(m, size, sizeof size);
                const dmx_repo_file *files[DMX_REPO_MAX_MEMBERS];
                int nf = model_files(m, files), have = 0;
                for (int i = 0; i < nf; i++) {
                    char *p = path_join(cache, files[i]->file);
                    have += path_exists(p);
                    free(p);
                }
                if (have < nf)
                    cli_info("Model %s (%s) is not in the cache %s yet; downloading it", name, size,
                             cache);
                rc = fetch_known_model(cache, m, 0);
            } else {
                rc = fetch_one_file(cache, f->file, name, 0);
            }
            if (rc != EXIT_OK) goto out;
            rc = EXIT_RUNTIME;
            dmx_repo_hit_clear(&h);
            st = dmx_repo_resolve(NULL, name, &h);
        }
    }
    if (st != DMX_OK) {
        if (st == DMX_ERR_NOT_FOUND && !h.known && !h.msst && !dmx_repo_file_find(name)) {
            char names[512];
            known_names(names, sizeof names);
            cli_err(
                "unknown model '%s': not in the cache %s, and upstream publishes only %s (or their "
                "signatures); use --repo DIR for models kept elsewhere",
                name, cache, names);
        } else {
            cli_err("%s", dmx_last_error());
        }
        goto out;
    }
    *path = xstrdup(h.path);
    rc = EXIT_OK;
out:
    dmx_repo_hit_clear(&h);
    free(cache);
    return rc;
}

/* ---- demix models ----------------------------------------------------------------- */

static int64_t file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Family and sources of a folder entry: the table's for a known file, else
 * read from the checkpoint (or a bag's first member, or an MSST config).
 * Returns the family. */
static dmx_repo_family describe(const char *dir, const dmx_repo_item *it, char *fam, size_t fn,
                                char *src, size_t sn) {
    const dmx_repo_file *f =
        it->entry.kind == DMX_REPO_CHECKPOINT ? dmx_repo_file_find(it->entry.name) : NULL;
    if (f && !strcmp(f->checksum, it->entry.checksum)) {
        snprintf(fam, fn, "%s", dmx_repo_family_name(f->family));
        src[0] = '\0';
        for (int32_t i = 0; i < f->n_sources; i++) {
            size_t l = strlen(src);
            snprintf(src + l, sn - l, "%s%s", i ? ", " : "", f->sources[i]);
        }
        return f->family;
    }
    char *p = path_join(dir, it->file);
    dmx_repo_probe_info pi;
    pi.family = DMX_REPO_FAMILY_UNKNOWN;
    if (dmx_repo_probe(p, &pi) == DMX_OK) {
        snprintf(fam, fn, "%s", pi.families);
        src[0] = '\0';
        for (int32_t i = 0; i < pi.n_sources; i++) {
            size_t l = strlen(src);
            snprintf(src + l, sn - l, "%s%s", i ? ", " : "", pi.sources[i]);
        }
    } else {
        snprintf(fam, fn, "?");
        snprintf(src, sn, "(unreadable)");
    }
    free(p);
    return pi.family;
}

#define LIST_FMT "%-43s %-15s %-42s %-10s %s\n"

/* Entries of a folder; with `skip_known`, the cache's files of known models. */
static void list_folder(const char *dir, int skip_known, int *count) {
    dmx_repo_list *l = NULL;
    if (dmx_repo_scan(dir, &l) != DMX_OK) return;
    for (size_t i = 0; i < l->n; i++) {
        const dmx_repo_item *it = &l->items[i];
        if (skip_known) {
            const dmx_repo_file *f = dmx_repo_file_find(it->entry.name);
            if (it->entry.kind == DMX_REPO_CHECKPOINT && f &&
                !strcmp(f->checksum, it->entry.checksum))
                continue;
            if (it->entry.kind == DMX_REPO_BAG &&
                (dmx_repo_model_find(it->entry.name) || dmx_repo_msst_find(it->entry.name)))
                continue;
        }
        char *p = path_join(dir, it->file);
        char size[32], fam[32], src[256];
        if (it->problem) {
            printf(LIST_FMT, it->file, "-", "-", "-", "unusable:");
            printf("    %s\n", it->problem);
        } else {
            dmx_repo_family f = describe(dir, it, fam, sizeof fam, src, sizeof src);
            int msst = f == DMX_REPO_FAMILY_BS_ROFORMER || f == DMX_REPO_FAMILY_MEL_BAND_ROFORMER;
            format_bytes(file_size(p), size, sizeof size);
            if (it->entry.kind == DMX_REPO_BAG) snprintf(size, sizeof size, "-");
            char status[4200];
            snprintf(status, sizeof status, "%s: %s",
                     msst                             ? "MSST config"
                     : it->entry.kind == DMX_REPO_BAG ? "bag"
                                                      : "local",
                     p);
            printf(LIST_FMT, it->entry.name, fam, src, size, status);
        }
        free(p);
        (*count)++;
    }
    dmx_repo_list_free(l);
}

/* One row of `models list` for a RoFormer checkpoint of the table. */
static void list_msst(const char *cache, const dmx_repo_msst_model *m) {
    char src[256] = "", size[32], status[4200];
    for (int32_t i = 0; i < m->n_sources; i++) {
        size_t l = strlen(src);
        snprintf(src + l, sizeof src - l, "%s%s", i ? ", " : "", m->sources[i]);
    }
    if (!m->n_sources) snprintf(src, sizeof src, "(from its config)");
    char *y = xasprintf("%s/%s.yaml", cache, m->name),
         *ck = xasprintf("%s/%s.ckpt", cache, m->name);
    int have = path_exists(y) + path_exists(ck);
    if (have == 2) {
        format_bytes(file_size(ck), size, sizeof size);
        snprintf(status, sizeof status, "cached: %s", y);
    } else {
        if (m->checkpoint.bytes > 0) {
            char t[24];
            format_bytes(m->checkpoint.bytes, t, sizeof t);
            snprintf(size, sizeof size, "%s", t);
        } else {
            snprintf(size, sizeof size, "?");
        }
        snprintf(status, sizeof status, have ? "partly cached (1 of 2 files)" : "not cached");
    }
    printf(LIST_FMT, m->name, dmx_repo_family_name(m->family), src, size, status);
    free(y);
    free(ck);
}

static int models_list(const char *repo) {
    printf(LIST_FMT, "NAME", "FAMILY", "SOURCES", "SIZE", "STATUS");
    int count = 0;
    if (repo) {
        if (!is_directory(repo)) {
            cli_err("--repo %s: not a directory", repo);
            return EXIT_RUNTIME;
        }
        list_folder(repo, 0, &count);
        if (!count) printf("(no .th or .yaml models in %s)\n", repo);
        return EXIT_OK;
    }
    char *cache = models_cache_dir();
    for (size_t i = 0; i < dmx_repo_n_models(); i++) {
        const dmx_repo_model *m = dmx_repo_model_at(i);
        char fam[64], src[256], size[32];
        dmx_repo_model_families(m, fam, sizeof fam);
        model_sources(m, src, sizeof src);
        int present, total;
        known_cached(cache, m, &present, &total);
        dmx_repo_hit h;
        dmx_status st = dmx_repo_resolve(NULL, m->name, &h);
        if (st == DMX_OK) {
            const dmx_repo_file *files[DMX_REPO_MAX_MEMBERS];
            int n = model_files(m, files);
            int64_t bytes = 0;
            for (int k = 0; k < n; k++) {
                char *p = path_join(cache, files[k]->file);
                bytes += file_size(p);
                free(p);
            }
            format_bytes(bytes, size, sizeof size);
            char status[4200];
            snprintf(status, sizeof status, "cached: %s", h.path);
            printf(LIST_FMT, m->name, fam, src, size, status);
        } else {
            approx_size(m, size, sizeof size);
            char status[64];
            if (present)
                snprintf(status, sizeof status, "partly cached (%d of %d files)", present, total);
            else
                snprintf(status, sizeof status, "not cached");
            printf(LIST_FMT, m->name, fam, src, size, status);
        }
        dmx_repo_hit_clear(&h);
    }
    for (size_t i = 0; i < dmx_repo_n_msst(); i++) list_msst(cache, dmx_repo_msst_at(i));
    if (is_directory(cache)) list_folder(cache, 1, &count);
    printf("\nFAMILY is the network class a model needs. Cache: %s (set DEMIX_MODELS to change;\n"
           "'demix models fetch NAME' downloads)\n",
           cache);
    free(cache);
    return EXIT_OK;
}

int models_list_upstream(const char *repo) {
    /* upstream's `demucs --list-models`: bag names, then single models. */
    if (repo && !is_directory(repo)) {
        cli_err("--repo %s must exist and be a directory", repo);
        return EXIT_RUNTIME;
    }
    for (int bags = 1; bags >= 0; bags--) {
        printf("%s\n    ", bags ? "Bag of models:" : "Single models:");
        int k = 0;
        if (!repo) {
            size_t n = bags ? dmx_repo_n_models() : dmx_repo_n_files();
            for (size_t i = 0; i < n; i++)
                printf("%s%s", k++ ? "\n    " : "",
                       bags ? dmx_repo_model_at(i)->name : dmx_repo_file_at(i)->sig);
        } else {
            dmx_repo_list *l = NULL;
            if (dmx_repo_scan(repo, &l) == DMX_OK) {
                for (size_t i = 0; i < l->n; i++) {
                    const dmx_repo_item *it = &l->items[i];
                    if ((it->entry.kind == DMX_REPO_BAG) != bags || !it->entry.name[0]) continue;
                    /* a duplicate signature is listed once, as upstream's dict keys */
                    int seen = 0;
                    for (size_t j = 0; j < i; j++)
                        seen |= l->items[j].entry.kind == it->entry.kind &&
                                !strcmp(l->items[j].entry.name, it->entry.name);
                    if (!seen) printf("%s%s", k++ ? "\n    " : "", it->entry.name);
                }
                dmx_repo_list_free(l);
            }
        }
        printf("\n");
    }
    fflush(stdout);
    return EXIT_OK;
}

/* `demix models fetch NAME`: a known model, a known signature or file, or
 * any file name SIG-CHECKSUM.th under $DEMIX_MODEL_URL. */
static int models_fetch(const char *name) {
    char *cache = models_cache_dir();
    int rc;
    const dmx_repo_model *m = dmx_repo_model_find(name);
    const dmx_repo_file *f = m ? NULL : dmx_repo_file_find(name);
    dmx_repo_entry e;
    const dmx_repo_msst_model *rf = m ? NULL : dmx_repo_msst_find(name);
    if (rf) {
        rc = fetch_msst_model(cache, rf, 1);
        if (rc == EXIT_OK) cli_info("Model %s is ready: %s/%s.yaml", name, cache, name);
    } else if (m) {
        rc = fetch_known_model(cache, m, 1);
        if (rc == EXIT_OK) {
            dmx_repo_hit h;
            if (dmx_repo_resolve(NULL, name, &h) == DMX_OK)
                cli_info("Model %s is ready: %s", name, h.path);
            dmx_repo_hit_clear(&h);
        }
    } else if (f || (dmx_repo_name_valid(name) && dmx_repo_parse_name(name, &e) == DMX_OK &&
                     e.kind == DMX_REPO_CHECKPOINT && e.checksum[0])) {
        rc = fetch_one_file(cache, f ? f->file : name, name, 1);
    } else {
        char names[512];
        known_names(names, sizeof names);
        rc = cli_usage_error(
            "models",
            "cannot fetch '%s': expected one of %s, a signature of theirs, or a checkpoint file "
            "name SIG-CHECKSUM.th",
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

/* Verifies one file of a RoFormer checkpoint against its table entry. */
static int verify_checked(const char *dir, const char *file, const file_check *c) {
    char *p = path_join(dir, file);
    char why[1024];
    int ok = 1;
    if (!path_exists(p)) {
        printf("missing   %s\n", p);
        ok = 0;
    } else {
        int v = check_file(p, c, why, sizeof why);
        if (v == 1 && !check_has_digest(c) && !c->config_of)
            printf("ok        %s (size only: no public checksum)\n", p);
        else if (v == 1)
            printf("ok        %s\n", p);
        else if (v == 2)
            printf("no hash   %s (no public checksum; it is checked when it loads)\n", p);
        else if (v == 0) {
            printf("MISMATCH  %s (%s)\n", p, why);
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
                printf(
                    "partial   %s/%s (an unfinished download; 'demix models fetch' resumes it)\n",
                    dir, v[i]);
                continue;
            }
            bad += !verify_one(dir, v[i]);
            checked++;
        }
        free_list(v, k);
    }
    for (int i = 0; i < n; i++) {
        const dmx_repo_model *m = repo ? NULL : dmx_repo_model_find(names[i]);
        const dmx_repo_msst_model *rf = repo || m ? NULL : dmx_repo_msst_find(names[i]);
        const dmx_repo_file *f = (repo || m || rf) ? NULL : dmx_repo_file_find(names[i]);
        if (rf) {
            char *ck = xasprintf("%s.ckpt", rf->name), *y = xasprintf("%s.yaml", rf->name);
            file_check ckc = remote_check(&rf->checkpoint, NULL),
                       yc = remote_check(&rf->config, rf);
            bad += !verify_checked(dir, ck, &ckc);
            bad += !verify_checked(dir, y, &yc);
            checked += 2;
            free(ck);
            free(y);
        } else if (m) {
            const dmx_repo_file *files[DMX_REPO_MAX_MEMBERS];
            int nf = model_files(m, files);
            for (int k = 0; k < nf; k++, checked++) bad += !verify_one(dir, files[k]->file);
            if (!m->direct) {
                char *y = xasprintf("%s/%s.yaml", dir, m->name);
                if (!path_exists(y)) {
                    printf("missing   %s\n", y);
                    bad++;
                }
                free(y);
            }
        } else if (f) {
            bad += !verify_one(dir, f->file);
            checked++;
        } else if (dmx_repo_name_valid(names[i]) && ends_with(names[i], ".th")) {
            bad += !verify_one(dir, names[i]); /* a checkpoint file name */
            checked++;
        } else {
            checked++;
            dmx_repo_hit h;
            dmx_status st = dmx_repo_find(dir, names[i], &h);
            if (st == DMX_ERR_NOT_FOUND) {
                printf("missing   %s (no such model in %s)\n", names[i], dir);
                bad++;
            } else if (st != DMX_OK) {
                printf("ERROR     %s (%s)\n", names[i], dmx_last_error());
                bad++;
            } else {
                bad += !verify_one(dir, h.file);
            }
            dmx_repo_hit_clear(&h);
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
    if (!repo && dmx_repo_name_valid(name)) {
        dmx_repo_hit h;
        dmx_status st = dmx_repo_resolve(NULL, name, &h);
        if (st == DMX_OK) {
            printf("%s\n", h.path);
            dmx_repo_hit_clear(&h);
            return EXIT_OK;
        }
        if (h.known || h.msst) {
            /* Where it will be once fetched. */
            char *cache = models_cache_dir();
            const dmx_repo_model *m = h.known;
            char *p = !m          ? xasprintf("%s/%s.yaml", cache, h.msst->name)
                      : m->direct ? path_join(cache, dmx_repo_model_member(m, 0)->file)
                                  : xasprintf("%s/%s.yaml", cache, m->name);
            printf("%s\n", p);
            fflush(stdout);
            cli_err("model %s is not downloaded yet; run 'demix models fetch %s'", name, name);
            free(p);
            free(cache);
            return EXIT_RUNTIME;
        }
    }
    char *p = NULL;
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
        if (repo)
            return cli_usage_error(
                "models", "'models fetch' downloads into the cache; --repo does not apply");
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
        if (nargs != 1)
            return cli_usage_error("models", "'models path' needs exactly one model name");
        return models_path(args[0], repo);
    }
    return cli_usage_error("models", "unknown action '%s' (expected list, fetch, verify or path)",
                           action);
}
