/*
 * yamltree.c - libyaml events -> dmx__ynode tree, and PyYAML-style scalar
 * resolution (see yamltree.h).
 *
 * The builder keeps an explicit stack of open collections (bounded depth), so
 * hostile nesting cannot overflow the C stack; every allocation is checked
 * and a failure frees the partial tree.
 */
#include "yamltree.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "error.h"
#include "pickle.h" /* dmx__strtod_c */

#define MAX_DEPTH 64
#define MAX_NODES (1u << 20)

void dmx__yaml_free(dmx__ynode *n) {
    if (!n) return;
    /* iterative over children would need a stack; depth is bounded, so recursion is safe */
    for (size_t i = 0; i < n->n; i++) {
        dmx__yaml_free(n->items[i]);
        if (n->keys) free(n->keys[i]);
    }
    free(n->items);
    free(n->keys);
    free(n->tag);
    free(n->str);
    free(n);
}

typedef struct frame {
    dmx__ynode *node;
    size_t cap;
    char *pending_key; /* MAP: key read, value not yet */
    int key_line;
} frame;

static int push_child(frame *f, dmx__ynode *child, char **key_out) {
    dmx__ynode *p = f->node;
    if (p->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 8;
        dmx__ynode **it = realloc(p->items, cap * sizeof *it);
        if (!it) return -1;
        p->items = it;
        if (p->kind == DMX__Y_MAP) {
            char **k = realloc(p->keys, cap * sizeof *k);
            if (!k) return -1;
            p->keys = k;
        }
        f->cap = cap;
    }
    if (p->kind == DMX__Y_MAP) {
        p->keys[p->n] = *key_out;
        *key_out = NULL;
    }
    p->items[p->n++] = child;
    return 0;
}

static dmx__ynode *new_node(dmx__ykind k, int line, const unsigned char *tag) {
    dmx__ynode *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->kind = k;
    n->line = line;
    if (tag) {
        n->tag = strdup((const char *)tag);
        if (!n->tag) {
            free(n);
            return NULL;
        }
    }
    return n;
}

dmx_status dmx__yaml_parse(const char *text, size_t len, const char *what, dmx__ynode **out) {
    *out = NULL;
    if (!what) what = "yaml";
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", what);
    yaml_parser_set_input_string(&p, (const unsigned char *)(text ? text : ""), len);
    frame stack[MAX_DEPTH];
    int depth = 0;
    dmx__ynode *root = NULL;
    size_t count = 0;
    int docs = 0;
    dmx_status st = DMX_OK;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            st = dmx__fail(DMX_ERR_CORRUPT, "%s: line %zu: %s%s%s", what, p.problem_mark.line + 1,
                           p.problem ? p.problem : "syntax error", p.context ? " " : "",
                           p.context ? p.context : "");
            break;
        }
        int line = (int)ev.start_mark.line + 1;
        yaml_event_type_t t = ev.type;
        dmx__ynode *node = NULL;
        int is_scalar = 0;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        } else if (t == YAML_DOCUMENT_START_EVENT) {
            if (++docs > 1)
                st = dmx__fail(DMX_ERR_CORRUPT, "%s: line %d: several YAML documents", what, line);
        } else if (t == YAML_ALIAS_EVENT) {
            st = dmx__fail(DMX_ERR_CORRUPT, "%s: line %d: aliases (*%s) are not supported", what,
                           line, (const char *)ev.data.alias.anchor);
        } else if (t == YAML_SCALAR_EVENT) {
            node = new_node(DMX__Y_SCALAR, line, ev.data.scalar.tag);
            if (node) {
                node->str = malloc(ev.data.scalar.length + 1);
                if (node->str) {
                    memcpy(node->str, ev.data.scalar.value, ev.data.scalar.length);
                    node->str[ev.data.scalar.length] = 0;
                    node->quoted = ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
                    if (strlen(node->str) != ev.data.scalar.length)
                        st = dmx__fail(DMX_ERR_CORRUPT, "%s: line %d: scalar holds a NUL character",
                                       what, line);
                } else {
                    free(node->tag);
                    free(node);
                    node = NULL;
                }
            }
            is_scalar = 1;
        } else if (t == YAML_SEQUENCE_START_EVENT) {
            node = new_node(DMX__Y_SEQ, line, ev.data.sequence_start.tag);
        } else if (t == YAML_MAPPING_START_EVENT) {
            node = new_node(DMX__Y_MAP, line, ev.data.mapping_start.tag);
        } else if (t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT) {
            frame *f = &stack[depth - 1];
            free(f->pending_key);
            depth--;
        }
        yaml_event_delete(&ev);
        if (st != DMX_OK) {
            dmx__yaml_free(node);
            break;
        }
        if (t == YAML_SCALAR_EVENT || t == YAML_SEQUENCE_START_EVENT ||
            t == YAML_MAPPING_START_EVENT) {
            if (!node) {
                st = dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", what);
                break;
            }
            if (++count > MAX_NODES) {
                dmx__yaml_free(node);
                st = dmx__fail(DMX_ERR_CORRUPT, "%s: line %d: more than %u nodes", what, line,
                               MAX_NODES);
                break;
            }
            int opened = !is_scalar;
            if (depth == 0) {
                root = node;
            } else {
                frame *f = &stack[depth - 1];
                if (f->node->kind == DMX__Y_MAP && !f->pending_key) {
                    /* this node is a key */
                    if (!is_scalar) {
                        dmx__yaml_free(node);
                        st = dmx__fail(DMX_ERR_CORRUPT,
                                       "%s: line %d: a mapping key must be a scalar", what, line);
                        break;
                    }
                    if (!node->quoted && !strcmp(node->str, "<<")) {
                        dmx__yaml_free(node);
                        st =
                            dmx__fail(DMX_ERR_CORRUPT,
                                      "%s: line %d: merge keys (<<) are not supported", what, line);
                        break;
                    }
                    for (size_t i = 0; i < f->node->n; i++)
                        if (!strcmp(f->node->keys[i], node->str)) {
                            st = dmx__fail(DMX_ERR_CORRUPT,
                                           "%s: line %d: duplicate key '%s' (first on line %d)",
                                           what, line, node->str, f->node->items[i]->line);
                            break;
                        }
                    if (st != DMX_OK) {
                        dmx__yaml_free(node);
                        break;
                    }
                    f->pending_key = node->str;
                    f->key_line = line;
                    node->str = NULL;
                    dmx__yaml_free(node);
                    count--;
                    continue;
                }
                if (push_child(f, node, &f->pending_key) != 0) {
                    dmx__yaml_free(node);
                    st = dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", what);
                    break;
                }
            }
            if (opened) {
                if (depth == MAX_DEPTH) {
                    st = dmx__fail(DMX_ERR_CORRUPT, "%s: line %d: nested deeper than %d levels",
                                   what, line, MAX_DEPTH);
                    break;
                }
                stack[depth].node = node;
                stack[depth].cap = 0;
                stack[depth].pending_key = NULL;
                depth++;
            }
        }
    }
    for (int i = 0; i < depth; i++) free(stack[i].pending_key);
    yaml_parser_delete(&p);
    if (st != DMX_OK) {
        dmx__yaml_free(root);
        return st;
    }
    if (!root) {
        root = new_node(DMX__Y_SCALAR, 1, NULL);
        if (root) root->str = strdup("");
        if (!root || !root->str) {
            dmx__yaml_free(root);
            return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", what);
        }
    }
    *out = root;
    return DMX_OK;
}

dmx_status dmx__yaml_load(const char *path, dmx__ynode **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return dmx__fail(e == ENOENT ? DMX_ERR_NOT_FOUND : DMX_ERR_IO, "%s: cannot open: %s", path,
                         strerror(e));
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (len < cap) break;
        if (cap >= (64u << 20)) {
            free(buf);
            fclose(f);
            return dmx__fail(DMX_ERR_CORRUPT, "%s: larger than 64 MiB: not a config file", path);
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (!buf) {
        fclose(f);
        return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", path);
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return dmx__fail(DMX_ERR_IO, "%s: read error", path);
    }
    dmx_status s = dmx__yaml_parse(buf, len, path, out);
    free(buf);
    return s;
}

const dmx__ynode *dmx__yaml_get(const dmx__ynode *map, const char *key) {
    if (!map || map->kind != DMX__Y_MAP) return NULL;
    for (size_t i = 0; i < map->n; i++)
        if (!strcmp(map->keys[i], key)) return map->items[i];
    return NULL;
}

static int plain(const dmx__ynode *n) { return n && n->kind == DMX__Y_SCALAR && !n->quoted; }

static int one_of(const char *s, const char *const *words) {
    for (; *words; words++)
        if (!strcmp(s, *words)) return 1;
    return 0;
}

int dmx__yaml_is_null(const dmx__ynode *n) {
    static const char *const w[] = {"~", "null", "Null", "NULL", "", NULL};
    return plain(n) && one_of(n->str, w);
}

int dmx__yaml_bool(const dmx__ynode *n, int *v) {
    static const char *const yes[] = {"yes",  "Yes", "YES", "true", "True",
                                      "TRUE", "on",  "On",  "ON",   NULL};
    static const char *const no[] = {"no",    "No",  "NO",  "false", "False",
                                     "FALSE", "off", "Off", "OFF",   NULL};
    if (!plain(n)) return -1;
    if (one_of(n->str, yes))
        *v = 1;
    else if (one_of(n->str, no))
        *v = 0;
    else
        return -1;
    return 0;
}

/* Copies s without underscores into buf; -1 if too long. */
static int strip_us(const char *s, char *buf, size_t cap) {
    size_t k = 0;
    for (; *s; s++) {
        if (*s == '_') continue;
        if (k + 1 >= cap) return -1;
        buf[k++] = *s;
    }
    buf[k] = 0;
    return 0;
}

int dmx__yaml_int(const dmx__ynode *n, int64_t *v) {
    if (!plain(n)) return -1;
    char b[80];
    if (strip_us(n->str, b, sizeof b) != 0) return -1;
    const char *s = b;
    int neg = 0;
    if (*s == '-' || *s == '+') neg = *s++ == '-';
    if (!*s) return -1;
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        base = 16, s += 2;
    else if (s[0] == '0' && (s[1] == 'o' || s[1] == 'O'))
        base = 8, s += 2;
    else if (s[0] == '0' && (s[1] == 'b' || s[1] == 'B'))
        base = 2, s += 2;
    else if (s[0] == '0' && s[1])
        base = 8, s += 1;
    if (!*s) return -1;
    for (const char *c = s; *c; c++) {
        int d = isdigit((unsigned char)*c)    ? *c - '0'
                : isxdigit((unsigned char)*c) ? 10 + (tolower((unsigned char)*c) - 'a')
                                              : 99;
        if (d >= base) return -1;
    }
    errno = 0;
    char *end;
    unsigned long long u = strtoull(s, &end, base);
    if (errno || *end || u > (unsigned long long)INT64_MAX) return -1;
    *v = neg ? -(int64_t)u : (int64_t)u;
    return 0;
}

int dmx__yaml_float(const dmx__ynode *n, double *v) {
    int64_t i;
    if (dmx__yaml_int(n, &i) == 0) {
        *v = (double)i;
        return 0;
    }
    if (!plain(n)) return -1;
    static const char *const inf[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", NULL};
    static const char *const ninf[] = {"-.inf", "-.Inf", "-.INF", NULL};
    static const char *const nan_[] = {".nan", ".NaN", ".NAN", NULL};
    if (one_of(n->str, inf)) return *v = INFINITY, 0;
    if (one_of(n->str, ninf)) return *v = -INFINITY, 0;
    if (one_of(n->str, nan_)) return *v = NAN, 0;
    char b[80];
    if (strip_us(n->str, b, sizeof b) != 0) return -1;
    /* PyYAML 1.1 float: [-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)? : a '.' is required */
    const char *s = b;
    if (*s == '-' || *s == '+') s++;
    if (!strchr(s, '.')) return -1;
    for (const char *c = s; *c; c++)
        if (!isdigit((unsigned char)*c) && *c != '.' && *c != 'e' && *c != 'E' && *c != '-' &&
            *c != '+')
            return -1;
    char *end;
    double d = dmx__strtod_c(b, &end);
    if (*end || end == b) return -1;
    *v = d;
    return 0;
}

int dmx__yaml_str(const dmx__ynode *n, const char **v) {
    if (!n || n->kind != DMX__Y_SCALAR || dmx__yaml_is_null(n)) return -1;
    *v = n->str;
    return 0;
}

const char *dmx__yaml_type_name(const dmx__ynode *n) {
    if (!n) return "nothing";
    if (n->kind == DMX__Y_MAP) return "mapping";
    if (n->kind == DMX__Y_SEQ)
        return n->tag && strstr(n->tag, "python/tuple") ? "tuple" : "sequence";
    int64_t i;
    double d;
    int b;
    if (dmx__yaml_is_null(n)) return "null";
    if (dmx__yaml_bool(n, &b) == 0) return "bool";
    if (dmx__yaml_int(n, &i) == 0) return "int";
    if (dmx__yaml_float(n, &d) == 0) return "float";
    return "string";
}
