/*
 * test_ckpt.c - the checkpoint loader (src/engine/ckpt.c, zip.c, pickle.c).
 *
 * 1. Every golden .th loads, and what it holds matches the upstream listing
 *    beside it (the .txt: class, every kwarg, every state tensor name and
 *    shape in file order); fp16 values are checked against a widening done
 *    here independently from the raw zip bytes.
 * 2. fp16 -> fp32 widening is exact and the F16C and scalar paths agree on all
 *    65536 inputs.
 * 3. Damaged files (truncations, flipped directory/data bytes, edited pickle,
 *    missing or mistyped storages, ...) give the documented status and a
 *    message naming the problem. Archives are rebuilt in memory with a small
 *    zip writer below (zlib CRCs, stored entries).
 * 4. A synthetic checkpoint exercises every pickle opcode family, strided and
 *    offset views, bf16/f64/untyped storages and the kwargs accessors; it is
 *    then mutated and byte-flipped exhaustively (must never crash, see ASan).
 *
 * If DEMIX_FUZZ_SEED_DIR is set, the synthetic archive, its pickle and an
 * archive without tensors are written there as seeds for tests/fuzz/fuzz_ckpt.c
 * (checkpoints are made at test time, never committed).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "ckpt.h"
#include "demix/status.h"
#include "net.h"
#include "pickle.h"
#include "testutil.h"
#include "zip.h"

/* ---- small helpers ------------------------------------------------------- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf_t;

static void put(buf_t *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        REQUIRE(b->p);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put8(buf_t *b, unsigned v) {
    unsigned char c = (unsigned char)v;
    put(b, &c, 1);
}
static void put16(buf_t *b, unsigned v) {
    put8(b, v & 0xff);
    put8(b, (v >> 8) & 0xff);
}
static void put32(buf_t *b, uint32_t v) {
    put16(b, v & 0xffff);
    put16(b, v >> 16);
}
static void put64(buf_t *b, uint64_t v) {
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}
static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

static int has(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* Loads from memory and checks status + message phrase; returns the ckpt on
 * success (caller frees) else NULL. */
#define EXPECT_LOAD(buf, len, status, phrase) expect_load(buf, len, status, phrase, __LINE__)
static dmx__ckpt *expect_load(const void *buf, size_t len, dmx_status want, const char *phrase, int line) {
    dmx__ckpt *ck = (dmx__ckpt *)1;
    dmx_status s = dmx__ckpt_load_mem(buf, len, "mem.th", &ck);
    if (s != want || (phrase && !has(dmx_last_error(), phrase))) {
        fprintf(stderr, "line %d: got %s '%s', want %s with '%s'\n", line, dmx_status_name(s), dmx_last_error(),
                dmx_status_name(want), phrase ? phrase : "");
        dmx_test_failures++;
    }
    if (s != DMX_OK) {
        CHECK(ck == NULL);
        return NULL;
    }
    if (want != DMX_OK) {
        dmx__ckpt_free(ck);
        return NULL;
    }
    return ck;
}

/* ---- an independent minimal zip reader (no validation) ------------------- */

typedef struct {
    char name[256];
    const unsigned char *data;
    size_t size;
} tz_entry;

static size_t tz_list(const unsigned char *b, size_t len, tz_entry *out, size_t cap) {
    size_t e = len - 22;
    while (rd32(b + e) != 0x06054b50u) e--;
    uint64_t n = rd16(b + e + 10), off = rd32(b + e + 16);
    if (e >= 20 && rd32(b + e - 20) == 0x07064b50u) {
        const unsigned char *r = b + rd64(b + e - 20 + 8);
        n = rd64(r + 32);
        off = rd64(r + 48);
    }
    size_t k = 0;
    const unsigned char *c = b + off;
    for (uint64_t i = 0; i < n && k < cap; i++) {
        uint16_t nl = rd16(c + 28), el = rd16(c + 30), cl = rd16(c + 32);
        uint64_t size = rd32(c + 24), lo = rd32(c + 42);
        const unsigned char *x = c + 46 + nl;
        for (const unsigned char *xe = x + el; x < xe; x += 4 + rd16(x + 2)) {
            if (rd16(x) == 1) {
                const unsigned char *q = x + 4;
                if (size == 0xffffffffu) size = rd64(q), q += 8;
                if (rd32(c + 20) == 0xffffffffu) q += 8;
                if (lo == 0xffffffffu) lo = rd64(q);
            }
        }
        tz_entry *t = &out[k++];
        memcpy(t->name, c + 46, nl < 255 ? nl : 255);
        t->name[nl < 255 ? nl : 255] = '\0';
        const unsigned char *h = b + lo;
        t->data = h + 30 + rd16(h + 26) + rd16(h + 28);
        t->size = (size_t)size;
        c += 46 + nl + el + cl;
    }
    return k;
}

static const tz_entry *tz_find(const tz_entry *es, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(es[i].name, name)) return &es[i];
    return NULL;
}

/* ---- a zip writer ---------------------------------------------------------- */

typedef struct {
    const char *name;
    const void *data;
    size_t len;
} zw_in;

typedef struct {
    int descriptor;  /* flag bit 3 + data descriptor, like torch */
    int zip64_end;   /* 1: ZIP64 end record + locator (torch); 2: same with saturated classic fields */
    int zip64_extra; /* ZIP64 extra field in every central entry */
    int pad64;       /* torch's "FB" local extra aligning data to 64 bytes */
    int method;      /* compression method to declare */
    const char *comment;
} zw_opts;

static unsigned char *zw_build(const zw_in *in, size_t n, const zw_opts *o, size_t *len) {
    buf_t b = {0}, cd = {0};
    for (size_t i = 0; i < n; i++) {
        uint32_t crc = (uint32_t)crc32(0, (const Bytef *)in[i].data, (uInt)in[i].len);
        size_t nl = strlen(in[i].name), off = b.n;
        unsigned flags = o->descriptor ? 0x08 : 0;
        unsigned pad = 0;
        if (o->pad64) {
            size_t at = b.n + 30 + nl + 4;
            pad = (unsigned)((64 - at % 64) % 64);
        }
        put32(&b, 0x04034b50u);
        put16(&b, 20);
        put16(&b, flags);
        put16(&b, (unsigned)o->method);
        put16(&b, 0);
        put16(&b, 0);
        put32(&b, o->descriptor ? 0 : crc);
        put32(&b, o->descriptor ? 0 : (uint32_t)in[i].len);
        put32(&b, o->descriptor ? 0 : (uint32_t)in[i].len);
        put16(&b, (unsigned)nl);
        put16(&b, o->pad64 ? 4 + pad : 0);
        put(&b, in[i].name, nl);
        if (o->pad64) {
            put16(&b, 0x4246);
            put16(&b, pad);
            for (unsigned k = 0; k < pad; k++) put8(&b, 'Z');
        }
        put(&b, in[i].data, in[i].len);
        if (o->descriptor) {
            put32(&b, 0x08074b50u);
            put32(&b, crc);
            put32(&b, (uint32_t)in[i].len);
            put32(&b, (uint32_t)in[i].len);
        }
        put32(&cd, 0x02014b50u);
        put16(&cd, 0x031e);
        put16(&cd, 20);
        put16(&cd, flags);
        put16(&cd, (unsigned)o->method);
        put16(&cd, 0);
        put16(&cd, 0);
        put32(&cd, crc);
        put32(&cd, o->zip64_extra ? 0xffffffffu : (uint32_t)in[i].len);
        put32(&cd, o->zip64_extra ? 0xffffffffu : (uint32_t)in[i].len);
        put16(&cd, (unsigned)nl);
        put16(&cd, o->zip64_extra ? 28 : 0);
        put16(&cd, 0);
        put16(&cd, 0);
        put16(&cd, 0);
        put32(&cd, 0);
        put32(&cd, o->zip64_extra ? 0xffffffffu : (uint32_t)off);
        put(&cd, in[i].name, nl);
        if (o->zip64_extra) {
            put16(&cd, 1);
            put16(&cd, 24);
            put64(&cd, in[i].len);
            put64(&cd, in[i].len);
            put64(&cd, off);
        }
    }
    size_t cd_off = b.n;
    put(&b, cd.p, cd.n);
    free(cd.p);
    int sat = o->zip64_end == 2;
    if (o->zip64_end) {
        size_t z64 = b.n;
        put32(&b, 0x06064b50u);
        put64(&b, 44);
        put16(&b, 45);
        put16(&b, 45);
        put32(&b, 0);
        put32(&b, 0);
        put64(&b, n);
        put64(&b, n);
        put64(&b, cd.n);
        put64(&b, cd_off);
        put32(&b, 0x07064b50u);
        put32(&b, 0);
        put64(&b, z64);
        put32(&b, 1);
    }
    size_t cl = o->comment ? strlen(o->comment) : 0;
    put32(&b, 0x06054b50u);
    put16(&b, 0);
    put16(&b, 0);
    put16(&b, sat ? 0xffff : (unsigned)n);
    put16(&b, sat ? 0xffff : (unsigned)n);
    put32(&b, sat ? 0xffffffffu : (uint32_t)cd.n);
    put32(&b, sat ? 0xffffffffu : (uint32_t)cd_off);
    put16(&b, (unsigned)cl);
    put(&b, o->comment, cl);
    *len = b.n;
    return b.p;
}

static const zw_opts TORCH_LIKE = {1, 1, 0, 1, 0, NULL};

/* Rebuilds a fixture archive from its entries, with optional edits. */
typedef struct {
    const char *drop;        /* entry to leave out */
    const char *replace;     /* entry whose bytes are replaced by ... */
    const void *with;
    size_t with_len;
    const char *old_prefix;  /* rename prefix */
    const char *new_prefix;
    const char *add_name;    /* extra entry */
    const char *add_data;
} rebuild_edit;

static unsigned char *rebuild(const unsigned char *file, size_t len, const rebuild_edit *ed, const zw_opts *o,
                              size_t *out_len) {
    static tz_entry es[4096];
    size_t n = tz_list(file, len, es, 4096);
    zw_in *in = calloc(n + 1, sizeof *in);
    char(*names)[300] = calloc(n + 1, sizeof *names);
    REQUIRE(in && names);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (ed && ed->drop && !strcmp(es[i].name, ed->drop)) continue;
        const char *nm = es[i].name;
        if (ed && ed->old_prefix && !strncmp(nm, ed->old_prefix, strlen(ed->old_prefix))) {
            snprintf(names[k], sizeof names[k], "%s%s", ed->new_prefix, nm + strlen(ed->old_prefix));
            nm = names[k];
        }
        in[k].name = nm;
        in[k].data = es[i].data;
        in[k].len = es[i].size;
        if (ed && ed->replace && !strcmp(es[i].name, ed->replace)) {
            in[k].data = ed->with;
            in[k].len = ed->with_len;
        }
        k++;
    }
    if (ed && ed->add_name) {
        in[k].name = ed->add_name;
        in[k].data = ed->add_data;
        in[k].len = strlen(ed->add_data);
        k++;
    }
    unsigned char *r = zw_build(in, k, o ? o : &TORCH_LIKE, out_len);
    free(in);
    free(names);
    return r;
}

/* ---- reference listing (.txt written by upstream) ------------------------------ */

typedef struct {
    char name[200];
    int ndim;
    int64_t shape[8];
} ref_tensor;

typedef struct {
    char klass[128];
    char kw_key[128][64];
    char kw_val[128][256];
    size_t n_kw;
    ref_tensor *t;
    size_t n_t;
} ref_listing;

/* strlcpy: truncating copy without -Wformat-truncation noise */
static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void rstrip(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ')) s[--n] = '\0';
}

static void load_listing(const char *path, ref_listing *L) {
    memset(L, 0, sizeof *L);
    FILE *f = fopen(path, "r");
    REQUIRE(f);
    L->t = calloc(4096, sizeof *L->t);
    REQUIRE(L->t);
    char line[4096];
    enum { NONE, KLASS, KWARGS, STATE, OTHER } sec = NONE;
    while (fgets(line, sizeof line, f)) {
        rstrip(line);
        if (!strncmp(line, "## ", 3)) {
            sec = !strcmp(line, "## klass") ? KLASS : !strcmp(line, "## kwargs") ? KWARGS
                  : !strncmp(line, "## state", 8)                                ? STATE
                                                                                  : OTHER;
            continue;
        }
        if (!line[0]) continue;
        if (sec == KLASS) copy_str(L->klass, sizeof L->klass, line);
        if (sec == KWARGS) {
            char *eq = strstr(line, " = ");
            REQUIRE(eq && L->n_kw < 128);
            *eq = '\0';
            copy_str(L->kw_key[L->n_kw], sizeof L->kw_key[0], line);
            copy_str(L->kw_val[L->n_kw], sizeof L->kw_val[0], eq + 3);
            L->n_kw++;
        }
        if (sec == STATE) {
            char *t1 = strchr(line, '\t');
            REQUIRE(t1);
            char *t2 = strchr(t1 + 1, '\t');
            REQUIRE(t2 && L->n_t < 4096);
            ref_tensor *r = &L->t[L->n_t++];
            *t1 = '\0';
            copy_str(r->name, sizeof r->name, line);
            REQUIRE(!strncmp(t1 + 1, "float16", 7));
            const char *p = t2 + 1;
            REQUIRE(*p == '(');
            p++;
            while (*p && *p != ')') {
                char *end;
                long long v = strtoll(p, &end, 10);
                if (end == p) break;
                r->shape[r->ndim++] = v;
                p = end;
                while (*p == ',' || *p == ' ') p++;
            }
        }
    }
    fclose(f);
}

/* Checks one kwarg against its Python repr from the listing. */
static void check_kwarg(const dmx__ckpt *ck, const char *key, const char *val) {
    char msg[400];
    snprintf(msg, sizeof msg, "kwarg %s = %s", key, val);
    CHECK_MSG(dmx__ckpt_kw_has(ck, key), "%s: missing", msg);
    if (!strcmp(val, "None")) {
        CHECK_MSG(dmx__ckpt_kw_is_none(ck, key), "%s", msg);
        int64_t i;
        CHECK_MSG(dmx__ckpt_kw_int(ck, key, &i) == DMX_ERR_MODEL, "%s", msg);
        return;
    }
    CHECK_MSG(!dmx__ckpt_kw_is_none(ck, key), "%s", msg);
    if (!strcmp(val, "True") || !strcmp(val, "False")) {
        int b = -1;
        CHECK_MSG(dmx__ckpt_kw_bool(ck, key, &b) == DMX_OK && b == (val[0] == 'T'), "%s", msg);
        return;
    }
    if (val[0] == '\'') {
        const char *s = NULL;
        CHECK_MSG(dmx__ckpt_kw_str(ck, key, &s) == DMX_OK && s && strlen(s) == strlen(val) - 2 &&
                      !strncmp(s, val + 1, strlen(val) - 2),
                  "%s: got %s", msg, s ? s : "(null)");
        return;
    }
    if (!strncmp(val, "Fraction(", 9)) {
        long long a, b;
        REQUIRE(sscanf(val, "Fraction(%lld, %lld)", &a, &b) == 2);
        double d = 0;
        CHECK_MSG(dmx__ckpt_kw_num(ck, key, &d) == DMX_OK && d == (double)a / (double)b, "%s: got %g", msg, d);
        return;
    }
    if (val[0] == '[') {
        /* list of numbers or of 'strings' */
        char items[16][64];
        size_t n = 0;
        const char *p = val + 1;
        while (*p && *p != ']' && n < 16) {
            while (*p == ' ' || *p == ',') p++;
            if (*p == ']') break;
            size_t k = 0;
            if (*p == '\'') {
                items[n][k++] = *p++;
                while (*p && *p != '\'') items[n][k++] = *p++;
                items[n][k++] = *p++;
            } else {
                while (*p && *p != ',' && *p != ']') items[n][k++] = *p++;
            }
            items[n][k] = '\0';
            n++;
        }
        size_t got = 99;
        if (n > 0 && items[0][0] == '\'') {
            const char *v[16];
            CHECK_MSG(dmx__ckpt_kw_strlist(ck, key, v, 16, &got) == DMX_OK && got == n, "%s", msg);
            for (size_t i = 0; i < n && i < got; i++)
                CHECK_MSG(strlen(v[i]) == strlen(items[i]) - 2 && !strncmp(v[i], items[i] + 1, strlen(v[i])),
                          "%s [%zu]", msg, i);
        } else {
            double v[16];
            CHECK_MSG(dmx__ckpt_kw_numlist(ck, key, v, 16, &got) == DMX_OK && got == n, "%s", msg);
            for (size_t i = 0; i < n && i < got; i++) CHECK_MSG(v[i] == strtod(items[i], NULL), "%s [%zu]", msg, i);
        }
        return;
    }
    /* number: int if it has no '.', 'e', 'inf', 'nan' */
    double d = 0;
    CHECK_MSG(dmx__ckpt_kw_num(ck, key, &d) == DMX_OK && d == strtod(val, NULL), "%s: got %.17g", msg, d);
    if (!strpbrk(val, ".eE") && !strstr(val, "inf")) {
        int64_t i = 0;
        CHECK_MSG(dmx__ckpt_kw_int(ck, key, &i) == DMX_OK && i == strtoll(val, NULL, 10), "%s", msg);
    } else {
        int64_t i;
        CHECK_MSG(dmx__ckpt_kw_int(ck, key, &i) == DMX_ERR_MODEL && has(dmx_last_error(), key), "%s", msg);
    }
}

/* Independent half -> double: (-1)^s * m * 2^e. */
static double half_ref(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0) v = ldexp(m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- 1. golden fixtures ------------------------------------------------------ */

static void test_fixture(const char *file, const char *listing, int n_sources, int64_t channels,
                         int64_t bottom, int full_values) {
    const char *path = golden_path(file);
    double t0 = now_s();
    dmx__ckpt *ck = NULL;
    dmx_status s = dmx__ckpt_load(path, &ck);
    double dt = now_s() - t0;
    CHECK_MSG(s == DMX_OK, "%s: %s %s", path, dmx_status_name(s), dmx_last_error());
    if (s != DMX_OK) return;
    printf("  %-24s %zu tensors, loaded in %.3f s\n", file, dmx__ckpt_n_tensors(ck), dt);

    ref_listing L;
    load_listing(golden_path(listing), &L);
    CHECK(!strcmp(dmx__ckpt_klass(ck), "demucs.htdemucs.HTDemucs"));
    CHECK(!strcmp(dmx__ckpt_klass(ck), L.klass));

    /* kwargs: explicit spot checks, then every one of the listing. */
    const char *src[8];
    size_t ns = 0;
    static const char *const names[] = {"drums", "bass", "other", "vocals", "guitar", "piano"};
    CHECK(dmx__ckpt_kw_strlist(ck, "sources", src, 8, &ns) == DMX_OK && ns == (size_t)n_sources);
    for (size_t i = 0; i < ns && i < 6; i++) CHECK(!strcmp(src[i], names[i]));
    /* cap smaller than the list: fills cap, reports the full count */
    const char *two[2] = {0};
    CHECK(dmx__ckpt_kw_strlist(ck, "sources", two, 2, &ns) == DMX_OK && ns == (size_t)n_sources);
    CHECK(two[0] && !strcmp(two[0], "drums") && two[1] && !strcmp(two[1], "bass"));
    double seg = 0;
    CHECK(dmx__ckpt_kw_num(ck, "segment", &seg) == DMX_OK && seg == 39.0 / 5.0);
    int64_t i64 = 0;
    CHECK(dmx__ckpt_kw_int(ck, "segment", &i64) == DMX_ERR_MODEL && has(dmx_last_error(), "segment"));
    CHECK(dmx__ckpt_kw_int(ck, "channels", &i64) == DMX_OK && i64 == channels);
    CHECK(dmx__ckpt_kw_int(ck, "bottom_channels", &i64) == DMX_OK && i64 == bottom);
    CHECK(dmx__ckpt_kw_int(ck, "t_layers", &i64) == DMX_OK && i64 == 5);
    CHECK(dmx__ckpt_kw_int(ck, "nfft", &i64) == DMX_OK && i64 == 4096);
    CHECK(dmx__ckpt_kw_int(ck, "no_such_key", &i64) == DMX_ERR_NOT_FOUND);
    CHECK(!dmx__ckpt_kw_has(ck, "no_such_key") && !dmx__ckpt_kw_is_none(ck, "no_such_key"));
    CHECK(dmx__ckpt_kw_is_none(ck, "channels_time"));
    const char *str;
    CHECK(dmx__ckpt_kw_str(ck, "t_emb", &str) == DMX_OK && !strcmp(str, "sin"));
    CHECK(dmx__ckpt_kw_str(ck, "channels", &str) == DMX_ERR_MODEL);
    size_t n = 9;
    double nums[4];
    CHECK(dmx__ckpt_kw_numlist(ck, "multi_freqs", nums, 4, &n) == DMX_OK && n == 0);
    CHECK(dmx__ckpt_kw_numlist(ck, "sources", nums, 4, &n) == DMX_ERR_MODEL);
    CHECK(dmx__ckpt_kw_count(ck) == L.n_kw);
    for (size_t i = 0; i < L.n_kw; i++) {
        const char *k = dmx__ckpt_kw_key_at(ck, i);
        CHECK_MSG(k && !strcmp(k, L.kw_key[i]), "kwarg %zu: %s vs %s", i, k ? k : "(null)", L.kw_key[i]);
        check_kwarg(ck, L.kw_key[i], L.kw_val[i]);
    }
    CHECK(dmx__ckpt_kw_key_at(ck, L.n_kw) == NULL);

    /* state: names and shapes in file order */
    CHECK_MSG(dmx__ckpt_n_tensors(ck) == L.n_t, "%zu tensors, listing has %zu", dmx__ckpt_n_tensors(ck), L.n_t);
    for (size_t i = 0; i < L.n_t && i < dmx__ckpt_n_tensors(ck); i++) {
        const dmx__tensor *t = dmx__ckpt_tensor_at(ck, i);
        const ref_tensor *r = &L.t[i];
        int ok = !strcmp(t->name, r->name) && t->ndim == r->ndim;
        size_t numel = 1;
        for (int d = 0; ok && d < r->ndim; d++) {
            ok = t->shape[d] == r->shape[d];
            numel *= (size_t)r->shape[d];
        }
        CHECK_MSG(ok && t->numel == numel && t->data, "tensor %zu: %s vs %s", i, t->name, r->name);
        CHECK(dmx__ckpt_find(ck, r->name) == t);
    }
    CHECK(dmx__ckpt_tensor_at(ck, dmx__ckpt_n_tensors(ck)) == NULL);
    CHECK(dmx__ckpt_find(ck, "no.such.tensor") == NULL);

    /* fp16 values against the raw bytes. torch.save names storages "0", "1",
     * ... in the order it first meets them, which is state order here (one
     * storage per tensor), so tensor i lives in <prefix>/data/<i>. */
    size_t flen;
    unsigned char *raw = read_file(path, &flen);
    REQUIRE(raw);
    static tz_entry es[4096];
    size_t ne = tz_list(raw, flen, es, 4096);
    char prefix[256] = "";
    for (size_t i = 0; i < ne; i++) {
        const char *sl = strstr(es[i].name, "/data.pkl");
        if (sl && !sl[9]) snprintf(prefix, sizeof prefix, "%.*s", (int)(sl - es[i].name), es[i].name);
    }
    REQUIRE(prefix[0]);
    size_t nt = dmx__ckpt_n_tensors(ck), checked = 0, values = 0;
    for (size_t i = 0; i < nt; i++) {
        if (!full_values && !(i < 3 || i == nt / 2 || i + 2 >= nt || i % 97 == 0)) continue;
        const dmx__tensor *t = dmx__ckpt_tensor_at(ck, i);
        char nm[300];
        snprintf(nm, sizeof nm, "%s/data/%zu", prefix, i);
        const tz_entry *e = tz_find(es, ne, nm);
        CHECK_MSG(e && e->size == 2 * t->numel, "%s", nm);
        if (!e || e->size != 2 * t->numel) continue;
        size_t bad = 0;
        for (size_t j = 0; j < t->numel; j++) {
            double ref = half_ref(rd16(e->data + 2 * j));
            if (!((double)t->data[j] == ref || (isnan(ref) && isnan(t->data[j])))) bad++;
        }
        CHECK_MSG(bad == 0, "%s: %zu of %zu values differ", t->name, bad, t->numel);
        checked++;
        values += t->numel;
    }
    CHECK(checked > 0);
    printf("  %-24s fp16 values checked: %zu tensors, %zu values\n", file, checked, values);

    /* steal: ownership moves, the entry stays with NULL data */
    const dmx__tensor *t0t = dmx__ckpt_tensor_at(ck, 0);
    float first = t0t->data[0];
    float *stolen = dmx__ckpt_steal(ck, t0t->name);
    CHECK(stolen && stolen[0] == first && t0t->data == NULL);
    CHECK(dmx__ckpt_steal(ck, t0t->name) == NULL);
    CHECK(dmx__ckpt_steal(ck, "no.such.tensor") == NULL);
    free(stolen);

    free(raw);
    free(L.t);
    dmx__ckpt_free(ck);
}

/* ---- 2. fp16 widening ------------------------------------------------------- */

static void test_f16(void) {
    uint16_t *h = malloc(65536 * 2 + 2);
    float *a = malloc(65536 * sizeof(float)), *b = malloc(65536 * sizeof(float));
    REQUIRE(h && a && b);
    size_t bad_ref = 0, bad_vec = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        float f = dmx__f16_to_f32_scalar((uint16_t)i);
        double r = half_ref((uint16_t)i);
        uint32_t bits;
        memcpy(&bits, &f, 4);
        if (isnan(r)) {
            /* payload kept, quiet bit set, sign kept */
            uint32_t want = ((i & 0x8000u) << 16) | 0x7fc00000u | ((i & 0x3ffu) << 13);
            if (bits != want) bad_ref++;
        } else if ((double)f != r || !signbit(f) != !signbit(r)) {
            bad_ref++;
        }
        h[i] = (uint16_t)i;
        a[i] = f;
    }
    CHECK_MSG(bad_ref == 0, "%zu halfs widen wrongly", bad_ref);
    /* array path (F16C when compiled in) must be bit-identical, aligned or
     * not, whatever the tail length */
    dmx__f16_to_f32(h, b, 65536);
    for (size_t i = 0; i < 65536; i++) bad_vec += memcmp(&a[i], &b[i], 4) != 0;
    unsigned char *u = malloc(65536 * 2 + 1);
    REQUIRE(u);
    memcpy(u + 1, h, 65536 * 2);
    for (size_t len = 0; len < 40; len++) {
        memset(b, 0, 64 * sizeof(float));
        dmx__f16_to_f32(u + 1 + 2 * 1000, b, len);
        for (size_t i = 0; i < len; i++) bad_vec += memcmp(&a[1000 + i], &b[i], 4) != 0;
    }
    dmx__f16_to_f32(u + 1, b, 65535);
    for (size_t i = 0; i < 65535; i++) bad_vec += memcmp(&a[i], &b[i], 4) != 0;
    CHECK_MSG(bad_vec == 0, "%zu vector/scalar mismatches", bad_vec);
#ifdef __F16C__
    printf("  fp16: F16C path and scalar path agree on all 65536 inputs\n");
#endif
    free(u);
    free(h);
    free(a);
    free(b);
}

/* ---- 3. damaged fixture ------------------------------------------------------- */

static void test_damage(void) {
    size_t len;
    unsigned char *f = read_file(golden_path("models/tiny4s.th"), &len);
    REQUIRE(f && len > 100000);
    unsigned char *c = malloc(len);
    REQUIRE(c);

    /* truncations */
    EXPECT_LOAD(f, 0, DMX_ERR_CORRUPT, "empty");
    EXPECT_LOAD(f, 10, DMX_ERR_CORRUPT, "too small");
    EXPECT_LOAD(f, len / 2, DMX_ERR_CORRUPT, "end of central directory record not found");
    EXPECT_LOAD(f, len - 1, DMX_ERR_CORRUPT, "end of central directory record not found");
    EXPECT_LOAD(f, len - 22, DMX_ERR_CORRUPT, "end of central directory record not found");

    /* locate the records */
    size_t eocd = len - 22;
    REQUIRE(rd32(f + eocd) == 0x06054b50u);
    size_t cd = rd32(f + eocd + 16);
    REQUIRE(rd32(f + cd) == 0x02014b50u);
    size_t first_name_len = rd16(f + cd + 28);
    static tz_entry es[4096];
    size_t ne = tz_list(f, len, es, 4096);
    size_t mid = 0, biggest = 0; /* middle of the largest tensor entry */
    for (size_t i = 0; i < ne; i++) {
        if (es[i].size > biggest) {
            biggest = es[i].size;
            mid = (size_t)(es[i].data - f) + es[i].size / 2;
        }
    }

    struct {
        size_t at;
        dmx_status st;
        const char *phrase;
    } flips[] = {
        {cd + 0, DMX_ERR_CORRUPT, "bad central directory entry signature"},
        {cd + 8, DMX_ERR_CORRUPT, "local header disagrees"},          /* flags */
        {cd + 10, DMX_ERR_CORRUPT, "local header disagrees"},         /* method */
        {cd + 16, DMX_ERR_CORRUPT, "data descriptor disagrees"},      /* crc */
        {cd + 20, DMX_ERR_CORRUPT, "sizes differ"},                   /* compressed size */
        {cd + 26, DMX_ERR_CORRUPT, "sizes differ"},                   /* size, high byte */
        {cd + 28, DMX_ERR_CORRUPT, ""},                               /* name length */
        {cd + 31, DMX_ERR_CORRUPT, ""},                               /* extra length */
        {cd + 44, DMX_ERR_CORRUPT, "local header offset"},            /* offset, high bytes */
        {cd + 42, DMX_ERR_CORRUPT, "bad local header signature"},     /* offset, low byte */
        {cd + 46 + first_name_len - 1, DMX_ERR_CORRUPT, "local header names a different entry"},
        {eocd + 10, DMX_ERR_CORRUPT, "ZIP64 end record disagrees"},   /* entry count */
        {eocd + 16, DMX_ERR_CORRUPT, "ZIP64 end record disagrees"},   /* cd offset */
        {eocd + 20, DMX_ERR_CORRUPT, "end of central directory record not found"}, /* comment len */
        {eocd - 20 + 12, DMX_ERR_CORRUPT, "ZIP64 end record offset"}, /* locator, high byte */
        {eocd - 20 + 8, DMX_ERR_CORRUPT, "bad ZIP64 end record signature"}, /* locator, low byte */
        {eocd - 20 - 56 + 40, DMX_ERR_CORRUPT, "ZIP64 end record disagrees"}, /* ZIP64 cd size */
        {eocd - 20 - 56 + 0, DMX_ERR_CORRUPT, "bad ZIP64 end record signature"},
        {0, DMX_ERR_CORRUPT, "bad local header signature"},           /* first local header */
        {mid, DMX_ERR_CORRUPT, "CRC-32 mismatch in entry 'tiny4s/data/"},
        {100, DMX_ERR_CORRUPT, "CRC-32 mismatch in entry 'tiny4s/data.pkl'"},
    };
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(c, f, len);
        c[flips[i].at] ^= 0x5a;
        dmx__ckpt *ck = (dmx__ckpt *)1;
        dmx_status s = dmx__ckpt_load_mem(c, len, "tiny4s.th", &ck);
        CHECK_MSG(s == flips[i].st && has(dmx_last_error(), flips[i].phrase) && ck == NULL,
                  "flip at %zu: %s '%s' (want '%s')", flips[i].at, dmx_status_name(s), dmx_last_error(),
                  flips[i].phrase);
        if (s == DMX_OK) dmx__ckpt_free(ck);
    }
    /* every byte of the first two central entries and of the end records:
     * detected unless it is one of the fields nothing relies on */
    size_t second = cd + 46 + first_name_len;
    size_t end2 = second + 46 + rd16(f + second + 28);
    size_t undetected = 0, tried = 0;
    for (size_t at = cd; at < len; at++) {
        if (at == end2) at = eocd - 20 - 56;
        size_t rel = at < second ? at - cd : at < end2 ? at - second : (size_t)-1;
        int ignorable = rel == 4 || rel == 5 || (rel >= 36 && rel <= 41); /* made-by, attributes */
        size_t r64 = at - (eocd - 20 - 56);
        if (at >= eocd - 20 - 56 && r64 >= 12 && r64 < 16) ignorable = 1; /* ZIP64 record versions */
        memcpy(c + cd, f + cd, len - cd);
        c[at] ^= 0xff;
        dmx__ckpt *ck = NULL;
        dmx_status s = dmx__ckpt_load_mem(c, len, "tiny4s.th", &ck);
        tried++;
        if (s == DMX_OK) {
            dmx__ckpt_free(ck);
            if (!ignorable) {
                undetected++;
                fprintf(stderr, "  flip at %zu (record byte %zu) not detected\n", at, rel);
            }
        } else {
            CHECK_MSG(s == DMX_ERR_CORRUPT || s == DMX_ERR_UNSUPPORTED, "flip at %zu: %s", at, dmx_status_name(s));
            CHECK(dmx_last_error()[0] != '\0');
        }
        c[at] = f[at];
    }
    CHECK_MSG(undetected == 0, "%zu of %zu directory flips undetected", undetected, tried);

    /* rebuilt archives: the writer round-trips; variants of the container */
    size_t rl;
    unsigned char *r = rebuild(f, len, NULL, NULL, &rl);
    dmx__ckpt *ref = EXPECT_LOAD(f, len, DMX_OK, NULL);
    dmx__ckpt *ck = EXPECT_LOAD(r, rl, DMX_OK, NULL);
    REQUIRE(ref && ck);
    CHECK(dmx__ckpt_n_tensors(ck) == dmx__ckpt_n_tensors(ref));
    const dmx__tensor *ta = dmx__ckpt_tensor_at(ref, 7), *tb = dmx__ckpt_tensor_at(ck, 7);
    CHECK(ta->numel == tb->numel && !memcmp(ta->data, tb->data, ta->numel * 4));
    dmx__ckpt_free(ck);
    free(r);

    static const zw_opts variants[] = {
        {0, 0, 0, 0, 0, NULL},              /* plain zip, no descriptors */
        {1, 1, 1, 1, 0, NULL},              /* ZIP64 extra in every central entry */
        {0, 2, 1, 0, 0, NULL},              /* saturated classic end record */
        {1, 1, 0, 1, 0, "a trailing comment PK\x05\x06 with a fake signature"},
    };
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        r = rebuild(f, len, NULL, &variants[v], &rl);
        ck = EXPECT_LOAD(r, rl, DMX_OK, NULL);
        if (ck) {
            tb = dmx__ckpt_tensor_at(ck, 7);
            CHECK_MSG(ta->numel == tb->numel && !memcmp(ta->data, tb->data, ta->numel * 4), "variant %zu", v);
            dmx__ckpt_free(ck);
        }
        free(r);
    }
    /* any single top-level prefix */
    rebuild_edit ren = {.old_prefix = "tiny4s/", .new_prefix = "archive/"};
    r = rebuild(f, len, &ren, NULL, &rl);
    ck = EXPECT_LOAD(r, rl, DMX_OK, NULL);
    if (ck) {
        CHECK(dmx__ckpt_n_tensors(ck) == 533);
        dmx__ckpt_free(ck);
    }
    free(r);
    /* byteorder */
    rebuild_edit bo = {.add_name = "tiny4s/byteorder", .add_data = "little"};
    r = rebuild(f, len, &bo, NULL, &rl);
    ck = EXPECT_LOAD(r, rl, DMX_OK, NULL);
    dmx__ckpt_free(ck);
    free(r);
    bo.add_data = "big";
    r = rebuild(f, len, &bo, NULL, &rl);
    EXPECT_LOAD(r, rl, DMX_ERR_UNSUPPORTED, "big-endian");
    free(r);
    /* compressed entry */
    zw_opts deflated = TORCH_LIKE;
    deflated.method = 8;
    r = rebuild(f, len, NULL, &deflated, &rl);
    EXPECT_LOAD(r, rl, DMX_ERR_UNSUPPORTED, "is compressed (method 8)");
    free(r);

    /* missing storage entry */
    rebuild_edit drop = {.drop = "tiny4s/data/5"};
    r = rebuild(f, len, &drop, NULL, &rl);
    EXPECT_LOAD(r, rl, DMX_ERR_CORRUPT, "storage entry 'tiny4s/data/5' of state tensor 'encoder.0.dconv.layers.0.0.bias' is missing");
    free(r);
    /* no pickle */
    drop.drop = "tiny4s/data.pkl";
    r = rebuild(f, len, &drop, NULL, &rl);
    EXPECT_LOAD(r, rl, DMX_ERR_CORRUPT, "no '<prefix>/data.pkl' entry");
    free(r);

    /* edited pickles */
    const tz_entry *pe = tz_find(es, ne, "tiny4s/data.pkl");
    REQUIRE(pe);
    unsigned char *pk = malloc(pe->size + 64);
    REQUIRE(pk);
    rebuild_edit rp = {.replace = "tiny4s/data.pkl", .with = pk, .with_len = pe->size};

    memcpy(pk, pe->data, pe->size);
    CHECK(pk[2] == '}');
    pk[2] = 0xff; /* unknown opcode */
    r = rebuild(f, len, &rp, NULL, &rl);
    EXPECT_LOAD(r, rl, DMX_ERR_UNSUPPORTED, "unknown opcode 0xff at pickle offset 2");
    free(r);

    /* storage class swaps: the HalfStorage global is memoised once and reused
     * by every tensor, so this retypes them all */
    const char *needle = "torch\nHalfStorage\n";
    struct {
        const char *with;
        dmx_status st;
        const char *phrase;
    } swaps[] = {
        {"torch\nFloatStorage\n", DMX_ERR_CORRUPT,
         "storage entry 'tiny4s/data/0' has 512 bytes, expected 256 elements x 4 bytes (float32)"},
        {"torch\nLongStorage\n", DMX_ERR_UNSUPPORTED, "quantized checkpoints are not supported"},
        {"torch\nComplexFloatStorage\n", DMX_ERR_UNSUPPORTED, "storage type torch.ComplexFloatStorage is not supported"},
        {"torch\nBFloat16Storage\n", DMX_OK, NULL},
    };
    size_t at = 0;
    while (at + strlen(needle) <= pe->size && memcmp(pe->data + at, needle, strlen(needle))) at++;
    REQUIRE(at + strlen(needle) <= pe->size);
    for (size_t i = 0; i < sizeof swaps / sizeof swaps[0]; i++) {
        size_t wl = strlen(swaps[i].with), nl = strlen(needle);
        memcpy(pk, pe->data, at);
        memcpy(pk + at, swaps[i].with, wl);
        memcpy(pk + at + wl, pe->data + at + nl, pe->size - at - nl);
        rp.with_len = pe->size - nl + wl;
        r = rebuild(f, len, &rp, NULL, &rl);
        if (swaps[i].phrase) {
            EXPECT_LOAD(r, rl, swaps[i].st, swaps[i].phrase);
        } else {
            /* bf16 reinterpretation of the same bytes: loads, values are the
             * top halves of fp32s built from each 16-bit word */
            ck = EXPECT_LOAD(r, rl, DMX_OK, NULL);
            if (ck) {
                const tz_entry *d0 = tz_find(es, ne, "tiny4s/data/0");
                const dmx__tensor *t = dmx__ckpt_tensor_at(ck, 0);
                uint32_t bits = (uint32_t)rd16(d0->data + 2 * 3) << 16;
                float want;
                memcpy(&want, &bits, 4);
                CHECK(t->data[3] == want);
                dmx__ckpt_free(ck);
            }
        }
        free(r);
    }
    rp.with_len = pe->size;

    /* truncated pickle */
    memcpy(pk, pe->data, pe->size);
    rp.with_len = pe->size - 1; /* drops STOP */
    r = rebuild(f, len, &rp, NULL, &rl);
    EXPECT_LOAD(r, rl, DMX_ERR_CORRUPT, "pickle ended without STOP");
    free(r);
    rp.with_len = pe->size / 2;
    r = rebuild(f, len, &rp, NULL, &rl);
    EXPECT_LOAD(r, rl, DMX_ERR_CORRUPT, "tiny4s/data.pkl");
    free(r);

    /* legacy format and non-zips */
    static const unsigned char legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8,
                                           0x50, 0x19, 0x2e, 0x80, 0x02, 0x4d, 0xe9, 0x03, 0x2e, 0x00, 0x00, 0x00};
    EXPECT_LOAD(legacy, sizeof legacy, DMX_ERR_UNSUPPORTED, "legacy");
    memset(c, 'x', 5000);
    EXPECT_LOAD(c, 5000, DMX_ERR_CORRUPT, "not a zip archive");

    /* file API errors */
    dmx__ckpt *none = (dmx__ckpt *)1;
    CHECK(dmx__ckpt_load("/nonexistent/dir/x.th", &none) == DMX_ERR_NOT_FOUND && none == NULL);
    CHECK(has(dmx_last_error(), "/nonexistent/dir/x.th"));
    CHECK(dmx__ckpt_load(golden_dir(), &none) == DMX_ERR_IO);
    dmx__ckpt_free(NULL);

    free(pk);
    dmx__ckpt_free(ref);
    free(c);
    free(f);
}

/* ---- 4. synthetic checkpoints ------------------------------------------------ */

/* pickle writer */
static void pb_op(buf_t *b, int op) { put8(b, (unsigned)op); }
static void pb_str(buf_t *b, const char *s) {
    size_t n = strlen(s);
    if (n < 256 && (b->n & 1)) { /* mix both encodings */
        pb_op(b, 0x8c);
        put8(b, (unsigned)n);
    } else {
        pb_op(b, 'X');
        put32(b, (uint32_t)n);
    }
    put(b, s, n);
}
static void pb_int(buf_t *b, int64_t v) {
    if (v >= 0 && v < 256) {
        pb_op(b, 'K');
        put8(b, (unsigned)v);
    } else if (v >= 0 && v < 65536) {
        pb_op(b, 'M');
        put16(b, (unsigned)v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        pb_op(b, 'J');
        put32(b, (uint32_t)(int32_t)v);
    } else {
        pb_op(b, 0x8a);
        put8(b, 8);
        put64(b, (uint64_t)v);
    }
}
static void pb_float(buf_t *b, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    pb_op(b, 'G');
    for (int i = 7; i >= 0; i--) put8(b, (unsigned)(u >> (8 * i)) & 0xff);
}
static void pb_global(buf_t *b, const char *mod, const char *name) {
    pb_op(b, 'c');
    put(b, mod, strlen(mod));
    put8(b, '\n');
    put(b, name, strlen(name));
    put8(b, '\n');
}
static void pb_storage(buf_t *b, const char *type, const char *key, int64_t numel) {
    pb_op(b, '(');
    pb_str(b, "storage");
    pb_global(b, "torch", type);
    pb_str(b, key);
    pb_str(b, "cpu");
    pb_int(b, numel);
    pb_op(b, 't');
    pb_op(b, 'Q');
}
static void pb_dims(buf_t *b, int nd, const int64_t *v) {
    if (nd == 0) {
        pb_op(b, ')');
        return;
    }
    pb_op(b, '(');
    for (int i = 0; i < nd; i++) pb_int(b, v[i]);
    pb_op(b, 't');
}
/* _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()) */
static void pb_tensor(buf_t *b, const char *type, const char *key, int64_t numel, int64_t off, int nd,
                      const int64_t *size, const int64_t *stride) {
    pb_global(b, "torch._utils", "_rebuild_tensor_v2");
    pb_op(b, '(');
    pb_storage(b, type, key, numel);
    pb_int(b, off);
    pb_dims(b, nd, size);
    pb_dims(b, nd, stride);
    pb_op(b, 0x89);
    pb_global(b, "collections", "OrderedDict");
    pb_op(b, ')');
    pb_op(b, 'R');
    pb_op(b, 't');
    pb_op(b, 'R');
}

enum {
    SY_QUANTIZED = 1 << 0,
    SY_ARGS = 1 << 1,
    SY_NO_KLASS = 1 << 2,
    SY_DUP = 1 << 3,
    SY_NOT_TENSOR = 1 << 4,
    SY_OOB = 1 << 5,
    SY_TOP_LIST = 1 << 6,
    SY_MISSING_KEY = 1 << 7,
    SY_INT_STATE = 1 << 8,
    SY_V3_MISMATCH = 1 << 9,
};

static const float S0[8] = {-3.0f, -1.5f, 0.0f, 1.5f, 3.0f, 4.5f, 6.0f, 7.5f};
static const uint16_t S1[4] = {0x3f80, 0xc040, 0x7f80, 0x0001};     /* bf16 */
static const double S2[4] = {0.1, -2.5, 1e300, 3.0};
static const uint16_t S3[3] = {0x3c00, 0x0001, 0xfc00};             /* fp16 */
static const uint16_t S4[4] = {0x4000, 0xc200, 0x3555, 0x7bff};     /* fp16 bytes of an untyped storage */

static void build_pickle(buf_t *b, unsigned flags) {
    pb_op(b, 0x80);
    put8(b, 4);
    pb_op(b, 0x95); /* FRAME covering the rest is only a hint */
    put64(b, 0);
    if (flags & SY_TOP_LIST) {
        pb_op(b, ']');
        pb_op(b, '.');
        return;
    }
    pb_op(b, '}');
    pb_op(b, 0x94); /* MEMOIZE -> memo 0 */
    pb_op(b, '(');
    if (!(flags & SY_NO_KLASS)) {
        pb_str(b, "klass");
        pb_str(b, "demucs.htdemucs"); /* STACK_GLOBAL */
        pb_str(b, "HTDemucs");
        pb_op(b, 0x93);
    }
    pb_str(b, "args");
    if (flags & SY_ARGS) {
        pb_int(b, 1);
        pb_op(b, 0x85);
    } else {
        pb_op(b, ')');
    }
    pb_str(b, "kwargs");
    pb_op(b, '}');
    pb_op(b, '(');
    /* Fraction from a string and from ints */
    pb_str(b, "segment");
    pb_global(b, "fractions", "Fraction");
    pb_op(b, 'q');
    put8(b, 9);
    pb_str(b, "39/5");
    pb_op(b, 0x85);
    pb_op(b, 'R');
    pb_str(b, "segment2");
    pb_op(b, 'h');
    put8(b, 9);
    pb_int(b, 39);
    pb_int(b, -5);
    pb_op(b, 0x86);
    pb_op(b, 'R');
    pb_str(b, "badfrac"); /* not a fraction: generic object */
    pb_op(b, 'h');
    put8(b, 9);
    pb_str(b, "x/y");
    pb_op(b, 0x85);
    pb_op(b, 'R');
    pb_str(b, "sources"); /* a tuple */
    pb_op(b, '(');
    pb_str(b, "drums");
    pb_str(b, "bass");
    pb_op(b, 'T'); /* BINSTRING */
    put32(b, 5);
    put(b, "other", 5);
    pb_op(b, 'U'); /* SHORT_BINSTRING */
    put8(b, 6);
    put(b, "vocals", 6);
    pb_op(b, 't');
    pb_str(b, "channels");
    pb_op(b, 'J');
    put32(b, 48);
    pb_str(b, "neg");
    pb_int(b, -5);
    pb_str(b, "big");
    pb_int(b, (int64_t)1 << 62);
    pb_str(b, "negbig"); /* LONG1 with redundant sign bytes */
    pb_op(b, 0x8a);
    put8(b, 10);
    put64(b, (uint64_t)-7);
    put16(b, 0xffff);
    pb_str(b, "huge"); /* 2**64: beyond int64 */
    pb_op(b, 0x8a);
    put8(b, 9);
    put64(b, 0);
    put8(b, 1);
    pb_str(b, "long4");
    pb_op(b, 0x8b);
    put32(b, 2);
    put16(b, 0x0102);
    pb_str(b, "ftext");
    pb_op(b, 'F');
    put(b, "2.5\n", 4);
    pb_str(b, "itext");
    pb_op(b, 'I');
    put(b, "123\n", 4);
    pb_str(b, "btext");
    pb_op(b, 'I');
    put(b, "01\n", 3);
    pb_str(b, "ltext");
    pb_op(b, 'L');
    put(b, "-77L\n", 5);
    pb_str(b, "bigtext");
    pb_op(b, 'L');
    put(b, "123456789012345678901234567890L\n", 32);
    pb_str(b, "flag");
    pb_op(b, 0x88);
    pb_str(b, "off");
    pb_op(b, 0x89);
    pb_str(b, "nothing");
    pb_op(b, 'N');
    pb_str(b, "rate");
    pb_float(b, 0.25);
    pb_str(b, "freqs");
    pb_op(b, ']');
    pb_str(b, "scale"); /* [5000.0, 1, Fraction(1, 2)] */
    pb_op(b, ']');
    pb_op(b, '(');
    pb_float(b, 5000.0);
    pb_int(b, 1);
    pb_global(b, "fractions", "Fraction");
    pb_int(b, 1);
    pb_int(b, 2);
    pb_op(b, 0x86);
    pb_op(b, 'R');
    pb_op(b, 'e');
    pb_str(b, "name8");
    pb_op(b, 0x8d);
    put64(b, 3);
    put(b, "abc", 3);
    pb_str(b, "blob");
    pb_op(b, 'C');
    put8(b, 2);
    put(b, "\x00\x01", 2);
    pb_str(b, "blob4");
    pb_op(b, 'B');
    put32(b, 1);
    put8(b, 7);
    pb_str(b, "blob8");
    pb_op(b, 0x8e);
    put64(b, 0);
    pb_str(b, "mixed"); /* list with a non-number */
    pb_op(b, '(');
    pb_int(b, 1);
    pb_str(b, "two");
    pb_op(b, 'l');
    pb_op(b, 'u');
    pb_str(b, "state");
    pb_global(b, "collections", "OrderedDict");
    pb_op(b, ')');
    pb_op(b, 'R');
    pb_op(b, '(');
    {
        int64_t s23[] = {2, 3}, st31[] = {3, 1}, s32[] = {3, 2}, st13[] = {1, 3}, s4[] = {4}, st1[] = {1};
        int64_t s22[] = {2, 2}, st21[] = {2, 1}, s04[] = {0, 4}, st41[] = {4, 1}, st01[] = {0, 1}, s3[] = {3};
        int64_t s1[] = {1};
        pb_str(b, "a.weight");
        pb_tensor(b, "FloatStorage", "0", 8, 2, 2, s23, st31);
        pb_str(b, "a.t");
        pb_tensor(b, "FloatStorage", "0", 8, 0, 2, s32, st13);
        pb_str(b, "b.bf16");
        pb_tensor(b, "BFloat16Storage", "1", 4, 0, 1, s4, st1);
        pb_str(b, "c.f64");
        pb_tensor(b, "DoubleStorage", "2", 4, 0, 2, s22, st21);
        pb_str(b, "d.scalar");
        pb_tensor(b, "HalfStorage", "3", 3, 1, 0, NULL, NULL);
        pb_str(b, "e.empty");
        pb_tensor(b, "HalfStorage", "3", 3, 0, 2, s04, st41);
        pb_str(b, "f.bcast");
        pb_tensor(b, "FloatStorage", "0", 8, 4, 2, s23, st01);
        /* _rebuild_tensor_v3(untyped storage, 0, (2,2), (2,1), False, {}, torch.float16) */
        pb_str(b, "g.v3");
        pb_global(b, "torch._utils", "_rebuild_tensor_v3");
        pb_op(b, '(');
        pb_storage(b, "UntypedStorage", "4", 8);
        pb_int(b, 0);
        pb_dims(b, 2, s22);
        pb_dims(b, 2, st21);
        pb_op(b, 0x89);
        pb_op(b, '}');
        pb_global(b, "torch", (flags & SY_V3_MISMATCH) ? "int32" : "float16");
        pb_op(b, 't');
        pb_op(b, 'R');
        /* nn.Parameter via _rebuild_parameter */
        pb_str(b, "h.param");
        pb_global(b, "torch._utils", "_rebuild_parameter");
        pb_tensor(b, "HalfStorage", "3", 3, 0, 1, s1, st1);
        pb_op(b, 0x88);
        pb_global(b, "collections", "OrderedDict");
        pb_op(b, ')');
        pb_op(b, 'R');
        pb_op(b, 0x87);
        pb_op(b, 'R');
        pb_str(b, "i.f16");
        pb_tensor(b, "HalfStorage", (flags & SY_MISSING_KEY) ? "99" : "3", 3, 0, 1, s3, st1);
        if (flags & SY_OOB) {
            pb_str(b, "j.oob");
            pb_tensor(b, "FloatStorage", "0", 8, 3, 2, s23, st31);
        }
        if (flags & SY_DUP) {
            pb_str(b, "a.t");
            pb_tensor(b, "FloatStorage", "0", 8, 0, 1, s1, st1);
        }
        if (flags & SY_NOT_TENSOR) {
            pb_str(b, "k.notatensor");
            pb_int(b, 3);
        }
        if (flags & SY_INT_STATE) {
            pb_str(b, "l.int");
            pb_tensor(b, "LongStorage", "0", 4, 0, 1, s1, st1);
        }
        if (flags & SY_QUANTIZED) {
            pb_str(b, "__quantized");
            pb_op(b, 0x88);
        }
    }
    pb_op(b, 'u');
    /* training_args: a tuple of foreign objects exercising the remaining opcodes */
    pb_str(b, "training_args");
    pb_op(b, '(');
    pb_global(b, "omegaconf.dictconfig", "DictConfig");
    pb_op(b, '}');
    pb_op(b, 0x85);
    pb_op(b, 'R');
    pb_op(b, '}'); /* BUILD state */
    pb_str(b, "_content");
    pb_op(b, ']');
    pb_op(b, 'r'); /* LONG_BINPUT 300 */
    put32(b, 300);
    pb_op(b, 'j'); /* LONG_BINGET 300: a list containing itself */
    put32(b, 300);
    pb_op(b, 'a');
    pb_op(b, 's');
    pb_op(b, 'b');
    pb_op(b, '(');
    pb_str(b, "x");
    pb_op(b, 'p'); /* PUT 7 */
    put(b, "7\n", 2);
    pb_op(b, 'g'); /* GET 7 */
    put(b, "7\n", 2);
    pb_op(b, '2'); /* DUP */
    pb_op(b, '0'); /* POP */
    pb_op(b, 'd'); /* DICT {'x': 'x'} */
    pb_op(b, '(');
    pb_int(b, 1);
    pb_op(b, '1'); /* POP_MARK */
    pb_global(b, "foo", "Bar"); /* NEWOBJ, then items on the generic object */
    pb_op(b, ')');
    pb_op(b, 0x81);
    pb_op(b, '(');
    pb_int(b, 1);
    pb_int(b, 2);
    pb_op(b, 'e');
    pb_str(b, "k");
    pb_int(b, 3);
    pb_op(b, 's');
    pb_global(b, "foo", "Baz"); /* NEWOBJ_EX */
    pb_op(b, ')');
    pb_op(b, '}');
    pb_op(b, 0x92);
    pb_op(b, 0x8f); /* set */
    pb_op(b, '(');
    pb_int(b, 1);
    pb_op(b, 0x90);
    pb_op(b, '(');
    pb_int(b, 2);
    pb_op(b, 0x91); /* frozenset */
    pb_op(b, '(');
    pb_op(b, '(');
    pb_op(b, '0'); /* POP of an empty frame pops the MARK */
    pb_op(b, ')');
    pb_op(b, 't'); /* ((),) */
    pb_op(b, 't'); /* the training_args tuple */
    pb_op(b, 'u');
    pb_op(b, '.');
}

static unsigned char *build_synth(unsigned flags, size_t *len, buf_t *pickle_out) {
    buf_t pk = {0};
    build_pickle(&pk, flags);
    zw_in in[] = {
        {"synth/data.pkl", pk.p, pk.n},
        {"synth/byteorder", "little", 6},
        {"synth/data/0", S0, sizeof S0},
        {"synth/data/1", S1, sizeof S1},
        {"synth/data/2", S2, sizeof S2},
        {"synth/data/3", S3, sizeof S3},
        {"synth/data/4", S4, sizeof S4},
        {"synth/version", "3\n", 2},
    };
    unsigned char *z = zw_build(in, sizeof in / sizeof in[0], &TORCH_LIKE, len);
    if (pickle_out) *pickle_out = pk;
    else free(pk.p);
    return z;
}

static float bf(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void check_tensor(const dmx__ckpt *ck, const char *name, int nd, const int64_t *shape, const float *want,
                         size_t n) {
    const dmx__tensor *t = dmx__ckpt_find(ck, name);
    CHECK_MSG(t, "%s missing", name);
    if (!t) return;
    int ok = t->ndim == nd && t->numel == n && t->data;
    for (int d = 0; ok && d < nd; d++) ok = t->shape[d] == shape[d];
    for (size_t i = 0; ok && i < n; i++) ok = memcmp(&t->data[i], &want[i], 4) == 0 || (t->data[i] == want[i]);
    CHECK_MSG(ok, "tensor %s", name);
}

static void test_synth(void) {
    size_t len;
    buf_t pk;
    unsigned char *z = build_synth(0, &len, &pk);
    /* seed corpus for the fuzzer */
    const char *seed_dir = getenv("DEMIX_FUZZ_SEED_DIR");
    if (seed_dir && *seed_dir) {
        char p[4096];
        snprintf(p, sizeof p, "%s/synth.th", seed_dir);
        CHECK(write_file(p, z, len) == 0);
        snprintf(p, sizeof p, "%s/synth.pkl", seed_dir);
        CHECK(write_file(p, pk.p, pk.n) == 0);
        /* a checkpoint whose pickle names no tensor at all */
        buf_t np = {0};
        pb_op(&np, 0x80);
        put8(&np, 2);
        pb_op(&np, '}');
        pb_op(&np, '(');
        pb_str(&np, "klass");
        pb_str(&np, "demucs.htdemucs.HTDemucs");
        pb_str(&np, "args");
        pb_op(&np, ')');
        pb_str(&np, "kwargs");
        pb_op(&np, '}');
        pb_str(&np, "state");
        pb_op(&np, '}');
        pb_op(&np, 'u');
        pb_op(&np, '.');
        zw_in nin[] = {{"notensors/data.pkl", np.p, np.n}, {"notensors/version", "3\n", 2}};
        size_t nlen;
        unsigned char *nz = zw_build(nin, 2, &TORCH_LIKE, &nlen);
        snprintf(p, sizeof p, "%s/notensors.th", seed_dir);
        CHECK(nz && write_file(p, nz, nlen) == 0);
        free(nz);
        free(np.p);
    }

    dmx__ckpt *ck = EXPECT_LOAD(z, len, DMX_OK, NULL);
    REQUIRE(ck);
    CHECK(!strcmp(dmx__ckpt_klass(ck), "demucs.htdemucs.HTDemucs"));
    CHECK(dmx__ckpt_n_tensors(ck) == 10);
    static const char *const order[] = {"a.weight", "a.t",     "b.bf16",  "c.f64",   "d.scalar",
                                        "e.empty",  "f.bcast", "g.v3",    "h.param", "i.f16"};
    for (size_t i = 0; i < 10; i++) CHECK(!strcmp(dmx__ckpt_tensor_at(ck, i)->name, order[i]));
    {
        int64_t s23[] = {2, 3}, s32[] = {3, 2}, s4[] = {4}, s22[] = {2, 2}, s04[] = {0, 4}, s1[] = {1}, s3[] = {3};
        float aw[6] = {S0[2], S0[3], S0[4], S0[5], S0[6], S0[7]};
        check_tensor(ck, "a.weight", 2, s23, aw, 6);
        float at[6] = {S0[0], S0[3], S0[1], S0[4], S0[2], S0[5]};
        check_tensor(ck, "a.t", 2, s32, at, 6);
        float b16[4] = {1.0f, -3.0f, INFINITY, bf(0x0001)};
        check_tensor(ck, "b.bf16", 1, s4, b16, 4);
        float f64[4] = {(float)0.1, -2.5f, INFINITY, 3.0f};
        check_tensor(ck, "c.f64", 2, s22, f64, 4);
        float sc[1] = {0x1p-24f};
        check_tensor(ck, "d.scalar", 0, NULL, sc, 1);
        check_tensor(ck, "e.empty", 2, s04, NULL, 0);
        float bc[6] = {S0[4], S0[5], S0[6], S0[4], S0[5], S0[6]};
        check_tensor(ck, "f.bcast", 2, s23, bc, 6);
        float v3[4] = {2.0f, -3.0f, (float)half_ref(0x3555), 65504.0f};
        check_tensor(ck, "g.v3", 2, s22, v3, 4);
        float hp[1] = {1.0f};
        check_tensor(ck, "h.param", 1, s1, hp, 1);
        float f16[3] = {1.0f, 0x1p-24f, -INFINITY};
        check_tensor(ck, "i.f16", 1, s3, f16, 3);
        CHECK(dmx__ckpt_find(ck, "e.empty")->data != NULL);
    }
    /* kwargs of every kind */
    double d;
    int64_t i;
    int bl;
    const char *s;
    CHECK(dmx__ckpt_kw_num(ck, "segment", &d) == DMX_OK && d == 7.8);
    CHECK(dmx__ckpt_kw_num(ck, "segment2", &d) == DMX_OK && d == -7.8);
    CHECK(dmx__ckpt_kw_num(ck, "badfrac", &d) == DMX_ERR_MODEL && has(dmx_last_error(), "fractions.Fraction"));
    const char *src[4];
    size_t n;
    CHECK(dmx__ckpt_kw_strlist(ck, "sources", src, 4, &n) == DMX_OK && n == 4 && !strcmp(src[2], "other") &&
          !strcmp(src[3], "vocals"));
    CHECK(dmx__ckpt_kw_int(ck, "channels", &i) == DMX_OK && i == 48);
    CHECK(dmx__ckpt_kw_int(ck, "neg", &i) == DMX_OK && i == -5);
    CHECK(dmx__ckpt_kw_int(ck, "big", &i) == DMX_OK && i == (int64_t)1 << 62);
    CHECK(dmx__ckpt_kw_int(ck, "negbig", &i) == DMX_OK && i == -7);
    CHECK(dmx__ckpt_kw_int(ck, "huge", &i) == DMX_ERR_MODEL && has(dmx_last_error(), "big int"));
    CHECK(dmx__ckpt_kw_int(ck, "long4", &i) == DMX_OK && i == 0x0102);
    CHECK(dmx__ckpt_kw_num(ck, "ftext", &d) == DMX_OK && d == 2.5);
    CHECK(dmx__ckpt_kw_int(ck, "itext", &i) == DMX_OK && i == 123);
    CHECK(dmx__ckpt_kw_bool(ck, "btext", &bl) == DMX_OK && bl == 1);
    CHECK(dmx__ckpt_kw_int(ck, "ltext", &i) == DMX_OK && i == -77);
    CHECK(dmx__ckpt_kw_int(ck, "bigtext", &i) == DMX_ERR_MODEL);
    CHECK(dmx__ckpt_kw_bool(ck, "flag", &bl) == DMX_OK && bl == 1);
    CHECK(dmx__ckpt_kw_bool(ck, "off", &bl) == DMX_OK && bl == 0);
    CHECK(dmx__ckpt_kw_int(ck, "flag", &i) == DMX_OK && i == 1);
    CHECK(dmx__ckpt_kw_num(ck, "flag", &d) == DMX_OK && d == 1.0);
    CHECK(dmx__ckpt_kw_bool(ck, "channels", &bl) == DMX_OK && bl == 1);
    CHECK(dmx__ckpt_kw_bool(ck, "rate", &bl) == DMX_ERR_MODEL);
    CHECK(dmx__ckpt_kw_is_none(ck, "nothing") && dmx__ckpt_kw_has(ck, "nothing"));
    CHECK(dmx__ckpt_kw_num(ck, "nothing", &d) == DMX_ERR_MODEL && has(dmx_last_error(), "nothing") &&
          has(dmx_last_error(), "None"));
    CHECK(dmx__ckpt_kw_num(ck, "rate", &d) == DMX_OK && d == 0.25);
    CHECK(dmx__ckpt_kw_int(ck, "rate", &i) == DMX_ERR_MODEL);
    double v[4];
    CHECK(dmx__ckpt_kw_numlist(ck, "freqs", v, 4, &n) == DMX_OK && n == 0);
    CHECK(dmx__ckpt_kw_numlist(ck, "scale", v, 4, &n) == DMX_OK && n == 3 && v[0] == 5000.0 && v[1] == 1.0 &&
          v[2] == 0.5);
    CHECK(dmx__ckpt_kw_numlist(ck, "scale", v, 1, &n) == DMX_OK && n == 3);
    CHECK(dmx__ckpt_kw_numlist(ck, "mixed", v, 4, &n) == DMX_ERR_MODEL && has(dmx_last_error(), "mixed"));
    CHECK(dmx__ckpt_kw_strlist(ck, "mixed", src, 4, &n) == DMX_ERR_MODEL);
    CHECK(dmx__ckpt_kw_str(ck, "name8", &s) == DMX_OK && !strcmp(s, "abc"));
    CHECK(dmx__ckpt_kw_str(ck, "blob", &s) == DMX_ERR_MODEL && has(dmx_last_error(), "bytes"));
    CHECK(dmx__ckpt_kw_strlist(ck, "rate", src, 4, &n) == DMX_ERR_MODEL);
    dmx__ckpt_free(ck);

    /* content errors */
    struct {
        unsigned flags;
        dmx_status st;
        const char *phrase;
    } bad[] = {
        {SY_QUANTIZED, DMX_ERR_UNSUPPORTED, "quantized checkpoints are not supported"},
        {SY_INT_STATE, DMX_ERR_UNSUPPORTED, "quantized checkpoints are not supported"},
        {SY_V3_MISMATCH, DMX_ERR_UNSUPPORTED, "quantized checkpoints are not supported"},
        {SY_ARGS, DMX_ERR_UNSUPPORTED, "positional constructor 'args' are not supported (1 given)"},
        {SY_NO_KLASS, DMX_ERR_UNSUPPORTED, "no 'klass' entry"},
        {SY_TOP_LIST, DMX_ERR_UNSUPPORTED, "top-level object is a list"},
        {SY_DUP, DMX_ERR_CORRUPT, "state tensor 'a.t' appears twice"},
        {SY_NOT_TENSOR, DMX_ERR_CORRUPT, "state entry 'k.notatensor' is a int, not a tensor"},
        {SY_OOB, DMX_ERR_CORRUPT, "state tensor 'j.oob' (storage offset 3) reads element 8 of a storage of 8"},
        {SY_MISSING_KEY, DMX_ERR_CORRUPT, "storage entry 'synth/data/99' of state tensor 'i.f16' is missing"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        size_t bl2;
        unsigned char *zb = build_synth(bad[k].flags, &bl2, NULL);
        EXPECT_LOAD(zb, bl2, bad[k].st, bad[k].phrase);
        free(zb);
    }

    /* every truncation of the pickle, and random mutations: any status but a
     * crash (ASan/UBSan builds check memory safety) */
    size_t ok = 0;
    for (size_t cut = 0; cut < pk.n; cut++) {
        dmx__pickle *p = NULL;
        dmx_status st = dmx__pickle_run(pk.p, cut, "cut", &p);
        CHECK_MSG(st == DMX_ERR_CORRUPT || st == DMX_ERR_UNSUPPORTED, "cut %zu: %s", cut, dmx_status_name(st));
        dmx__pickle_free(p);
    }
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    unsigned char *mut = malloc(pk.n);
    REQUIRE(mut);
    for (int it = 0; it < 20000; it++) {
        memcpy(mut, pk.p, pk.n);
        int flips = 1 + it % 4;
        for (int k = 0; k < flips; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % pk.n;
            mut[at] = (unsigned char)(rng >> 13);
        }
        dmx__pickle *p = NULL;
        if (dmx__pickle_run(mut, pk.n, "mut", &p) == DMX_OK) ok++;
        dmx__pickle_free(p);
        if (it % 50 == 0) { /* through the whole loader too */
            zw_in in[] = {{"m/data.pkl", mut, pk.n}, {"m/data/0", S0, sizeof S0}, {"m/data/1", S1, sizeof S1},
                          {"m/data/2", S2, sizeof S2},  {"m/data/3", S3, sizeof S3}, {"m/data/4", S4, sizeof S4}};
            size_t ml;
            unsigned char *mz = zw_build(in, 6, &TORCH_LIKE, &ml);
            dmx__ckpt *mc = NULL;
            dmx__ckpt_load_mem(mz, ml, "mut.th", &mc);
            dmx__ckpt_free(mc);
            free(mz);
        }
    }
    printf("  pickle mutations: %zu of 20000 still ran to STOP\n", ok);
    free(mut);

    /* every byte of the archive flipped: the loader must notice all but the
     * bytes nothing depends on (made-by/attribute fields, torch's padding) */
    unsigned char *c = malloc(len);
    REQUIRE(c);
    size_t undetected = 0;
    const size_t eocd = len - 22, cd = rd32(z + eocd + 16), z64 = eocd - 20 - 56;
    for (size_t at = 0; at < len; at++) {
        int ignorable = 0;
        /* central entries: made-by and attributes; ZIP64 record versions */
        if (at >= cd && at < z64) {
            size_t p = cd;
            while (p < z64) {
                size_t rec = 46 + rd16(z + p + 28) + rd16(z + p + 30) + rd16(z + p + 32);
                if (at < p + rec) {
                    size_t rel = at - p;
                    ignorable = rel == 4 || rel == 5 || (rel >= 36 && rel <= 41);
                    break;
                }
                p += rec;
            }
        }
        if (at >= z64 + 12 && at < z64 + 16) ignorable = 1;
        /* local headers: the id of torch's padding extra field and the
         * padding itself (its size field is checked) */
        for (size_t p = cd; p < z64; p += 46 + rd16(z + p + 28) + rd16(z + p + 30) + rd16(z + p + 32)) {
            size_t lh = rd32(z + p + 42);
            size_t extra_at = lh + 30 + rd16(z + lh + 26), extra_end = extra_at + rd16(z + lh + 28);
            if (at >= extra_at && at < extra_end && at != extra_at + 2 && at != extra_at + 3) ignorable = 1;
        }
        memcpy(c, z, len);
        c[at] ^= 0xff;
        dmx__ckpt *x = NULL;
        dmx_status st = dmx__ckpt_load_mem(c, len, "synth.th", &x);
        if (st == DMX_OK) {
            dmx__ckpt_free(x);
            if (!ignorable) {
                undetected++;
                fprintf(stderr, "  synth flip at %zu not detected\n", at);
            }
        } else {
            CHECK_MSG(st == DMX_ERR_CORRUPT || st == DMX_ERR_UNSUPPORTED, "flip at %zu: %s", at, dmx_status_name(st));
        }
    }
    CHECK_MSG(undetected == 0, "%zu of %zu flips undetected", undetected, len);
    free(c);
    free(pk.p);
    free(z);
}

/* ---- 5. hostile pickles --------------------------------------------------------- */

static void expect_pickle(const void *p, size_t n, dmx_status want, const char *phrase, int line) {
    dmx__pickle *pk = (dmx__pickle *)1;
    dmx_status s = dmx__pickle_run(p, n, "evil.pkl", &pk);
    if (s != want || (phrase && !has(dmx_last_error(), phrase))) {
        fprintf(stderr, "line %d: got %s '%s', want %s with '%s'\n", line, dmx_status_name(s), dmx_last_error(),
                dmx_status_name(want), phrase ? phrase : "");
        dmx_test_failures++;
    }
    if (s == DMX_OK) dmx__pickle_free(pk);
    else CHECK(pk == NULL);
}
#define EXPECT_PICKLE(lit, want, phrase) expect_pickle(lit, sizeof(lit) - 1, want, phrase, __LINE__)

/* DiffQ states (zoo fixtures): the supported forms load as quantized
 * checkpoints awaiting names; every other quantizer or packing is refused
 * by name. The edits patch the fixture's pickle and rebuild the archive. */
static unsigned char *find_bytes(const unsigned char *hay, size_t n, const char *needle, size_t nl) {
    for (size_t i = 0; i + nl <= n; i++)
        if (!memcmp(hay + i, needle, nl)) return (unsigned char *)hay + i;
    return NULL;
}

static void test_diffq(void) {
    static const char *const files[] = {"zoo/models/mdx_q_demucs_tiny.th", "zoo/models/mdx_extra_q_hdemucs_tiny.th"};
    for (int fi = 0; fi < 2; fi++) {
        size_t len;
        unsigned char *f = read_file(golden_path(files[fi]), &len);
        REQUIRE(f);
        const char *seed_dir = getenv("DEMIX_FUZZ_SEED_DIR");
        if (fi == 0 && seed_dir && *seed_dir) { /* seed for tests/fuzz/fuzz_ckpt.c */
            char sp[4096];
            snprintf(sp, sizeof sp, "%s/diffq.th", seed_dir);
            CHECK(write_file(sp, f, len) == 0);
        }
        dmx__ckpt *ck = EXPECT_LOAD(f, len, DMX_OK, NULL);
        CHECK(ck && dmx__ckpt_is_quantized(ck) && dmx__ckpt_n_tensors(ck) == 0);
        CHECK(ck && !strcmp(dmx__ckpt_klass(ck), "demucs.demucs.Demucs") == (fi == 0));
        dmx__ckpt_free(ck);
        static tz_entry es[4096];
        size_t ne = tz_list(f, len, es, 4096);
        const tz_entry *pe = tz_find(es, ne, "archive/data.pkl");
        REQUIRE(pe);
        unsigned char *pk = malloc(pe->size + 64);
        REQUIRE(pk);
        rebuild_edit rp = {.replace = "archive/data.pkl", .with = pk, .with_len = pe->size};
        size_t rl;
        unsigned char *r;
        /* another quantizer class: GLOBAL lines replaced (lengths may differ) */
        {
            const char *old = "diffq.diffq\nDiffQuantizer\n", *rep = "diffq.uniform\nUniformQuantizer\n";
            unsigned char *at = find_bytes(pe->data, pe->size, old, strlen(old));
            REQUIRE(at);
            size_t pre = (size_t)(at - pe->data), ol = strlen(old), nl = strlen(rep);
            memcpy(pk, pe->data, pre);
            memcpy(pk + pre, rep, nl);
            memcpy(pk + pre + nl, at + ol, pe->size - pre - ol);
            rp.with_len = pe->size - ol + nl;
            r = rebuild(f, len, &rp, NULL, &rl);
            EXPECT_LOAD(r, rl, DMX_ERR_UNSUPPORTED,
                        "quantizer diffq.uniform.UniformQuantizer is not supported (only diffq.diffq.DiffQuantizer");
            free(r);
            rp.with_len = pe->size;
        }
        /* meta flags: packed=False; torch_pack=True (newer meta only) */
        struct {
            const char *key;
            unsigned char from, to;
            const char *phrase;
        } flags[] = {
            {"\x06\x00\x00\x00packed", 0x88, 0x89, "DiffQ state with packed=False is not supported"},
            {"\x0a\x00\x00\x00torch_pack", 0x89, 0x88, "DiffQ state packed with torch_pack=True is not supported"},
        };
        for (int k = 0; k < 2; k++) {
            memcpy(pk, pe->data, pe->size);
            unsigned char *at = find_bytes(pk, pe->size, flags[k].key, strlen(flags[k].key + 4) + 4);
            if (!at) {
                CHECK(fi == 0 && k == 1); /* diffq <= 0.2.1 wrote no torch_pack */
                continue;
            }
            /* the value follows the key and its BINPUT memo (r + 4 bytes) */
            unsigned char *v = at + 4 + strlen(flags[k].key + 4);
            REQUIRE(v[0] == 'r' && v[5] == flags[k].from);
            v[5] = flags[k].to;
            r = rebuild(f, len, &rp, NULL, &rl);
            EXPECT_LOAD(r, rl, DMX_ERR_UNSUPPORTED, flags[k].phrase);
            free(r);
        }
        /* damaged packed data (archives rebuilt, so the CRCs hold): any status
         * from the network build, never a crash (ASan/UBSan builds) */
        if (fi == 0) {
            unsigned seed = 7;
            int built = 0;
            for (int it = 0; it < 40; it++) {
                seed = seed * 1103515245u + 12345u;
                const tz_entry *e = &es[seed % ne];
                if (strncmp(e->name, "archive/data/", 13) || !e->size) continue;
                unsigned char *copy = malloc(e->size);
                REQUIRE(copy);
                memcpy(copy, e->data, e->size);
                for (int k = 0; k < 4; k++) {
                    seed = seed * 1103515245u + 12345u;
                    copy[(seed >> 4) % e->size] ^= (unsigned char)(1u << (seed % 8));
                }
                rebuild_edit de = {.replace = e->name, .with = copy, .with_len = e->size};
                r = rebuild(f, len, &de, NULL, &rl);
                dmx__ckpt *dc = NULL;
                if (dmx__ckpt_load_mem(r, rl, "damaged", &dc) == DMX_OK) {
                    dmx__net *n = NULL;
                    if (dmx__net_build(dc, &n) == DMX_OK) {
                        built++;
                        dmx__net_free(n);
                    }
                }
                free(r);
                free(copy);
            }
            printf("  damaged DiffQ data: %d of the rebuilt archives still built\n", built);
        }
        free(pk);
        free(f);
    }
}

static void test_hostile(void) {
    EXPECT_PICKLE("", DMX_ERR_CORRUPT, "pickle ended without STOP");
    EXPECT_PICKLE("\x80\x02}", DMX_ERR_CORRUPT, "pickle ended without STOP");
    EXPECT_PICKLE(".", DMX_ERR_CORRUPT, "stack underflow at pickle offset 0");
    EXPECT_PICKLE("\x80\x06N.", DMX_ERR_UNSUPPORTED, "pickle protocol 6");
    EXPECT_PICKLE("N\xff.", DMX_ERR_UNSUPPORTED, "unknown opcode 0xff at pickle offset 1");
    EXPECT_PICKLE("Nt.", DMX_ERR_CORRUPT, "MARK not found");
    EXPECT_PICKLE("]a.", DMX_ERR_CORRUPT, "stack underflow");
    EXPECT_PICKLE("(]Na.", DMX_OK, NULL);
    EXPECT_PICKLE("(Na.", DMX_ERR_CORRUPT, "stack underflow"); /* the list is below the MARK */
    EXPECT_PICKLE("NNa.", DMX_ERR_CORRUPT, "cannot append to a None");
    EXPECT_PICKLE("K\x01K\x02s.", DMX_ERR_CORRUPT, "stack underflow");
    EXPECT_PICKLE("NK\x01K\x02s.", DMX_ERR_CORRUPT, "cannot set an item on a None");
    EXPECT_PICKLE("}(K\x01u.", DMX_ERR_CORRUPT, "SETITEMS with an odd number of items");
    EXPECT_PICKLE("h\x05.", DMX_ERR_CORRUPT, "memo key 5 not found");
    EXPECT_PICKLE("Nr\xff\xff\xff\x7f.", DMX_ERR_CORRUPT, "memo index 2147483647 out of range");
    EXPECT_PICKLE("q\x00.", DMX_ERR_CORRUPT, "stack underflow");
    EXPECT_PICKLE("X\xff\xff\xff\x0f", DMX_ERR_CORRUPT, "truncated");
    EXPECT_PICKLE("X\xff\xff\xff\xff", DMX_ERR_CORRUPT, "exceeds the limit");
    EXPECT_PICKLE("\x8d\xff\xff\xff\xff\xff\xff\xff\xff", DMX_ERR_CORRUPT, "exceeds the limit");
    EXPECT_PICKLE("T\xff\xff\xff\xff", DMX_ERR_CORRUPT, "negative length");
    EXPECT_PICKLE("\x8b\xff\xff\xff\xff", DMX_ERR_CORRUPT, "negative length");
    EXPECT_PICKLE("\x95\xff\xff\xff\xff\xff\xff\xff\xffN.", DMX_ERR_CORRUPT, "FRAME length");
    EXPECT_PICKLE("cfoo", DMX_ERR_CORRUPT, "unterminated text argument");
    EXPECT_PICKLE("Iabc\n.", DMX_ERR_CORRUPT, "malformed integer");
    EXPECT_PICKLE("F1.5x\n.", DMX_ERR_CORRUPT, "malformed float");
    EXPECT_PICKLE("K\x01K\x02\x93.", DMX_ERR_CORRUPT, "STACK_GLOBAL operands are not strings");
    EXPECT_PICKLE("N\x85Q.", DMX_ERR_UNSUPPORTED, "persistent id");
    EXPECT_PICKLE("X\x03\x00\x00\x00" "abc\x85Q.", DMX_ERR_UNSUPPORTED, "persistent id of kind 'abc'");
    EXPECT_PICKLE("(X\x07\x00\x00\x00storageNNNNtQ.", DMX_ERR_CORRUPT, "storage type is a None");
    EXPECT_PICKLE("ctorch._utils\n_rebuild_tensor_v2\n(NK\x00)))tR.", DMX_ERR_CORRUPT, "expected a storage");
    EXPECT_PICKLE("cfoo\nBar\nN\x81.", DMX_ERR_CORRUPT, "NEWOBJ arguments");
    EXPECT_PICKLE("(((((.", DMX_ERR_CORRUPT, "stack underflow");
    EXPECT_PICKLE("0", DMX_ERR_CORRUPT, "MARK not found");
    EXPECT_PICKLE("(1(0N.", DMX_OK, NULL);
    /* a list that contains itself, a dict keyed by itself: fine, no recursion */
    EXPECT_PICKLE("]q\x01h\x01" "a}q\x02h\x02h\x02s\x86.", DMX_OK, NULL);

    /* resource bounds: deep MARK nesting, a huge stack, many values */
    size_t n = 70000;
    unsigned char *p = malloc(2 * (size_t)DMX__PK_MAX_VALUES + 64 + (2u << 20));
    REQUIRE(p);
    memset(p, '(', n);
    p[n] = '.';
    expect_pickle(p, n + 1, DMX_ERR_CORRUPT, "too many nested MARKs", __LINE__);
    n = (1u << 20) + 10;
    memset(p, 'N', n);
    p[n] = '.';
    expect_pickle(p, n + 1, DMX_ERR_CORRUPT, "stack too deep", __LINE__);
    /* values that never stay on the stack still count */
    n = 0;
    while (n < 2 * ((size_t)DMX__PK_MAX_VALUES + 10)) {
        p[n++] = ']';
        p[n++] = '0';
    }
    p[n++] = '.';
    expect_pickle(p, n, DMX_ERR_CORRUPT, "too many values", __LINE__);
    free(p);
}

/* An archive past zip.c's CRC_SPLIT (16 MB) has its CRCs computed in two
 * shares, the second on a thread: a byte flipped in an entry of either
 * share is found, and with one flipped in each the entry named is the
 * first in the archive's order, as when one thread checked them all. */
static void test_crc_shares(void) {
    size_t len;
    unsigned char *f = read_file(golden_path("models/htdemucs_6s_random.th"), &len);
    REQUIRE(f && len >= ((size_t)32 << 20));
    dmx__zip z;
    REQUIRE(dmx__zip_open(&z, f, len, "full") == DMX_OK);
    /* the entries holding the bytes at a quarter and at three quarters */
    const dmx__zip_entry *ea = NULL, *eb = NULL;
    for (size_t i = 0; i < z.n; i++) {
        const dmx__zip_entry *e = &z.entries[i];
        if (e->data_off <= len / 4 && len / 4 < e->data_off + e->size) ea = e;
        if (e->data_off <= len / 4 * 3 && len / 4 * 3 < e->data_off + e->size) eb = e;
    }
    REQUIRE(ea && eb && ea != eb && ea->data_off < eb->data_off);
    char *na = strdup(ea->name), *nb = strdup(eb->name);
    REQUIRE(na && nb);
    dmx__zip_close(&z);
    const size_t at[3][2] = {{len / 4, 0}, {len / 4 * 3, 0}, {len / 4 * 3, len / 4}};
    const char *want[3] = {na, nb, na};
    for (int k = 0; k < 3; k++) {
        f[at[k][0]] ^= 0x5a;
        if (at[k][1]) f[at[k][1]] ^= 0x5a;
        dmx_status s = dmx__zip_open(&z, f, len, "full");
        CHECK_MSG(s == DMX_ERR_CORRUPT && has(dmx_last_error(), "CRC-32 mismatch") &&
                      has(dmx_last_error(), want[k]),
                  "flip %d: %s '%s' (want entry '%s')", k, dmx_status_name(s), dmx_last_error(),
                  want[k]);
        dmx__zip_close(&z);
        f[at[k][0]] ^= 0x5a;
        if (at[k][1]) f[at[k][1]] ^= 0x5a;
    }
    CHECK(dmx__zip_open(&z, f, len, "full") == DMX_OK);
    dmx__zip_close(&z);
    free(na), free(nb), free(f);
}

int main(void) {
    printf("fixtures:\n");
    test_fixture("models/tiny4s.th", "models/tiny4s.txt", 4, 8, 96, 1);
    test_fixture("models/tinybag_a.th", "models/tiny4s.txt", 4, 8, 96, 1);
    test_fixture("models/tinybag_b.th", "models/tiny4s.txt", 4, 8, 96, 0);
    test_fixture("models/tiny6s.th", "models/tiny6s.txt", 6, 8, 0, 1);
    test_fixture("models/htdemucs_6s_random.th", "models/htdemucs_6s_random.txt", 6, 48, 0, 0);
    test_f16();
    test_damage();
    test_crc_shares();
    test_synth();
    test_hostile();
    test_diffq();
    return dmx_test_done("test_ckpt");
}
