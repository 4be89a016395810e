/*
 * bagyaml.c - parser for upstream's bag-of-models YAML subset and the
 * LocalRepo checkpoint lookup (see bagyaml.h).
 *
 * The parser is a single pass over the text with an explicit line counter so
 * every error can say where it is. It first builds a tiny tree (scalars and
 * lists) for each top-level key, then interprets the known keys; unknown keys
 * are parsed (so syntax errors anywhere are still reported) and dropped.
 */
#include "bagyaml.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "demix/repo.h"
#include "error.h"
#include "pickle.h" /* dmx__strtod_c */

#define MAX_DEPTH 16
#define MAX_FILE (1u << 20)

typedef struct ynode {
    int is_list;
    int line;
    int quoted;
    char *s; /* scalar text */
    struct ynode **items;
    size_t n, cap;
} ynode;

typedef struct yparser {
    const char *t;
    size_t len, pos;
    int line;
} yparser;

static void node_free(ynode *n) {
    if (!n) return;
    for (size_t i = 0; i < n->n; i++) node_free(n->items[i]);
    free(n->items);
    free(n->s);
    free(n);
}

static ynode *node_new(int is_list, int line) {
    ynode *n = calloc(1, sizeof *n);
    if (n) {
        n->is_list = is_list;
        n->line = line;
    }
    return n;
}

static int node_add(ynode *l, ynode *it) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        ynode **p = realloc(l->items, cap * sizeof *p);
        if (!p) return 0;
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n++] = it;
    return 1;
}

static dmx_status perr(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static dmx_status perr(int line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dmx__fail(DMX_ERR_CORRUPT, "line %d: %s", line, msg);
}
static dmx_status oom(void) { return dmx__fail(DMX_ERR_NOMEM, "bag YAML: out of memory"); }

/* ---- lexing helpers ------------------------------------------------------- */

static int peek(const yparser *P) { return P->pos < P->len ? (unsigned char)P->t[P->pos] : -1; }
static int peek_at(const yparser *P, size_t k) {
    return P->pos + k < P->len ? (unsigned char)P->t[P->pos + k] : -1;
}
static int at_eol(const yparser *P) {
    int c = peek(P);
    return c == -1 || c == '\n' || (c == '\r' && (peek_at(P, 1) == '\n' || peek_at(P, 1) == -1));
}
static void skip_blanks(yparser *P) {
    while (peek(P) == ' ' || peek(P) == '\t') P->pos++;
}
/* Past the end of the current line (comments included). */
static void next_line(yparser *P) {
    while (P->pos < P->len && P->t[P->pos] != '\n') P->pos++;
    if (P->pos < P->len) {
        P->pos++;
        P->line++;
    }
}
/* After a value: only blanks and a comment may follow on the line. */
static dmx_status end_of_line(yparser *P) {
    skip_blanks(P);
    if (peek(P) == '#' || at_eol(P)) {
        next_line(P);
        return DMX_OK;
    }
    return perr(P->line, "unexpected '%c' after the value", peek(P));
}

/* ---- scalars ---------------------------------------------------------------- */

static dmx_status quoted(yparser *P, ynode **out) {
    int q = peek(P), line = P->line;
    P->pos++;
    size_t cap = 32, n = 0;
    char *s = malloc(cap);
    if (!s) return oom();
    for (;;) {
        int c = peek(P);
        if (c == -1 || c == '\n') {
            free(s);
            return perr(line, "unterminated %s-quoted string", q == '\'' ? "single" : "double");
        }
        P->pos++;
        if (c == q) {
            if (q == '\'' && peek(P) == '\'') { /* '' is a literal quote */
                P->pos++;
            } else {
                break;
            }
        } else if (q == '"' && c == '\\') {
            int e = peek(P);
            P->pos++;
            switch (e) {
            case '"': case '\\': case '/': c = e; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            default:
                free(s);
                return perr(line, "unsupported escape sequence in a double-quoted string");
            }
        }
        if (n + 2 > cap) {
            cap *= 2;
            char *r = realloc(s, cap);
            if (!r) {
                free(s);
                return oom();
            }
            s = r;
        }
        s[n++] = (char)c;
    }
    s[n] = '\0';
    ynode *nd = node_new(0, line);
    if (!nd) {
        free(s);
        return oom();
    }
    nd->s = s;
    nd->quoted = 1;
    *out = nd;
    return DMX_OK;
}

/* Plain scalar: up to the end of line or a comment; in a flow list also up to
 * ',', '[', ']', '{', '}'. */
static dmx_status plain(yparser *P, int in_flow, ynode **out) {
    size_t start = P->pos, end = P->pos;
    for (;;) {
        int c = peek(P);
        if (c == -1 || c == '\n' || at_eol(P)) break;
        if (in_flow && (c == ',' || c == '[' || c == ']' || c == '{' || c == '}')) break;
        if (c == '#' && P->pos > start && (P->t[P->pos - 1] == ' ' || P->t[P->pos - 1] == '\t')) break;
        P->pos++;
        if (c != ' ' && c != '\t') end = P->pos;
    }
    if (end == start) return perr(P->line, "expected a value");
    const char *s = P->t + start;
    size_t n = end - start;
    if (s[0] == '&' || s[0] == '*' || s[0] == '!')
        return perr(P->line, "anchors, aliases and tags are not supported");
    if (s[0] == '|' || s[0] == '>') return perr(P->line, "block scalars are not supported");
    if (s[0] == '{') return perr(P->line, "flow mappings are not supported");
    if (memchr(s, '\0', n)) return perr(P->line, "NUL byte in the text");
    ynode *nd = node_new(0, P->line);
    if (!nd) return oom();
    nd->s = malloc(n + 1);
    if (!nd->s) {
        free(nd);
        return oom();
    }
    memcpy(nd->s, s, n);
    nd->s[n] = '\0';
    *out = nd;
    return DMX_OK;
}

/* ---- flow lists ------------------------------------------------------------- */

/* Blanks, newlines and comments inside a flow collection. */
static void skip_flow_space(yparser *P) {
    for (;;) {
        int c = peek(P);
        if (c == ' ' || c == '\t' || c == '\r') P->pos++;
        else if (c == '\n') {
            P->pos++;
            P->line++;
        } else if (c == '#') {
            while (P->pos < P->len && P->t[P->pos] != '\n') P->pos++;
        } else {
            return;
        }
    }
}

static dmx_status flow_list(yparser *P, int depth, ynode **out) {
    int line = P->line;
    if (depth >= MAX_DEPTH) return perr(line, "lists nested more than %d deep", MAX_DEPTH);
    P->pos++; /* '[' */
    ynode *l = node_new(1, line);
    if (!l) return oom();
    dmx_status st;
    for (;;) {
        skip_flow_space(P);
        int c = peek(P);
        if (c == -1) {
            st = perr(line, "unterminated '[' (no matching ']' before the end of the text)");
            goto fail;
        }
        if (c == ']') {
            P->pos++;
            *out = l;
            return DMX_OK;
        }
        if (c == ',') {
            st = perr(P->line, "missing value before ','");
            goto fail;
        }
        ynode *it = NULL;
        if (c == '[') st = flow_list(P, depth + 1, &it);
        else if (c == '\'' || c == '"') st = quoted(P, &it);
        else if (c == '{') st = perr(P->line, "flow mappings are not supported");
        else st = plain(P, 1, &it);
        if (st != DMX_OK) goto fail;
        if (!node_add(l, it)) {
            node_free(it);
            st = oom();
            goto fail;
        }
        skip_flow_space(P);
        c = peek(P);
        if (c == ',') {
            P->pos++;
        } else if (c != ']') {
            if (c == -1) st = perr(line, "unterminated '[' (no matching ']' before the end of the text)");
            else st = perr(P->line, "expected ',' or ']' but found '%c'", c);
            goto fail;
        }
    }
fail:
    node_free(l);
    return st;
}

/* A value that starts on the current line (after "key:" or "- "). */
static dmx_status inline_value(yparser *P, ynode **out) {
    int c = peek(P);
    dmx_status st;
    if (c == '[') st = flow_list(P, 0, out);
    else if (c == '\'' || c == '"') st = quoted(P, out);
    else st = plain(P, 0, out);
    if (st != DMX_OK) return st;
    st = end_of_line(P);
    if (st != DMX_OK) {
        node_free(*out);
        *out = NULL;
    }
    return st;
}

/* Counts the indentation of the line at P->pos (which must be a line start);
 * returns -1 for a blank or comment-only line, -2 for a tab in the indent. */
static int line_indent(const yparser *P) {
    size_t p = P->pos;
    while (p < P->len && P->t[p] == ' ') p++;
    if (p < P->len && P->t[p] == '\t') return -2;
    if (p >= P->len || P->t[p] == '\n' || P->t[p] == '#' ||
        (P->t[p] == '\r' && (p + 1 >= P->len || P->t[p + 1] == '\n')))
        return -1;
    return (int)(p - P->pos);
}

static int is_item_start(const yparser *P, int indent) {
    size_t p = P->pos + (size_t)indent;
    if (p >= P->len || P->t[p] != '-') return 0;
    return p + 1 >= P->len || P->t[p + 1] == ' ' || P->t[p + 1] == '\t' || P->t[p + 1] == '\n' ||
           P->t[p + 1] == '\r';
}

/* `- item` lines at exactly `indent`; stops before the first other line. */
static dmx_status block_list(yparser *P, int indent, ynode **out) {
    ynode *l = node_new(1, P->line);
    if (!l) return oom();
    dmx_status st;
    while (P->pos < P->len) {
        int ind = line_indent(P);
        if (ind == -2) {
            st = perr(P->line, "tabs are not allowed in indentation");
            goto fail;
        }
        if (ind == -1) {
            next_line(P);
            continue;
        }
        if (ind < indent || (ind == indent && !is_item_start(P, ind))) break;
        if (ind > indent) {
            st = perr(P->line, "unexpected indentation");
            goto fail;
        }
        P->pos += (size_t)ind + 1;
        skip_blanks(P);
        if (at_eol(P) || peek(P) == '#') {
            st = perr(P->line, "empty list item (nested block values are not supported)");
            goto fail;
        }
        if (peek(P) == '-' && (peek_at(P, 1) == ' ' || peek_at(P, 1) == -1 || peek_at(P, 1) == '\n')) {
            st = perr(P->line, "nested block lists are not supported; write the inner list as [a, b]");
            goto fail;
        }
        ynode *it = NULL;
        if ((st = inline_value(P, &it)) != DMX_OK) goto fail;
        if (!node_add(l, it)) {
            node_free(it);
            st = oom();
            goto fail;
        }
    }
    *out = l;
    return DMX_OK;
fail:
    node_free(l);
    return st;
}

/* ---- document ---------------------------------------------------------------- */

typedef struct entry {
    char key[64];
    int line;
    ynode *val; /* NULL for an empty value */
} entry;

static int is_key_char(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
}

static dmx_status parse_doc(yparser *P, entry *ents, size_t cap, size_t *n_ents) {
    size_t n = 0;
    int seen_key = 0;
    dmx_status st = DMX_OK;
    while (P->pos < P->len) {
        int ind = line_indent(P);
        if (ind == -2) return perr(P->line, "tabs are not allowed in indentation");
        if (ind == -1) {
            next_line(P);
            continue;
        }
        if (ind > 0) return perr(P->line, "unexpected indentation");
        const char *l = P->t + P->pos;
        size_t rem = P->len - P->pos;
        if (rem >= 3 && !memcmp(l, "---", 3) && (rem == 3 || l[3] == ' ' || l[3] == '\n' || l[3] == '\r')) {
            if (seen_key) return perr(P->line, "multiple YAML documents are not supported");
            next_line(P);
            continue;
        }
        if (rem >= 3 && !memcmp(l, "...", 3) && (rem == 3 || l[3] == ' ' || l[3] == '\n' || l[3] == '\r')) break;
        if (l[0] == '-') return perr(P->line, "expected 'key: value' at the top level, found a list item");
        size_t k = 0;
        while (k < rem && is_key_char((unsigned char)l[k])) k++;
        if (k == 0 || k >= rem || l[k] != ':' ||
            !(k + 1 == rem || l[k + 1] == ' ' || l[k + 1] == '\t' || l[k + 1] == '\n' || l[k + 1] == '\r'))
            return perr(P->line, "expected 'key: value'");
        if (k >= sizeof ents[0].key) return perr(P->line, "key is too long");
        for (size_t i = 0; i < n; i++) {
            if (strlen(ents[i].key) == k && !memcmp(ents[i].key, l, k))
                return perr(P->line, "duplicate key '%s' (first on line %d)", ents[i].key, ents[i].line);
        }
        if (n == cap) return perr(P->line, "too many top-level keys");
        entry *e = &ents[n++];
        memcpy(e->key, l, k);
        e->key[k] = '\0';
        e->line = P->line;
        e->val = NULL;
        *n_ents = n;
        seen_key = 1;
        P->pos += k + 1;
        skip_blanks(P);
        if (at_eol(P) || peek(P) == '#') {
            /* Value on the following lines: a block list (at any indent,
             * including 0 as YAML allows under a mapping key), or nothing. */
            next_line(P);
            while (P->pos < P->len && line_indent(P) == -1) next_line(P);
            if (P->pos >= P->len) break;
            int ind2 = line_indent(P);
            if (ind2 == -2) return perr(P->line, "tabs are not allowed in indentation");
            if (is_item_start(P, ind2)) {
                if ((st = block_list(P, ind2, &e->val)) != DMX_OK) return st;
            } else if (ind2 > 0) {
                return perr(P->line, "nested mappings are not supported");
            }
            continue;
        }
        if ((st = inline_value(P, &e->val)) != DMX_OK) return st;
    }
    return DMX_OK;
}

/* ---- interpretation --------------------------------------------------------- */

static int is_null(const ynode *v) {
    return !v || (!v->is_list && !v->quoted && (!strcmp(v->s, "null") || !strcmp(v->s, "~") || !strcmp(v->s, "Null") ||
                                                 !strcmp(v->s, "NULL")));
}

/* Decimal int/float in YAML's plain style: [+-] digits [. digits] [e [+-] digits]. */
static int number_of(const ynode *v, double *out) {
    if (v->is_list || v->quoted) return 0;
    const char *s = v->s;
    size_t i = 0, digits = 0;
    if (s[i] == '+' || s[i] == '-') i++;
    while (s[i] >= '0' && s[i] <= '9') i++, digits++;
    if (s[i] == '.') {
        i++;
        while (s[i] >= '0' && s[i] <= '9') i++, digits++;
    }
    if (!digits) return 0;
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '+' || s[i] == '-') i++;
        if (!(s[i] >= '0' && s[i] <= '9')) return 0;
        while (s[i] >= '0' && s[i] <= '9') i++;
    }
    if (s[i]) return 0;
    char *end;
    *out = dmx__strtod_c(s, &end);
    return *end == '\0';
}

void dmx__bag_spec_free(dmx__bag_spec *spec) {
    if (!spec) return;
    for (size_t i = 0; i < spec->n_models; i++) free(spec->models[i]);
    free(spec->models);
    free(spec->weights);
    free(spec);
}

static dmx_status interpret(entry *ents, size_t n, dmx__bag_spec *spec) {
    const entry *em = NULL, *ew = NULL, *es = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(ents[i].key, "models")) em = &ents[i];
        else if (!strcmp(ents[i].key, "weights")) ew = &ents[i];
        else if (!strcmp(ents[i].key, "segment")) es = &ents[i];
    }
    if (!em) return dmx__fail(DMX_ERR_CORRUPT, "no 'models' key: not a bag of models");
    if (!em->val || !em->val->is_list)
        return perr(em->line, "'models' must be a list of model names");
    if (em->val->n == 0) return perr(em->line, "'models' is empty");
    spec->models = calloc(em->val->n, sizeof *spec->models);
    if (!spec->models) return oom();
    for (size_t i = 0; i < em->val->n; i++) {
        const ynode *it = em->val->items[i];
        if (it->is_list || !it->s[0]) return perr(it->line, "'models' item %zu is not a model name", i + 1);
        spec->models[i] = strdup(it->s);
        spec->n_models = i + 1;
        if (!spec->models[i]) return oom();
    }

    if (ew && !is_null(ew->val)) {
        const ynode *w = ew->val;
        if (!w->is_list) return perr(ew->line, "'weights' must be a list of rows");
        if (w->n != spec->n_models)
            return perr(w->line, "'weights' has %zu rows but there are %zu models", w->n, spec->n_models);
        for (size_t r = 0; r < w->n; r++) {
            const ynode *row = w->items[r];
            if (!row->is_list) return perr(row->line, "'weights' row %zu is not a list of numbers", r + 1);
            if (row->n == 0) return perr(row->line, "'weights' row %zu is empty", r + 1);
            if (r == 0) {
                spec->weight_cols = row->n;
                spec->weight_rows = w->n;
                spec->has_weights = 1;
                spec->weights = calloc(w->n * row->n, sizeof *spec->weights);
                if (!spec->weights) return oom();
            } else if (row->n != spec->weight_cols) {
                return perr(row->line, "'weights' row %zu has %zu values but row 1 has %zu", r + 1, row->n,
                            spec->weight_cols);
            }
            for (size_t c = 0; c < row->n; c++) {
                if (!number_of(row->items[c], &spec->weights[r * spec->weight_cols + c]))
                    return perr(row->items[c]->line, "'weights' row %zu, column %zu is not a number", r + 1, c + 1);
            }
        }
    }
    if (es && !is_null(es->val)) {
        if (!number_of(es->val, &spec->segment) || !(spec->segment > 0))
            return perr(es->line, "'segment' must be a positive number of seconds");
        spec->has_segment = 1;
    }
    return DMX_OK;
}

dmx_status dmx__bag_yaml_parse(const char *text, size_t len, dmx__bag_spec **out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__bag_yaml_parse: out is NULL");
    *out = NULL;
    if (!text && len) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__bag_yaml_parse: text is NULL");
    yparser P = {text ? text : "", len, 0, 1};
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) P.pos = 3; /* UTF-8 BOM */
    if (memchr(P.t, '\0', len)) {
        const char *z = memchr(P.t, '\0', len);
        int line = 1;
        for (const char *c = P.t; c < z; c++) line += *c == '\n';
        return perr(line, "NUL byte in the text");
    }
    entry ents[32];
    size_t n = 0;
    dmx__bag_spec *spec = NULL;
    dmx_status st = parse_doc(&P, ents, sizeof ents / sizeof ents[0], &n);
    if (st == DMX_OK) {
        spec = calloc(1, sizeof *spec);
        st = spec ? interpret(ents, n, spec) : oom();
    }
    for (size_t i = 0; i < n; i++) node_free(ents[i].val);
    if (st != DMX_OK) {
        dmx__bag_spec_free(spec);
        return st;
    }
    *out = spec;
    return DMX_OK;
}

/* Re-raises the current error with `prefix: ` in front. */
static dmx_status prefix_error(dmx_status s, const char *prefix) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", dmx_last_error());
    return dmx__fail(s, "%s: %s", prefix, msg);
}

dmx_status dmx__bag_yaml_load(const char *path, dmx__bag_spec **out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__bag_yaml_load: out is NULL");
    *out = NULL;
    if (!path) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__bag_yaml_load: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return dmx__fail(e == ENOENT ? DMX_ERR_NOT_FOUND : DMX_ERR_IO, "%s: cannot open: %s", path, strerror(e));
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
        return dmx__fail(DMX_ERR_CORRUPT, "%s: larger than %u bytes: not a bag file", path, MAX_FILE);
    }
    dmx_status s = dmx__bag_yaml_parse(buf, n, out);
    free(buf);
    if (s != DMX_OK) return prefix_error(s, path);
    return DMX_OK;
}

/* ---- member lookup: the registry's rule (repo.c) -------------------------- */

dmx_status dmx__bag_resolve_ex(const char *yaml_path, const char *name, char **path_out, char **checksum_out) {
    if (!path_out || !yaml_path || !name) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__bag_resolve: NULL argument");
    *path_out = NULL;
    if (checksum_out) *checksum_out = NULL;
    if (!dmx_repo_name_valid(name))
        return dmx__fail(DMX_ERR_INVALID_ARG, "bag member name '%s' is not a plain file name", name);
    const char *slash = strrchr(yaml_path, '/');
    char *dir;
    if (!slash) dir = strdup(".");
    else if (slash == yaml_path) dir = strdup("/");
    else dir = strndup(yaml_path, (size_t)(slash - yaml_path));
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
