/*
 * bagyaml.c - upstream's bag-of-models YAML files (see bagyaml.h) and the
 * LocalRepo checkpoint lookup.
 *
 * The text goes through libyaml (yamltree.c, the reader the RoFormer configs
 * use) into a tree whose nodes carry their source line; this file only
 * interprets the tree: `models`, `weights` and `segment`, each error naming
 * the field and the line it is on. Unknown keys were parsed (so a syntax
 * error anywhere is reported) and are ignored, as upstream ignores them.
 */
#include "bagyaml.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "demix/repo.h"
#include "error.h"
#include "yamltree.h"

#define MAX_FILE (1u << 20)

/* "WHAT: line N: message" (WHAT: the file, or "bag YAML" for text). */
static dmx_status perr(const char *what, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static dmx_status perr(const char *what, int line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dmx__fail(DMX_ERR_CORRUPT, "%s: line %d: %s", what, line, msg);
}
static dmx_status oom(void) { return dmx__fail(DMX_ERR_NOMEM, "bag YAML: out of memory"); }

void dmx__bag_spec_free(dmx__bag_spec *spec) {
    if (!spec) return;
    for (size_t i = 0; i < spec->n_models; i++) free(spec->models[i]);
    free(spec->models);
    free(spec->weights);
    free(spec);
}

/* A finite int or float in YAML 1.1's plain style (a quoted "2" is text). */
static int number_of(const dmx__ynode *v, double *out) {
    return dmx__yaml_float(v, out) == 0 && isfinite(*out);
}

static dmx_status interpret(const dmx__ynode *root, const char *what, dmx__bag_spec *spec) {
    if (root->kind == DMX__Y_SEQ)
        return perr(what, root->line, "expected 'key: value' at the top level, found a list item");
    if (root->kind != DMX__Y_MAP) {
        if (dmx__yaml_is_null(root))
            return dmx__fail(DMX_ERR_CORRUPT, "%s: no 'models' key: not a bag of models", what);
        return perr(what, root->line, "expected 'key: value' at the top level, found a %s",
                    dmx__yaml_type_name(root));
    }
    const dmx__ynode *m = dmx__yaml_get(root, "models");
    const dmx__ynode *w = dmx__yaml_get(root, "weights");
    const dmx__ynode *sg = dmx__yaml_get(root, "segment");
    if (!m) return dmx__fail(DMX_ERR_CORRUPT, "%s: no 'models' key: not a bag of models", what);
    if (m->kind != DMX__Y_SEQ)
        return perr(what, m->line, "'models' must be a list of model names, not a %s",
                    dmx__yaml_type_name(m));
    if (m->n == 0) return perr(what, m->line, "'models' is empty");
    spec->models = calloc(m->n, sizeof *spec->models);
    if (!spec->models) return oom();
    for (size_t i = 0; i < m->n; i++) {
        const dmx__ynode *it = m->items[i];
        const char *name;
        if (dmx__yaml_str(it, &name) != 0 || !name[0])
            return perr(what, it->line, "'models' item %zu is not a model name (a %s)", i + 1,
                        dmx__yaml_type_name(it));
        spec->models[i] = strdup(name);
        spec->n_models = i + 1;
        if (!spec->models[i]) return oom();
    }

    if (w && !dmx__yaml_is_null(w)) {
        if (w->kind != DMX__Y_SEQ)
            return perr(what, w->line, "'weights' must be a list of rows, not a %s",
                        dmx__yaml_type_name(w));
        if (w->n != spec->n_models)
            return perr(what, w->line, "'weights' has %zu rows but there are %zu models", w->n,
                        spec->n_models);
        for (size_t r = 0; r < w->n; r++) {
            const dmx__ynode *row = w->items[r];
            if (row->kind != DMX__Y_SEQ)
                return perr(what, row->line, "'weights' row %zu is not a list of numbers", r + 1);
            if (row->n == 0) return perr(what, row->line, "'weights' row %zu is empty", r + 1);
            if (r == 0) {
                spec->weight_cols = row->n;
                spec->weight_rows = w->n;
                spec->has_weights = 1;
                spec->weights = calloc(w->n * row->n, sizeof *spec->weights);
                if (!spec->weights) return oom();
            } else if (row->n != spec->weight_cols) {
                return perr(what, row->line, "'weights' row %zu has %zu values but row 1 has %zu",
                            r + 1, row->n, spec->weight_cols);
            }
            for (size_t c = 0; c < row->n; c++) {
                if (!number_of(row->items[c], &spec->weights[r * spec->weight_cols + c]))
                    return perr(what, row->items[c]->line,
                                "'weights' row %zu, column %zu is not a number (a %s)", r + 1,
                                c + 1, dmx__yaml_type_name(row->items[c]));
            }
        }
    }
    if (sg && !dmx__yaml_is_null(sg)) {
        if (!number_of(sg, &spec->segment) || !(spec->segment > 0))
            return perr(what, sg->line, "'segment' must be a positive number of seconds");
        spec->has_segment = 1;
    }
    return DMX_OK;
}

/* Parses text[0..len); messages start with `what`. */
static dmx_status parse_as(const char *text, size_t len, const char *what, dmx__bag_spec **out) {
    /* libyaml would call a NUL "special characters are not allowed": say it plainly. */
    const char *z = len ? memchr(text, '\0', len) : NULL;
    if (z) {
        int line = 1;
        for (const char *c = text; c < z; c++) line += *c == '\n';
        return perr(what, line, "NUL byte in the text");
    }
    dmx__ynode *root = NULL;
    dmx_status st = dmx__yaml_parse(text, len, what, &root);
    if (st != DMX_OK) return st;
    dmx__bag_spec *spec = calloc(1, sizeof *spec);
    st = spec ? interpret(root, what, spec) : oom();
    dmx__yaml_free(root);
    if (st != DMX_OK) {
        dmx__bag_spec_free(spec);
        return st;
    }
    *out = spec;
    return DMX_OK;
}

dmx_status dmx__bag_yaml_parse(const char *text, size_t len, dmx__bag_spec **out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__bag_yaml_parse: out is NULL");
    *out = NULL;
    if (!text && len) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__bag_yaml_parse: text is NULL");
    return parse_as(text ? text : "", len, "bag YAML", out);
}

dmx_status dmx__bag_yaml_load(const char *path, dmx__bag_spec **out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__bag_yaml_load: out is NULL");
    *out = NULL;
    if (!path) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__bag_yaml_load: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return dmx__fail(e == ENOENT ? DMX_ERR_NOT_FOUND : DMX_ERR_IO, "%s: cannot open: %s", path,
                         strerror(e));
    }
    char *buf = malloc(MAX_FILE + 1);
    if (!buf) {
        fclose(f);
        return oom();
    }
    size_t n = fread(buf, 1, MAX_FILE + 1, f);
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return dmx__fail(DMX_ERR_IO, "%s: read error", path);
    }
    if (n > MAX_FILE) {
        free(buf);
        return dmx__fail(DMX_ERR_CORRUPT, "%s: larger than %u bytes: not a bag file", path,
                         MAX_FILE);
    }
    dmx_status s = parse_as(buf, n, path, out);
    free(buf);
    return s;
}

/* ---- member lookup: the registry's rule (repo.c) -------------------------- */

dmx_status dmx__bag_resolve_ex(const char *yaml_path, const char *name, char **path_out,
                               char **checksum_out) {
    if (!path_out || !yaml_path || !name)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__bag_resolve: NULL argument");
    *path_out = NULL;
    if (checksum_out) *checksum_out = NULL;
    if (!dmx_repo_name_valid(name))
        return dmx__fail(DMX_ERR_INVALID_ARG, "bag member name '%s' is not a plain file name",
                         name);
    const char *slash = strrchr(yaml_path, '/');
    char *dir;
    if (!slash)
        dir = strdup(".");
    else if (slash == yaml_path)
        dir = strdup("/");
    else
        dir = strndup(yaml_path, (size_t)(slash - yaml_path));
    if (!dir) return oom();
    dmx_repo_hit h;
    dmx_status s = dmx_repo_find_checkpoint(dir, name, &h);
    free(dir);
    if (s != DMX_OK) return s;
    *path_out = h.path;
    h.path = NULL;
    if (checksum_out) {
        *checksum_out = h.checksum;
        h.checksum = NULL;
    }
    dmx_repo_hit_clear(&h);
    return DMX_OK;
}

dmx_status dmx__bag_resolve(const char *yaml_path, const char *name, char **path_out) {
    return dmx__bag_resolve_ex(yaml_path, name, path_out, NULL);
}
