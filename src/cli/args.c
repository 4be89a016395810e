/*
 * args.c - small helpers for the CLI: strict option-value parsing (a typo in
 * a number must be a usage error, never silently 0), getopt error reporting
 * in demix's one-line style, allocation wrappers, and path utilities.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

int parse_long_opt(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || isspace((unsigned char)*s))
        return cli_usage_error(cmd, "%s expects an integer, got '%s'", opt, s);
    if (v < lo || v > hi)
        return cli_usage_error(cmd, "%s must be between %ld and %ld, got %ld", opt, lo, hi, v);
    *out = v;
    return 0;
}

int parse_double_opt(const char *cmd, const char *opt, const char *s, double lo, double hi,
                     int hi_inclusive, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || isspace((unsigned char)*s) || !isfinite(v))
        return cli_usage_error(cmd, "%s expects a number, got '%s'", opt, s);
    if (v < lo || v > hi || (!hi_inclusive && v == hi))
        return cli_usage_error(cmd, "%s must be in [%g, %g%c, got %s", opt, lo, hi,
                               hi_inclusive ? ']' : ')', s);
    *out = v;
    return 0;
}

int parse_u64_opt(const char *cmd, const char *opt, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (!*s || *s == '-' || isspace((unsigned char)*s))
        return cli_usage_error(cmd, "%s expects a non-negative integer, got '%s'", opt, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno)
        return cli_usage_error(cmd, "%s expects a non-negative integer, got '%s'", opt, s);
    *out = (uint64_t)v;
    return 0;
}

/* getopt_long was called with opterr = 0 and an optstring starting with ':',
 * so it returns ':' for a missing value and '?' for anything it does not
 * know; the offending word is normally argv[optind - 1]. */
int report_getopt_error(const char *cmd, int argc, char **argv, int ret) {
    const char *word = (optind - 1 >= 0 && optind - 1 < argc) ? argv[optind - 1] : "?";
    if (ret == ':') { return cli_usage_error(cmd, "option '%s' needs a value", word); }
    if (optopt && !(word[0] == '-' && word[1] == '-'))
        return cli_usage_error(cmd, "unknown option '-%c'", optopt);
    return cli_usage_error(cmd, "unknown option '%s'", word);
}

static void oom(void) {
    fputs("demix: out of memory\n", stderr);
    exit(EXIT_RUNTIME);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom();
    return p;
}

char *xstrdup(const char *s) {
    char *p = strdup(s ? s : "");
    if (!p) oom();
    return p;
}

char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *p = NULL;
    int n = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (n < 0) oom();
    return p;
}

char *path_join(const char *dir, const char *name) {
    if (!dir || !*dir) return xstrdup(name);
    if (name[0] == '/') return xstrdup(name); /* like pathlib: an absolute part wins */
    size_t n = strlen(dir);
    return xasprintf("%s%s%s", dir, dir[n - 1] == '/' ? "" : "/", name);
}

int mkdir_p(const char *dir, char ***created, size_t *n_created) {
    char *p = xstrdup(dir);
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/') p[--len] = '\0';
    /* Walk each prefix ending before a '/', then the whole path. */
    for (size_t i = 1; i <= len; i++) {
        if (i < len && p[i] != '/') continue;
        char save = p[i];
        p[i] = '\0';
        if (mkdir(p, 0777) == 0) {
            if (created) {
                *created = realloc(*created, (*n_created + 1) * sizeof **created);
                if (!*created) oom();
                (*created)[(*n_created)++] = xstrdup(p);
            }
        } else if (errno != EEXIST) {
            int e = errno;
            free(p);
            errno = e;
            return -1;
        } else if (!is_directory(p)) {
            free(p);
            errno = ENOTDIR;
            return -1;
        }
        p[i] = save;
    }
    free(p);
    return 0;
}

int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void format_bytes(int64_t n, char *buf, size_t len) {
    if (n < 1024)
        snprintf(buf, len, "%lld B", (long long)n);
    else if (n < 1024 * 1024)
        snprintf(buf, len, "%.1f KiB", n / 1024.0);
    else if (n < (int64_t)1024 * 1024 * 1024)
        snprintf(buf, len, "%.1f MiB", n / (1024.0 * 1024.0));
    else
        snprintf(buf, len, "%.2f GiB", n / (1024.0 * 1024.0 * 1024.0));
}
