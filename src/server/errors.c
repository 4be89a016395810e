/*
 * errors.c - lookups in the error table of errors.h (SRV_ERROR_MAP).
 */
#include <string.h>

#include "errors.h"

static const struct {
    const char *code;
    int status;
} TABLE[] = {
#define SRV__ERROR_ROW(e, code, status, job) {code, status},
    SRV_ERROR_MAP(SRV__ERROR_ROW)
#undef SRV__ERROR_ROW
};

const char *srv_error_code(srv_error e) {
    return (unsigned)e < SRV_E_COUNT ? TABLE[e].code : "internal";
}

int srv_error_status_of(srv_error e) { return (unsigned)e < SRV_E_COUNT ? TABLE[e].status : 500; }

const char *srv_error_code_at(size_t i, int *status) {
    if (i >= (size_t)SRV_E_COUNT) return NULL;
    *status = TABLE[i].status;
    return TABLE[i].code;
}

int srv_error_status(const char *code) {
    for (int i = 0; i < SRV_E_COUNT; i++)
        if (!strcmp(TABLE[i].code, code)) return TABLE[i].status;
    return 500;
}

/* Characters that end a word that may be a path. */
static int path_delim(char c) { return c == '\0' || strchr(" \t\n'\"`,;:()[]<>", c) != NULL; }

void srv_error_scrub_paths(char *msg) {
    char *w = msg;
    for (const char *p = msg; *p;) {
        if (path_delim(*p)) {
            *w++ = *p++;
            continue;
        }
        const char *end = p, *last = p;
        while (!path_delim(*end)) {
            if (*end == '/') last = end + 1;
            end++;
        }
        size_t n = (size_t)(end - last);
        memmove(w, last, n);
        w += n;
        p = end;
    }
    *w = '\0';
}
