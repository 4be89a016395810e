/*
 * pickle.c - bounded pickle VM (see pickle.h).
 *
 * The VM mirrors CPython's Unpickler closely where it matters for validity
 * (MARK frames, memo semantics, POP popping a mark, PROTO/FRAME) but never
 * calls anything: callables become data, except the handful of torch/stdlib
 * reconstructors the checkpoint loader needs to interpret. Work is linear in
 * the pickle size: every opcode consumes input, containers grow one item per
 * pushed value, and no operation walks the value graph.
 */
#include "pickle.h"

#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define VCHUNK 1024

typedef struct vchunk {
    struct vchunk *next;
    size_t used;
    dmx__pv v[VCHUNK];
} vchunk;

typedef struct bchunk {
    struct bchunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} bchunk;

struct dmx__pickle {
    vchunk *vchunks;
    bchunk *bchunks;
    size_t n_values;
    const dmx__pv *result;
    dmx__pv none, yes, no; /* shared singletons: NONE/NEWTRUE/NEWFALSE cost no values */
};

typedef struct vm {
    dmx__pickle *pk;
    const unsigned char *p;
    size_t len, pos, op_off;
    unsigned char op;
    const char *what;
    dmx__pv **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nm, mcap;
    dmx__pv **memo;
    size_t memo_cap, memo_count, memo_limit;
} vm;

/* ---- errors ------------------------------------------------------------- */

static dmx_status verr(vm *m, dmx_status s, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return dmx__fail(s, "%s: %s at pickle offset %zu (opcode 0x%02x)", m->what, msg, m->op_off,
                     (unsigned)m->op);
}
__attribute__((format(printf, 2, 3))) static dmx_status corrupt(vm *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    dmx_status s = verr(m, DMX_ERR_CORRUPT, fmt, ap);
    va_end(ap);
    return s;
}
__attribute__((format(printf, 2, 3))) static dmx_status unsupported(vm *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    dmx_status s = verr(m, DMX_ERR_UNSUPPORTED, fmt, ap);
    va_end(ap);
    return s;
}
static dmx_status nomem(vm *m) { return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", m->what); }

#define TRY(x)                       \
    do {                             \
        dmx_status s_ = (x);         \
        if (s_ != DMX_OK) return s_; \
    } while (0)

/* ---- arena ----------------------------------------------------------------- */

static void *arena_alloc(dmx__pickle *pk, size_t n) {
    n = (n + 15) & ~(size_t)15;
    bchunk *c = pk->bchunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->cap = cap;
        c->used = 0;
        /* Keep a partly used chunk at the head when the new one is a
         * dedicated big block, so small strings keep filling it. */
        if (pk->bchunks && n > 65536) {
            c->next = pk->bchunks->next;
            pk->bchunks->next = c;
        } else {
            c->next = pk->bchunks;
            pk->bchunks = c;
        }
    }
    void *r = c->data + c->used;
    c->used += n;
    return r;
}

static char *arena_str(dmx__pickle *pk, const void *s, size_t n) {
    char *r = arena_alloc(pk, n + 1);
    if (!r) return NULL;
    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

static dmx_status new_value(vm *m, dmx__pv_type t, dmx__pv **out) {
    dmx__pickle *pk = m->pk;
    if (pk->n_values >= DMX__PK_MAX_VALUES)
        return corrupt(m, "too many values (limit %u)", (unsigned)DMX__PK_MAX_VALUES);
    vchunk *c = pk->vchunks;
    if (!c || c->used == VCHUNK) {
        c = malloc(sizeof *c);
        if (!c) return nomem(m);
        c->used = 0;
        c->next = pk->vchunks;
        pk->vchunks = c;
    }
    dmx__pv *v = &c->v[c->used++];
    memset(v, 0, sizeof *v);
    v->type = t;
    pk->n_values++;
    *out = v;
    return DMX_OK;
}

void dmx__pickle_free(dmx__pickle *pk) {
    if (!pk) return;
    for (vchunk *c = pk->vchunks, *next; c; c = next) {
        next = c->next;
        for (size_t i = 0; i < c->used; i++) {
            dmx__pv *v = &c->v[i];
            switch (v->type) {
                case DMX__PV_LIST:
                case DMX__PV_TUPLE:
                case DMX__PV_SET:
                case DMX__PV_FROZENSET: free(v->u.seq.items); break;
                case DMX__PV_DICT:
                    free(v->u.dict.keys);
                    free(v->u.dict.vals);
                    break;
                default: break;
            }
        }
        free(c);
    }
    for (bchunk *c = pk->bchunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(pk);
}

const dmx__pv *dmx__pickle_result(const dmx__pickle *pk) { return pk->result; }

/* ---- containers -------------------------------------------------------- */

static dmx_status seq_add(vm *m, dmx__pv *s, dmx__pv *item) {
    if (s->u.seq.n == s->u.seq.cap) {
        size_t cap = s->u.seq.cap ? s->u.seq.cap * 2 : 4;
        dmx__pv **it = realloc(s->u.seq.items, cap * sizeof *it);
        if (!it) return nomem(m);
        s->u.seq.items = it;
        s->u.seq.cap = cap;
    }
    s->u.seq.items[s->u.seq.n++] = item;
    return DMX_OK;
}

static dmx_status dict_add(vm *m, dmx__pv *d, dmx__pv *k, dmx__pv *v) {
    if (d->u.dict.n == d->u.dict.cap) {
        size_t cap = d->u.dict.cap ? d->u.dict.cap * 2 : 8;
        dmx__pv **ks = realloc(d->u.dict.keys, cap * sizeof *ks);
        if (!ks) return nomem(m);
        d->u.dict.keys = ks;
        dmx__pv **vs = realloc(d->u.dict.vals, cap * sizeof *vs);
        if (!vs) return nomem(m);
        d->u.dict.vals = vs;
        d->u.dict.cap = cap;
    }
    d->u.dict.keys[d->u.dict.n] = k;
    d->u.dict.vals[d->u.dict.n] = v;
    d->u.dict.n++;
    return DMX_OK;
}

static dmx_status make_seq(vm *m, dmx__pv_type t, dmx__pv **items, size_t n, dmx__pv **out) {
    TRY(new_value(m, t, out));
    if (n) {
        (*out)->u.seq.items = malloc(n * sizeof(dmx__pv *));
        if (!(*out)->u.seq.items) return nomem(m);
        memcpy((*out)->u.seq.items, items, n * sizeof(dmx__pv *));
        (*out)->u.seq.n = (*out)->u.seq.cap = n;
    }
    return DMX_OK;
}

const dmx__pv *dmx__pv_dict_get(const dmx__pv *d, const char *key) {
    if (!d || d->type != DMX__PV_DICT) return NULL;
    size_t kl = strlen(key);
    for (size_t i = d->u.dict.n; i-- > 0;) {
        const dmx__pv *k = d->u.dict.keys[i];
        if (k->type == DMX__PV_STR && k->u.str.len == kl && memcmp(k->u.str.s, key, kl) == 0)
            return d->u.dict.vals[i];
    }
    return NULL;
}

const char *dmx__pv_type_name(const dmx__pv *v) {
    if (!v) return "nothing";
    switch (v->type) {
        case DMX__PV_NONE: return "None";
        case DMX__PV_BOOL: return "bool";
        case DMX__PV_INT: return "int";
        case DMX__PV_BIGINT: return "big int";
        case DMX__PV_FLOAT: return "float";
        case DMX__PV_STR: return "str";
        case DMX__PV_BYTES: return "bytes";
        case DMX__PV_LIST: return "list";
        case DMX__PV_TUPLE: return "tuple";
        case DMX__PV_SET: return "set";
        case DMX__PV_FROZENSET: return "frozenset";
        case DMX__PV_DICT: return "dict";
        case DMX__PV_GLOBAL: return v->u.global.full;
        case DMX__PV_OBJECT:
            if (v->u.obj.cls && v->u.obj.cls->type == DMX__PV_GLOBAL)
                return v->u.obj.cls->u.global.full;
            return "object";
        case DMX__PV_FRACTION: return "Fraction";
        case DMX__PV_STORAGE: return "storage";
        case DMX__PV_TENSOR: return "tensor";
    }
    return "?";
}

/* ---- stack ------------------------------------------------------------- */

static dmx_status push(vm *m, dmx__pv *v) {
    if (m->sp == m->scap) {
        if (m->scap >= DMX__PK_MAX_STACK)
            return corrupt(m, "stack too deep (limit %u)", (unsigned)DMX__PK_MAX_STACK);
        size_t cap = m->scap ? m->scap * 2 : 256;
        dmx__pv **s = realloc(m->stack, cap * sizeof *s);
        if (!s) return nomem(m);
        m->stack = s;
        m->scap = cap;
    }
    m->stack[m->sp++] = v;
    return DMX_OK;
}

static size_t frame_base(const vm *m) { return m->nm ? m->marks[m->nm - 1] : 0; }

static dmx_status pop(vm *m, dmx__pv **v) {
    if (m->sp <= frame_base(m)) return corrupt(m, "stack underflow");
    *v = m->stack[--m->sp];
    return DMX_OK;
}

static dmx_status top(vm *m, dmx__pv **v) {
    if (m->sp <= frame_base(m)) return corrupt(m, "stack underflow");
    *v = m->stack[m->sp - 1];
    return DMX_OK;
}

/* Pops everything above the last MARK, and the mark. The returned items stay
 * valid until the next push. */
static dmx_status pop_mark(vm *m, dmx__pv ***items, size_t *n) {
    if (!m->nm) return corrupt(m, "MARK not found");
    size_t b = m->marks[--m->nm];
    *items = m->stack ? m->stack + b : NULL; /* no push yet: empty frame */
    *n = m->sp - b;
    m->sp = b;
    return DMX_OK;
}

/* ---- memo -------------------------------------------------------------- */

static dmx_status memo_put(vm *m, uint64_t idx) {
    dmx__pv *v = NULL;
    TRY(top(m, &v));
    if (idx >= m->memo_limit)
        return corrupt(m, "memo index %llu out of range (limit %zu)", (unsigned long long)idx,
                       m->memo_limit);
    if (idx >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 64;
        while (cap <= idx) cap *= 2;
        if (cap > m->memo_limit) cap = m->memo_limit;
        dmx__pv **mm = realloc(m->memo, cap * sizeof *mm);
        if (!mm) return nomem(m);
        memset(mm + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *mm);
        m->memo = mm;
        m->memo_cap = cap;
    }
    if (!m->memo[idx]) m->memo_count++;
    m->memo[idx] = v;
    return DMX_OK;
}

static dmx_status memo_get(vm *m, uint64_t idx) {
    if (idx >= m->memo_cap || !m->memo[idx])
        return corrupt(m, "memo key %llu not found", (unsigned long long)idx);
    return push(m, m->memo[idx]);
}

/* ---- input ------------------------------------------------------------- */

static dmx_status need(vm *m, size_t n) {
    if (m->len - m->pos < n)
        return corrupt(m, "truncated: needs %zu more bytes, %zu left", n, m->len - m->pos);
    return DMX_OK;
}

static uint64_t rdle(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* A '\n'-terminated argument of the text opcodes; *n excludes the newline. */
static dmx_status read_line(vm *m, const char **s, size_t *n) {
    size_t avail = m->len - m->pos;
    if (avail > DMX__PK_MAX_LINE) avail = DMX__PK_MAX_LINE;
    const unsigned char *nl = memchr(m->p + m->pos, '\n', avail);
    if (!nl) return corrupt(m, "unterminated text argument (no newline within %zu bytes)", avail);
    *s = (const char *)m->p + m->pos;
    *n = (size_t)(nl - (m->p + m->pos));
    m->pos += *n + 1;
    return DMX_OK;
}

double dmx__strtod_c(const char *s, char **end) {
    /* strtod honours LC_NUMERIC; pickle and YAML text is always "C". */
    locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!c) return strtod(s, end);
    locale_t old = uselocale(c);
    double v = strtod(s, end);
    uselocale(old);
    freelocale(c);
    return v;
}

/* ---- value constructors -------------------------------------------------- */

static dmx_status push_int(vm *m, int64_t i) {
    dmx__pv *v = NULL;
    TRY(new_value(m, DMX__PV_INT, &v));
    v->u.i = i;
    return push(m, v);
}

static dmx_status push_str(vm *m, dmx__pv_type t, uint64_t n) {
    if (n > DMX__PK_MAX_STR)
        return corrupt(m, "string of %llu bytes exceeds the limit", (unsigned long long)n);
    TRY(need(m, (size_t)n));
    dmx__pv *v = NULL;
    TRY(new_value(m, t, &v));
    char *s = arena_str(m->pk, m->p + m->pos, (size_t)n);
    if (!s) return nomem(m);
    v->u.str.s = s;
    v->u.str.len = (size_t)n;
    m->pos += (size_t)n;
    return push(m, v);
}

static dmx_status make_global(vm *m, const char *mod, size_t ml, const char *nm, size_t nl,
                              dmx__pv **out) {
    TRY(new_value(m, DMX__PV_GLOBAL, out));
    char *full = arena_alloc(m->pk, ml + nl + 2);
    if (!full) return nomem(m);
    memcpy(full, mod, ml);
    full[ml] = '.';
    memcpy(full + ml + 1, nm, nl);
    full[ml + nl + 1] = '\0';
    char *mods = arena_str(m->pk, mod, ml), *nms = arena_str(m->pk, nm, nl);
    if (!mods || !nms) return nomem(m);
    (*out)->u.global.module = mods;
    (*out)->u.global.name = nms;
    (*out)->u.global.full = full;
    return DMX_OK;
}

static int is_global(const dmx__pv *v, const char *full) {
    return v && v->type == DMX__PV_GLOBAL && strcmp(v->u.global.full, full) == 0;
}

static int is_seq(const dmx__pv *v) {
    return v && (v->type == DMX__PV_TUPLE || v->type == DMX__PV_LIST);
}

/* Text integer (INT / LONG opcodes): int64 when it fits, else BIGINT. */
static dmx_status parse_text_int(vm *m, const char *s, size_t n, dmx__pv **out) {
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    if (i == n) return corrupt(m, "malformed integer literal");
    uint64_t acc = 0;
    int big = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return corrupt(m, "malformed integer literal");
        unsigned d = (unsigned)(s[i] - '0');
        if (acc > (UINT64_MAX - d) / 10)
            big = 1;
        else
            acc = acc * 10 + d;
    }
    if (!big && (neg ? acc > (uint64_t)INT64_MAX + 1 : acc > (uint64_t)INT64_MAX)) big = 1;
    if (big) return new_value(m, DMX__PV_BIGINT, out);
    TRY(new_value(m, DMX__PV_INT, out));
    (*out)->u.i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    return DMX_OK;
}

/* Little-endian two's-complement integer of n bytes (LONG1 / LONG4). */
static dmx_status push_long_bytes(vm *m, uint64_t n) {
    if (n > DMX__PK_MAX_STR)
        return corrupt(m, "integer of %llu bytes exceeds the limit", (unsigned long long)n);
    TRY(need(m, (size_t)n));
    const unsigned char *b = m->p + m->pos;
    m->pos += (size_t)n;
    if (n == 0) return push_int(m, 0);
    int neg = b[n - 1] & 0x80;
    /* Redundant sign-extension bytes beyond 8 still fit in an int64. */
    size_t used = (size_t)n;
    while (used > 8 && b[used - 1] == (neg ? 0xff : 0x00)) used--;
    if (used > 8 || (used == 8 && n > 8 && ((b[7] & 0x80) != neg))) {
        dmx__pv *v = NULL;
        TRY(new_value(m, DMX__PV_BIGINT, &v));
        return push(m, v);
    }
    uint64_t u = rdle(b, (int)used);
    if (neg && used < 8) u |= ~(uint64_t)0 << (8 * used);
    return push_int(m, (int64_t)u);
}

/* ---- torch / stdlib reconstructors --------------------------------------- */

static dmx_status make_object(vm *m, dmx__pv *cls, dmx__pv *args, dmx__pv **out) {
    TRY(new_value(m, DMX__PV_OBJECT, out));
    (*out)->u.obj.cls = cls;
    (*out)->u.obj.args = args;
    return DMX_OK;
}

static int parse_fraction_str(const char *s, int64_t *num, int64_t *den) {
    /* Python's Fraction("39/5"), Fraction("7"), Fraction("-7.8"). */
    while (*s == ' ' || *s == '\t' || *s == '\n') s++;
    int neg = 0;
    if (*s == '+' || *s == '-') neg = *s++ == '-';
    int64_t n = 0, d = 1;
    int digits = 0;
    for (; *s >= '0' && *s <= '9'; s++, digits++) {
        if (n > (INT64_MAX - 9) / 10) return 0;
        n = n * 10 + (*s - '0');
    }
    if (*s == '/') {
        s++;
        int dd = 0;
        d = 0;
        for (; *s >= '0' && *s <= '9'; s++, dd++) {
            if (d > (INT64_MAX - 9) / 10) return 0;
            d = d * 10 + (*s - '0');
        }
        if (!dd || d == 0) return 0;
    } else if (*s == '.') {
        s++;
        for (; *s >= '0' && *s <= '9'; s++, digits++) {
            if (n > (INT64_MAX - 9) / 10 || d > INT64_MAX / 10) return 0;
            n = n * 10 + (*s - '0');
            d *= 10;
        }
    }
    if (!digits) return 0;
    while (*s == ' ' || *s == '\t' || *s == '\n') s++;
    if (*s) return 0;
    *num = neg ? -n : n;
    *den = d;
    return 1;
}

static int int_arg(const dmx__pv *v, int64_t *out) {
    if (v->type == DMX__PV_INT)
        *out = v->u.i;
    else if (v->type == DMX__PV_BOOL)
        *out = v->u.b;
    else
        return 0;
    return 1;
}

/* size / stride tuples of _rebuild_tensor*. */
static dmx_status dims_arg(vm *m, const dmx__pv *v, const char *fn, const char *what, int64_t *dst,
                           int *ndim) {
    if (!is_seq(v))
        return corrupt(m, "%s: %s is a %s, expected a tuple", fn, what, dmx__pv_type_name(v));
    if (v->u.seq.n > 8)
        return unsupported(m, "%s: tensors with %zu dimensions are not supported", fn, v->u.seq.n);
    for (size_t i = 0; i < v->u.seq.n; i++) {
        if (!int_arg(v->u.seq.items[i], &dst[i]) || dst[i] < 0)
            return corrupt(m, "%s: %s[%zu] is not a non-negative int", fn, what, i);
    }
    *ndim = (int)v->u.seq.n;
    return DMX_OK;
}

static dmx_status rebuild_tensor(vm *m, const char *fn, dmx__pv *args, int with_dtype,
                                 dmx__pv **out) {
    size_t n = args->u.seq.n;
    dmx__pv **a = args->u.seq.items;
    if (n < (with_dtype ? 7u : 4u))
        return corrupt(m, "%s: %zu arguments, expected at least %d", fn, n, with_dtype ? 7 : 4);
    if (a[0]->type != DMX__PV_STORAGE)
        return corrupt(m, "%s: argument 0 is a %s, expected a storage", fn,
                       dmx__pv_type_name(a[0]));
    dmx__pv_tensor *t = arena_alloc(m->pk, sizeof *t);
    if (!t) return nomem(m);
    memset(t, 0, sizeof *t);
    t->storage = a[0];
    if (!int_arg(a[1], &t->offset) || t->offset < 0)
        return corrupt(m, "%s: storage offset is not a non-negative int", fn);
    int nd_size, nd_stride;
    TRY(dims_arg(m, a[2], fn, "size", t->size, &nd_size));
    TRY(dims_arg(m, a[3], fn, "stride", t->stride, &nd_stride));
    if (nd_size != nd_stride)
        return corrupt(m, "%s: size has %d dims but stride has %d", fn, nd_size, nd_stride);
    t->ndim = nd_size;
    if (with_dtype) {
        if (a[6]->type != DMX__PV_GLOBAL)
            return corrupt(m, "%s: dtype is a %s, expected a torch dtype", fn,
                           dmx__pv_type_name(a[6]));
        t->dtype = a[6]->u.global.full;
    }
    TRY(new_value(m, DMX__PV_TENSOR, out));
    (*out)->u.tensor = t;
    return DMX_OK;
}

/* REDUCE: fn(*args), for the callables we understand; anything else becomes a
 * generic object. `depth` bounds _rebuild_from_type_v2 indirection. */
static dmx_status call(vm *m, dmx__pv *fn, dmx__pv *args, int depth, dmx__pv **out) {
    if (fn->type != DMX__PV_GLOBAL || args->type != DMX__PV_TUPLE)
        return make_object(m, fn, args, out);
    const char *g = fn->u.global.full;
    size_t n = args->u.seq.n;
    dmx__pv **a = args->u.seq.items;

    if (!strcmp(g, "collections.OrderedDict")) {
        TRY(new_value(m, DMX__PV_DICT, out));
        if (n == 0) return DMX_OK;
        /* OrderedDict([(k, v), ...]) */
        if (n == 1 && is_seq(a[0])) {
            for (size_t i = 0; i < a[0]->u.seq.n; i++) {
                dmx__pv *kv = a[0]->u.seq.items[i];
                if (!is_seq(kv) || kv->u.seq.n != 2)
                    return corrupt(m, "OrderedDict: item %zu is not a pair", i);
                TRY(dict_add(m, *out, kv->u.seq.items[0], kv->u.seq.items[1]));
            }
            return DMX_OK;
        }
        return make_object(m, fn, args, out);
    }
    if (!strcmp(g, "fractions.Fraction")) {
        int64_t num, den = 1;
        int ok = 0;
        if (n == 2 && int_arg(a[0], &num) && int_arg(a[1], &den))
            ok = den != 0;
        else if (n == 1 && int_arg(a[0], &num))
            ok = 1;
        else if (n == 1 && a[0]->type == DMX__PV_STR)
            ok = parse_fraction_str(a[0]->u.str.s, &num, &den);
        if (!ok) return make_object(m, fn, args, out);
        if (den < 0) {
            if (num == INT64_MIN || den == INT64_MIN) return make_object(m, fn, args, out);
            num = -num, den = -den;
        }
        TRY(new_value(m, DMX__PV_FRACTION, out));
        (*out)->u.frac.num = num;
        (*out)->u.frac.den = den;
        return DMX_OK;
    }
    if (!strcmp(g, "torch._utils._rebuild_tensor_v2") || !strcmp(g, "torch._utils._rebuild_tensor"))
        return rebuild_tensor(m, g, args, 0, out);
    if (!strcmp(g, "torch._utils._rebuild_tensor_v3")) return rebuild_tensor(m, g, args, 1, out);
    if (!strcmp(g, "torch._utils._rebuild_parameter") ||
        !strcmp(g, "torch._utils._rebuild_parameter_with_state")) {
        /* nn.Parameter(data, requires_grad, hooks[, state]) -> its data */
        if (n >= 1 && a[0]->type == DMX__PV_TENSOR) {
            *out = a[0];
            return DMX_OK;
        }
        return make_object(m, fn, args, out);
    }
    if (!strcmp(g, "torch._tensor._rebuild_from_type_v2") && depth == 0) {
        /* (func, new_type, args, state): the tensor is func(*args). */
        if (n >= 3 && a[2]->type == DMX__PV_TUPLE) return call(m, a[0], a[2], depth + 1, out);
        return make_object(m, fn, args, out);
    }
    return make_object(m, fn, args, out);
}

static dmx_status persistent_load(vm *m, dmx__pv *pid, dmx__pv **out) {
    if (pid->type != DMX__PV_TUPLE || pid->u.seq.n == 0 || pid->u.seq.items[0]->type != DMX__PV_STR)
        return unsupported(m, "persistent id is a %s, expected a ('storage', ...) tuple",
                           dmx__pv_type_name(pid));
    dmx__pv **a = pid->u.seq.items;
    if (strcmp(a[0]->u.str.s, "storage") != 0)
        return unsupported(m, "persistent id of kind '%.64s' is not supported", a[0]->u.str.s);
    if (pid->u.seq.n < 5)
        return corrupt(m, "storage persistent id has %zu fields, expected 5", pid->u.seq.n);
    if (a[1]->type != DMX__PV_GLOBAL)
        return corrupt(m, "storage type is a %s, expected a torch storage class",
                       dmx__pv_type_name(a[1]));
    if (a[2]->type != DMX__PV_STR)
        return corrupt(m, "storage key is a %s, expected a str", dmx__pv_type_name(a[2]));
    if (a[3]->type != DMX__PV_STR)
        return corrupt(m, "storage location is a %s, expected a str", dmx__pv_type_name(a[3]));
    int64_t numel;
    if (!int_arg(a[4], &numel) || numel < 0)
        return corrupt(m, "storage size is not a non-negative int");
    dmx__pv_storage *s = arena_alloc(m->pk, sizeof *s);
    if (!s) return nomem(m);
    s->type = a[1]->u.global.full;
    s->key = a[2]->u.str.s;
    s->location = a[3]->u.str.s;
    s->numel = numel;
    TRY(new_value(m, DMX__PV_STORAGE, out));
    (*out)->u.storage = s;
    return DMX_OK;
}

/* APPEND / APPENDS target: a list, or the list part of a generic object
 * (a list subclass rebuilt by REDUCE/NEWOBJ). */
static dmx_status append_target(vm *m, dmx__pv *t, dmx__pv **list) {
    if (t->type == DMX__PV_LIST) {
        *list = t;
        return DMX_OK;
    }
    if (t->type == DMX__PV_OBJECT) {
        if (!t->u.obj.list) TRY(new_value(m, DMX__PV_LIST, &t->u.obj.list));
        *list = t->u.obj.list;
        return DMX_OK;
    }
    return corrupt(m, "cannot append to a %s", dmx__pv_type_name(t));
}

static dmx_status setitem_target(vm *m, dmx__pv *t, dmx__pv **dict) {
    if (t->type == DMX__PV_DICT) {
        *dict = t;
        return DMX_OK;
    }
    if (t->type == DMX__PV_OBJECT) {
        if (!t->u.obj.dict) TRY(new_value(m, DMX__PV_DICT, &t->u.obj.dict));
        *dict = t->u.obj.dict;
        return DMX_OK;
    }
    return corrupt(m, "cannot set an item on a %s", dmx__pv_type_name(t));
}

/* ---- the loop ------------------------------------------------------------ */

static dmx_status step(vm *m, int *stop) {
    m->op_off = m->pos;
    m->op = m->p[m->pos++];
    dmx__pv *v = NULL, *w = NULL, *x = NULL, **items = NULL;
    size_t n = 0;
    const char *s1 = NULL, *s2 = NULL;
    size_t n1 = 0, n2 = 0;
    switch (m->op) {
        case 0x80: /* PROTO */
            TRY(need(m, 1));
            if (m->p[m->pos] > 5)
                return unsupported(m, "pickle protocol %u is not supported", m->p[m->pos]);
            m->pos++;
            return DMX_OK;
        case 0x95: /* FRAME: a length hint; the data follows inline */
            TRY(need(m, 8));
            if (rdle(m->p + m->pos, 8) > m->len - m->pos - 8)
                return corrupt(m, "FRAME length runs past the end");
            m->pos += 8;
            return DMX_OK;
        case '.': /* STOP */
            TRY(pop(m, &v));
            m->pk->result = v;
            *stop = 1;
            return DMX_OK;
        case '(': /* MARK */
            if (m->nm == m->mcap) {
                if (m->mcap >= DMX__PK_MAX_MARKS)
                    return corrupt(m, "too many nested MARKs (limit %u)",
                                   (unsigned)DMX__PK_MAX_MARKS);
                size_t cap = m->mcap ? m->mcap * 2 : 64;
                size_t *mk = realloc(m->marks, cap * sizeof *mk);
                if (!mk) return nomem(m);
                m->marks = mk;
                m->mcap = cap;
            }
            m->marks[m->nm++] = m->sp;
            return DMX_OK;
        case '0': /* POP: like CPython, pops a MARK when the frame is empty */
            if (m->sp > frame_base(m)) {
                m->sp--;
                return DMX_OK;
            }
            return pop_mark(m, &items, &n);
        case '1': /* POP_MARK */ return pop_mark(m, &items, &n);
        case '2': /* DUP */ TRY(top(m, &v)); return push(m, v);
        case 'N': return push(m, &m->pk->none);
        case 0x88: return push(m, &m->pk->yes);
        case 0x89: return push(m, &m->pk->no);
        case 'J': /* BININT */
            TRY(need(m, 4));
            m->pos += 4;
            return push_int(m, (int32_t)(uint32_t)rdle(m->p + m->pos - 4, 4));
        case 'K': /* BININT1 */ TRY(need(m, 1)); return push_int(m, m->p[m->pos++]);
        case 'M': /* BININT2 */
            TRY(need(m, 2));
            m->pos += 2;
            return push_int(m, (int64_t)rdle(m->p + m->pos - 2, 2));
        case 'I': /* INT (text); I01 / I00 are protocol 0's True / False */
            TRY(read_line(m, &s1, &n1));
            if (n1 == 2 && !memcmp(s1, "01", 2)) return push(m, &m->pk->yes);
            if (n1 == 2 && !memcmp(s1, "00", 2)) return push(m, &m->pk->no);
            TRY(parse_text_int(m, s1, n1, &v));
            return push(m, v);
        case 'L': /* LONG (text), optional trailing L */
            TRY(read_line(m, &s1, &n1));
            if (n1 && s1[n1 - 1] == 'L') n1--;
            TRY(parse_text_int(m, s1, n1, &v));
            return push(m, v);
        case 0x8a: /* LONG1 */ TRY(need(m, 1)); return push_long_bytes(m, m->p[m->pos++]);
        case 0x8b: { /* LONG4 */
            TRY(need(m, 4));
            int32_t l = (int32_t)(uint32_t)rdle(m->p + m->pos, 4);
            m->pos += 4;
            if (l < 0) return corrupt(m, "LONG4 with negative length");
            return push_long_bytes(m, (uint64_t)l);
        }
        case 'G': { /* BINFLOAT: big-endian IEEE double */
            TRY(need(m, 8));
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | m->p[m->pos + i];
            m->pos += 8;
            TRY(new_value(m, DMX__PV_FLOAT, &v));
            memcpy(&v->u.f, &u, 8);
            return push(m, v);
        }
        case 'F': { /* FLOAT (text) */
            TRY(read_line(m, &s1, &n1));
            char buf[DMX__PK_MAX_LINE + 1], *end;
            memcpy(buf, s1, n1);
            buf[n1] = '\0';
            double d = dmx__strtod_c(buf, &end);
            if (end == buf || *end) return corrupt(m, "malformed float literal");
            TRY(new_value(m, DMX__PV_FLOAT, &v));
            v->u.f = d;
            return push(m, v);
        }
        case 'X': /* BINUNICODE */
            TRY(need(m, 4));
            m->pos += 4;
            return push_str(m, DMX__PV_STR, rdle(m->p + m->pos - 4, 4));
        case 0x8c: /* SHORT_BINUNICODE */
            TRY(need(m, 1));
            return push_str(m, DMX__PV_STR, m->p[m->pos++]);
        case 0x8d: /* BINUNICODE8 */
            TRY(need(m, 8));
            m->pos += 8;
            return push_str(m, DMX__PV_STR, rdle(m->p + m->pos - 8, 8));
        case 'T': { /* BINSTRING (Python 2 str): signed length */
            TRY(need(m, 4));
            int32_t l = (int32_t)(uint32_t)rdle(m->p + m->pos, 4);
            m->pos += 4;
            if (l < 0) return corrupt(m, "BINSTRING with negative length");
            return push_str(m, DMX__PV_STR, (uint64_t)l);
        }
        case 'U': /* SHORT_BINSTRING */
            TRY(need(m, 1));
            return push_str(m, DMX__PV_STR, m->p[m->pos++]);
        case 'B': /* BINBYTES */
            TRY(need(m, 4));
            m->pos += 4;
            return push_str(m, DMX__PV_BYTES, rdle(m->p + m->pos - 4, 4));
        case 'C': /* SHORT_BINBYTES */
            TRY(need(m, 1));
            return push_str(m, DMX__PV_BYTES, m->p[m->pos++]);
        case 0x8e: /* BINBYTES8 */
            TRY(need(m, 8));
            m->pos += 8;
            return push_str(m, DMX__PV_BYTES, rdle(m->p + m->pos - 8, 8));
        case ')': TRY(make_seq(m, DMX__PV_TUPLE, NULL, 0, &v)); return push(m, v);
        case ']': TRY(new_value(m, DMX__PV_LIST, &v)); return push(m, v);
        case '}': TRY(new_value(m, DMX__PV_DICT, &v)); return push(m, v);
        case 0x8f: TRY(new_value(m, DMX__PV_SET, &v)); return push(m, v);
        case 't': /* TUPLE */
            TRY(pop_mark(m, &items, &n));
            TRY(make_seq(m, DMX__PV_TUPLE, items, n, &v));
            return push(m, v);
        case 0x85:
        case 0x86:
        case 0x87: { /* TUPLE1..3 */
            n = (size_t)(m->op - 0x84);
            if (m->sp - frame_base(m) < n) return corrupt(m, "stack underflow");
            m->sp -= n;
            TRY(make_seq(m, DMX__PV_TUPLE, m->stack + m->sp, n, &v));
            return push(m, v);
        }
        case 'l': /* LIST */
            TRY(pop_mark(m, &items, &n));
            TRY(make_seq(m, DMX__PV_LIST, items, n, &v));
            return push(m, v);
        case 0x91: /* FROZENSET */
            TRY(pop_mark(m, &items, &n));
            TRY(make_seq(m, DMX__PV_FROZENSET, items, n, &v));
            return push(m, v);
        case 'd': /* DICT */
            TRY(pop_mark(m, &items, &n));
            if (n % 2) return corrupt(m, "DICT with an odd number of items");
            TRY(new_value(m, DMX__PV_DICT, &v));
            for (size_t i = 0; i < n; i += 2) TRY(dict_add(m, v, items[i], items[i + 1]));
            return push(m, v);
        case 'a': /* APPEND */
            TRY(pop(m, &v));
            TRY(top(m, &w));
            TRY(append_target(m, w, &x));
            return seq_add(m, x, v);
        case 'e': /* APPENDS */
            TRY(pop_mark(m, &items, &n));
            TRY(top(m, &w));
            TRY(append_target(m, w, &x));
            for (size_t i = 0; i < n; i++) TRY(seq_add(m, x, items[i]));
            return DMX_OK;
        case 0x90: /* ADDITEMS */
            TRY(pop_mark(m, &items, &n));
            TRY(top(m, &w));
            if (w->type != DMX__PV_SET) return corrupt(m, "ADDITEMS on a %s", dmx__pv_type_name(w));
            for (size_t i = 0; i < n; i++) TRY(seq_add(m, w, items[i]));
            return DMX_OK;
        case 's': /* SETITEM */
            TRY(pop(m, &v));
            TRY(pop(m, &x));
            TRY(top(m, &w));
            TRY(setitem_target(m, w, &w));
            return dict_add(m, w, x, v);
        case 'u': /* SETITEMS */
            TRY(pop_mark(m, &items, &n));
            if (n % 2) return corrupt(m, "SETITEMS with an odd number of items");
            TRY(top(m, &w));
            TRY(setitem_target(m, w, &w));
            for (size_t i = 0; i < n; i += 2) TRY(dict_add(m, w, items[i], items[i + 1]));
            return DMX_OK;
        case 'c': /* GLOBAL "module\nname\n" */
            TRY(read_line(m, &s1, &n1));
            TRY(read_line(m, &s2, &n2));
            TRY(make_global(m, s1, n1, s2, n2, &v));
            return push(m, v);
        case 0x93: /* STACK_GLOBAL */
            TRY(pop(m, &w));
            TRY(pop(m, &x));
            if (w->type != DMX__PV_STR || x->type != DMX__PV_STR)
                return corrupt(m, "STACK_GLOBAL operands are not strings");
            TRY(make_global(m, x->u.str.s, x->u.str.len, w->u.str.s, w->u.str.len, &v));
            return push(m, v);
        case 'R': /* REDUCE */
            TRY(pop(m, &w));
            TRY(pop(m, &x));
            TRY(call(m, x, w, 0, &v));
            return push(m, v);
        case 0x81: /* NEWOBJ: cls.__new__(cls, *args) */
            TRY(pop(m, &w));
            TRY(pop(m, &x));
            if (w->type != DMX__PV_TUPLE)
                return corrupt(m, "NEWOBJ arguments are a %s, not a tuple", dmx__pv_type_name(w));
            if (is_global(x, "collections.OrderedDict"))
                TRY(new_value(m, DMX__PV_DICT, &v));
            else
                TRY(make_object(m, x, w, &v));
            return push(m, v);
        case 0x92: { /* NEWOBJ_EX: cls, args, kwargs */
            dmx__pv *kw = NULL;
            TRY(pop(m, &kw));
            TRY(pop(m, &w));
            TRY(pop(m, &x));
            if (w->type != DMX__PV_TUPLE || kw->type != DMX__PV_DICT)
                return corrupt(m, "NEWOBJ_EX arguments have the wrong types");
            TRY(make_object(m, x, w, &v));
            v->u.obj.kwargs = kw;
            return push(m, v);
        }
        case 'b': /* BUILD: __setstate__ / __dict__.update; kept as the object's state */
            TRY(pop(m, &v));
            TRY(top(m, &w));
            if (w->type == DMX__PV_OBJECT) w->u.obj.state = v;
            return DMX_OK;
        case 'Q': /* BINPERSID */
            TRY(pop(m, &w));
            TRY(persistent_load(m, w, &v));
            return push(m, v);
        case 'q': /* BINPUT */ TRY(need(m, 1)); return memo_put(m, m->p[m->pos++]);
        case 'r': /* LONG_BINPUT */
            TRY(need(m, 4));
            m->pos += 4;
            return memo_put(m, rdle(m->p + m->pos - 4, 4));
        case 0x94: /* MEMOIZE: memo[len(memo)] = top */ return memo_put(m, m->memo_count);
        case 'h': /* BINGET */ TRY(need(m, 1)); return memo_get(m, m->p[m->pos++]);
        case 'j': /* LONG_BINGET */
            TRY(need(m, 4));
            m->pos += 4;
            return memo_get(m, rdle(m->p + m->pos - 4, 4));
        case 'p':
        case 'g': { /* PUT / GET (text index) */
            TRY(read_line(m, &s1, &n1));
            uint64_t idx = 0;
            if (n1 == 0 || n1 > 12) return corrupt(m, "malformed memo index");
            for (size_t i = 0; i < n1; i++) {
                if (s1[i] < '0' || s1[i] > '9') return corrupt(m, "malformed memo index");
                idx = idx * 10 + (uint64_t)(s1[i] - '0');
            }
            return m->op == 'p' ? memo_put(m, idx) : memo_get(m, idx);
        }
        default:
            return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: unknown opcode 0x%02x at pickle offset %zu",
                             m->what, (unsigned)m->op, m->op_off);
    }
}

dmx_status dmx__pickle_run(const void *p, size_t len, const char *what, dmx__pickle **out) {
    *out = NULL;
    dmx__pickle *pk = calloc(1, sizeof *pk);
    if (!pk) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", what);
    pk->none.type = DMX__PV_NONE;
    pk->yes.type = DMX__PV_BOOL;
    pk->yes.u.b = 1;
    pk->no.type = DMX__PV_BOOL;
    vm m = {0};
    m.pk = pk;
    m.p = p;
    m.len = len;
    m.what = what ? what : "pickle";
    m.memo_limit = len + 256 < DMX__PK_MAX_MEMO ? len + 256 : DMX__PK_MAX_MEMO;
    dmx_status st = DMX_OK;
    int stop = 0;
    while (!stop && st == DMX_OK) {
        if (m.pos >= m.len) {
            m.op_off = m.pos;
            m.op = 0;
            st = corrupt(&m, "pickle ended without STOP (truncated?)");
            break;
        }
        st = step(&m, &stop);
    }
    free(m.stack);
    free(m.marks);
    free(m.memo);
    if (st != DMX_OK) {
        dmx__pickle_free(pk);
        return st;
    }
    *out = pk;
    return DMX_OK;
}
