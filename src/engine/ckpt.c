/*
 * ckpt.c - upstream Demucs checkpoint (.th) loader (see ckpt.h).
 *
 * Pipeline: map the file -> validate the zip (zip.c, CRCs included) -> run
 * data.pkl on the pickle VM (pickle.c) -> check the {klass, args, kwargs,
 * state} layout -> copy every state tensor into a contiguous fp32 array,
 * honouring storage offset and strides -> unmap. The pickle arena is kept
 * because the kwargs accessors hand out pointers into it; the file itself is
 * released before returning.
 */
#include "ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __F16C__
#include <immintrin.h>
#endif

#include "error.h"
#include "pickle.h"
#include "zip.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ckpt.c reads little-endian tensor data in place; big-endian hosts are not supported"
#endif

struct dmx__ckpt {
    char *klass;
    dmx__tensor *tensors;
    size_t n;
    size_t *index; /* open addressing over tensors by name; SIZE_MAX = empty */
    size_t index_cap;
    dmx__pickle *pk;       /* owns the kwargs values */
    const dmx__pv *kwargs; /* DICT */
    struct dq_state *dq;   /* a DiffQ state awaiting names (dmx__ckpt_dequantize), or NULL */
};

static void dq_free(struct dq_state *q);

/* ---- fp16 / bf16 widening --------------------------------------------------- */

float dmx__f16_to_f32_scalar(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in fp32 */
        float f = (float)man * 0x1p-24f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (exp == 31) {
        /* inf keeps its sign; NaN keeps its payload and is quieted, as F16C's
         * vcvtph2ps (and PyTorch) do, so both paths give the same bits. */
        bits = sign | 0x7f800000u | (man << 13) | (man ? 0x00400000u : 0);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void dmx__f16_to_f32(const void *src, float *dst, size_t n) {
    const unsigned char *s = src;
    size_t i = 0;
#ifdef __F16C__
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 2 * i + 16));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(a));
        _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(b));
    }
#endif
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = dmx__f16_to_f32_scalar(h);
    }
}

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* ---- dtypes ------------------------------------------------------------------- */

typedef enum { DT_F16, DT_BF16, DT_F32, DT_F64 } dtype;
static const size_t dt_size[] = {2, 2, 4, 8};
static const char *const dt_name[] = {"float16", "bfloat16", "float32", "float64"};

enum { KIND_FLOAT, KIND_INTEGER, KIND_UNKNOWN, KIND_UNTYPED };

static int storage_kind(const char *type, dtype *dt) {
    static const struct {
        const char *name;
        dtype dt;
    } fl[] = {
        {"torch.HalfStorage", DT_F16},
        {"torch.BFloat16Storage", DT_BF16},
        {"torch.FloatStorage", DT_F32},
        {"torch.DoubleStorage", DT_F64},
    };
    static const char *const ints[] = {
        "torch.LongStorage",     "torch.IntStorage",      "torch.ShortStorage",
        "torch.CharStorage",     "torch.ByteStorage",     "torch.BoolStorage",
        "torch.QInt8Storage",    "torch.QUInt8Storage",   "torch.QInt32Storage",
        "torch.QUInt4x2Storage", "torch.QUInt2x4Storage",
    };
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        if (!strcmp(type, fl[i].name)) {
            *dt = fl[i].dt;
            return KIND_FLOAT;
        }
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (!strcmp(type, ints[i])) return KIND_INTEGER;
    if (!strcmp(type, "torch.UntypedStorage")) return KIND_UNTYPED;
    return KIND_UNKNOWN;
}

static int dtype_kind(const char *name, dtype *dt) {
    static const struct {
        const char *name;
        dtype dt;
    } fl[] = {
        {"torch.float16", DT_F16}, {"torch.half", DT_F16},  {"torch.bfloat16", DT_BF16},
        {"torch.float32", DT_F32}, {"torch.float", DT_F32}, {"torch.float64", DT_F64},
        {"torch.double", DT_F64},
    };
    static const char *const ints[] = {
        "torch.int8",   "torch.uint8",  "torch.int16",    "torch.short",    "torch.int32",
        "torch.int",    "torch.int64",  "torch.long",     "torch.bool",     "torch.qint8",
        "torch.quint8", "torch.qint32", "torch.quint4x2", "torch.quint2x4", "torch.uint16",
        "torch.uint32", "torch.uint64",
    };
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        if (!strcmp(name, fl[i].name)) {
            *dt = fl[i].dt;
            return KIND_FLOAT;
        }
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (!strcmp(name, ints[i])) return KIND_INTEGER;
    return KIND_UNKNOWN;
}

#define QUANT_MSG "quantized checkpoints are not supported"

/* ---- conversion --------------------------------------------------------------- */

static void convert_run(const unsigned char *src, float *dst, size_t n, dtype dt) {
    switch (dt) {
        case DT_F16: dmx__f16_to_f32(src, dst, n); break;
        case DT_BF16:
            for (size_t i = 0; i < n; i++) {
                uint16_t h;
                memcpy(&h, src + 2 * i, 2);
                dst[i] = bf16_to_f32(h);
            }
            break;
        case DT_F32: memcpy(dst, src, n * 4); break;
        case DT_F64:
            for (size_t i = 0; i < n; i++) {
                double d;
                memcpy(&d, src + 8 * i, 8);
                dst[i] = (float)d;
            }
            break;
    }
}

static float convert_one(const unsigned char *src, dtype dt) {
    float f;
    convert_run(src, &f, 1, dt);
    return f;
}

/* malloc for tensor data (callers free() stolen arrays). Faulting in the fp32
 * copy of the weights page by page is most of the load time; for big arrays
 * ask the kernel to populate the pages in one call (Linux >= 5.14; on older
 * kernels the madvise fails harmlessly and pages fault in as usual). 4 KiB
 * pages, as the arenas' (arena.c says why). */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
static float *alloc_floats(size_t n) {
    size_t bytes = (n ? n : 1) * sizeof(float);
    const size_t page = 4096;
    /* 64-byte aligned: a vector's loads never straddle cache lines */
    void *q = NULL;
    float *p = posix_memalign(&q, 64, bytes) == 0 ? q : NULL;
    if (p && bytes >= 64 * page) {
        uintptr_t a = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
        uintptr_t b = ((uintptr_t)p + bytes) & ~(uintptr_t)(page - 1);
        if (b > a) (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);
    }
    return p;
}

/* Copies a strided view (validated by the caller) into dst in C order. */
static void gather(const unsigned char *base, dtype dt, const dmx__pv_tensor *t, float *dst) {
    size_t es = dt_size[dt];
    int nd = t->ndim;
    if (nd == 0) {
        dst[0] = convert_one(base + (size_t)t->offset * es, dt);
        return;
    }
    int64_t idx[8] = {0};
    size_t last = (size_t)t->size[nd - 1];
    size_t lstride = (size_t)t->stride[nd - 1];
    for (;;) {
        size_t off = (size_t)t->offset;
        for (int d = 0; d < nd - 1; d++) off += (size_t)idx[d] * (size_t)t->stride[d];
        for (size_t j = 0; j < last; j++) *dst++ = convert_one(base + (off + j * lstride) * es, dt);
        int d = nd - 2;
        while (d >= 0 && ++idx[d] == t->size[d]) idx[d--] = 0;
        if (d < 0) return;
    }
}

/* ---- name index --------------------------------------------------------------- */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Builds the index; returns the index of a duplicate name, or SIZE_MAX. */
static size_t build_index(dmx__ckpt *ck, int *oom) {
    size_t cap = 16;
    while (cap < 2 * ck->n) cap *= 2;
    ck->index = malloc(cap * sizeof *ck->index);
    if (!ck->index) {
        *oom = 1;
        return SIZE_MAX;
    }
    ck->index_cap = cap;
    memset(ck->index, 0xff, cap * sizeof *ck->index);
    for (size_t i = 0; i < ck->n; i++) {
        size_t h = (size_t)hash_str(ck->tensors[i].name) & (cap - 1);
        while (ck->index[h] != SIZE_MAX) {
            if (!strcmp(ck->tensors[ck->index[h]].name, ck->tensors[i].name)) return i;
            h = (h + 1) & (cap - 1);
        }
        ck->index[h] = i;
    }
    return SIZE_MAX;
}

static dmx__tensor *find_tensor(const dmx__ckpt *ck, const char *name) {
    if (!ck || !ck->index || !name) return NULL;
    size_t h = (size_t)hash_str(name) & (ck->index_cap - 1);
    while (ck->index[h] != SIZE_MAX) {
        dmx__tensor *t = &ck->tensors[ck->index[h]];
        if (!strcmp(t->name, name)) return t;
        h = (h + 1) & (ck->index_cap - 1);
    }
    return NULL;
}

/* ---- loading ---------------------------------------------------------------- */

void dmx__ckpt_free(dmx__ckpt *ck) {
    if (!ck) return;
    for (size_t i = 0; i < ck->n; i++) {
        free(ck->tensors[i].name);
        free(ck->tensors[i].data);
    }
    free(ck->tensors);
    free(ck->index);
    free(ck->klass);
    dq_free(ck->dq);
    dmx__pickle_free(ck->pk);
    free(ck);
}

typedef struct loader {
    const char *what; /* file name for messages */
    dmx__zip zip;
    const char *prefix; /* "<prefix>/" without the slash, NUL-terminated copy */
    size_t prefix_len;
    uint64_t total_elems, max_elems;
    const unsigned char *map; /* the file's read-only mapping, or NULL (see load_tensor) */
    size_t map_len;
} loader;

/* madvise(ADVICE) on the pages of [lo, hi) that lie in the file's mapping:
 * POPULATE_READ on the pages it touches, DONTNEED only on pages entirely
 * inside it (a neighbour may still need the edges). No-op for buffers that
 * are not the mapping. */
static void map_pages(const loader *L, const unsigned char *lo, const unsigned char *hi,
                      int advice) {
    if (!L->map || lo < L->map || hi > L->map + L->map_len || hi <= lo) return;
    const uintptr_t page = 4096;
    uintptr_t a = (uintptr_t)lo, b = (uintptr_t)hi;
    if (advice == MADV_DONTNEED) {
        a = (a + page - 1) & ~(page - 1);
        b &= ~(page - 1);
    } else {
        a &= ~(page - 1);
        b = (b + page - 1) & ~(page - 1);
        if (b > (uintptr_t)(L->map + L->map_len)) b = (uintptr_t)(L->map + L->map_len);
    }
    if (b > a) (void)madvise((void *)a, b - a, advice);
}

static dmx_status find_prefix(loader *L, char **prefix) {
    static const char suffix[] = "/data.pkl";
    const size_t sl = sizeof suffix - 1;
    const dmx__zip_entry *found = NULL;
    for (size_t i = 0; i < L->zip.n; i++) {
        const char *nm = L->zip.entries[i].name;
        size_t nl = strlen(nm);
        if (nl <= sl || strcmp(nm + nl - sl, suffix) != 0) continue;
        if (memchr(nm, '/', nl - sl)) continue; /* only a single top-level prefix */
        if (found)
            return dmx__fail(DMX_ERR_CORRUPT,
                             "%s: several pickles ('%s', '%s'): not a single torch.save archive",
                             L->what, found->name, nm);
        found = &L->zip.entries[i];
    }
    if (!found)
        return dmx__fail(DMX_ERR_CORRUPT,
                         "%s: no '<prefix>/data.pkl' entry: not a torch.save archive", L->what);
    size_t pl = strlen(found->name) - sl;
    *prefix = malloc(pl + 1);
    if (!*prefix) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
    memcpy(*prefix, found->name, pl);
    (*prefix)[pl] = '\0';
    return DMX_OK;
}

static const dmx__zip_entry *find_entry(loader *L, const char *rest) {
    size_t rl = strlen(rest);
    char stackbuf[256];
    char *nm =
        L->prefix_len + rl + 2 <= sizeof stackbuf ? stackbuf : malloc(L->prefix_len + rl + 2);
    if (!nm) return NULL;
    memcpy(nm, L->prefix, L->prefix_len);
    nm[L->prefix_len] = '/';
    memcpy(nm + L->prefix_len + 1, rest, rl + 1);
    const dmx__zip_entry *e = dmx__zip_find(&L->zip, nm);
    if (nm != stackbuf) free(nm);
    return e;
}

/* Converts one state entry into ck->tensors[i]. */
static dmx_status load_tensor(loader *L, const char *name, const dmx__pv *v, dmx__tensor *out) {
    if (v->type != DMX__PV_TENSOR) {
        if (v->type == DMX__PV_OBJECT && strstr(dmx__pv_type_name(v), "qtensor"))
            return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: " QUANT_MSG " (state entry '%s' is a %s)",
                             L->what, name, dmx__pv_type_name(v));
        return dmx__fail(DMX_ERR_CORRUPT, "%s: state entry '%s' is a %s, not a tensor", L->what,
                         name, dmx__pv_type_name(v));
    }
    const dmx__pv_tensor *t = v->u.tensor;
    const dmx__pv_storage *s = t->storage->u.storage;

    /* dtype: from the storage class, or from _rebuild_tensor_v3's dtype for
     * untyped storages; both present must agree. */
    dtype dt = DT_F32, dt2 = DT_F32;
    int kind = storage_kind(s->type, &dt);
    int untyped = kind == KIND_UNTYPED;
    if (t->dtype) {
        int k2 = dtype_kind(t->dtype, &dt2);
        if (k2 == KIND_INTEGER)
            return dmx__fail(DMX_ERR_UNSUPPORTED,
                             "%s: " QUANT_MSG " (state tensor '%s' has dtype %s)", L->what, name,
                             t->dtype);
        if (k2 != KIND_FLOAT)
            return dmx__fail(DMX_ERR_UNSUPPORTED,
                             "%s: state tensor '%s': dtype %s is not supported", L->what, name,
                             t->dtype);
        if (untyped) {
            kind = KIND_FLOAT;
            dt = dt2;
        } else if (kind == KIND_FLOAT && dt != dt2) {
            return dmx__fail(DMX_ERR_CORRUPT,
                             "%s: state tensor '%s': dtype %s disagrees with its %s", L->what, name,
                             t->dtype, s->type);
        }
    }
    if (kind == KIND_INTEGER)
        return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: " QUANT_MSG " (state tensor '%s' has a %s)",
                         L->what, name, s->type);
    if (kind == KIND_UNTYPED)
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: state tensor '%s': untyped storage without a dtype", L->what, name);
    if (kind != KIND_FLOAT)
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: state tensor '%s': storage type %s is not supported", L->what, name,
                         s->type);
    size_t es = dt_size[dt];

    /* storage entry and its size */
    size_t kl = strlen(s->key);
    char rest[300];
    if (kl > 200)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: state tensor '%s': storage key is too long", L->what,
                         name);
    snprintf(rest, sizeof rest, "data/%s", s->key);
    const dmx__zip_entry *e = find_entry(L, rest);
    if (!e)
        return dmx__fail(DMX_ERR_CORRUPT,
                         "%s: storage entry '%s/data/%s' of state tensor '%s' is missing", L->what,
                         L->prefix, s->key, name);
    uint64_t snumel = (uint64_t)s->numel, sbytes;
    if (untyped) {
        /* an untyped storage counts bytes */
        if (snumel % es)
            return dmx__fail(DMX_ERR_CORRUPT,
                             "%s: storage '%s' of %llu bytes is not a whole number of %s", L->what,
                             e->name, (unsigned long long)snumel, dt_name[dt]);
        sbytes = snumel;
        snumel /= es;
    } else if (__builtin_mul_overflow(snumel, (uint64_t)es, &sbytes)) {
        return dmx__fail(DMX_ERR_CORRUPT, "%s: storage '%s' size overflows", L->what, e->name);
    }
    if (e->size != sbytes)
        return dmx__fail(
            DMX_ERR_CORRUPT,
            "%s: storage entry '%s' has %llu bytes, expected %llu elements x %zu bytes (%s) = %llu",
            L->what, e->name, (unsigned long long)e->size, (unsigned long long)snumel, es,
            dt_name[dt], (unsigned long long)sbytes);

    /* shape, bounds */
    uint64_t numel = 1, maxoff = (uint64_t)t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (__builtin_mul_overflow(numel, (uint64_t)t->size[d], &numel) || numel > (1ull << 40))
            return dmx__fail(DMX_ERR_CORRUPT, "%s: state tensor '%s': shape is too large", L->what,
                             name);
    }
    if (numel > 0) {
        for (int d = 0; d < t->ndim; d++) {
            uint64_t span;
            if (__builtin_mul_overflow((uint64_t)(t->size[d] - 1), (uint64_t)t->stride[d], &span) ||
                __builtin_add_overflow(maxoff, span, &maxoff))
                return dmx__fail(DMX_ERR_CORRUPT, "%s: state tensor '%s': strides overflow",
                                 L->what, name);
        }
        if (maxoff >= snumel)
            return dmx__fail(DMX_ERR_CORRUPT,
                             "%s: state tensor '%s' (storage offset %lld) reads element %llu of a "
                             "storage of %llu "
                             "elements",
                             L->what, name, (long long)t->offset, (unsigned long long)maxoff,
                             (unsigned long long)snumel);
    }
    /* Overlapping views could expand a small file into a huge allocation. */
    L->total_elems += numel;
    if (L->total_elems > L->max_elems)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: state tensors expand to more than %llu elements",
                         L->what, (unsigned long long)L->max_elems);

    out->ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) out->shape[d] = t->size[d];
    out->numel = (size_t)numel;
    out->data = alloc_floats((size_t)numel);
    if (!out->data)
        return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory for state tensor '%s' (%llu elements)",
                         L->what, name, (unsigned long long)numel);
    if (numel == 0) return DMX_OK;

    const unsigned char *base = dmx__zip_data(&L->zip, e);
    int contiguous = 1;
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] != 1 && t->stride[d] != expect) contiguous = 0;
        expect *= t->size[d];
    }
    const unsigned char *lo = base + (size_t)t->offset * es, *hi = base + ((size_t)maxoff + 1) * es;
    map_pages(L, lo, hi, MADV_POPULATE_READ);
    if (contiguous)
        convert_run(lo, out->data, (size_t)numel, dt);
    else
        gather(base, dt, t, out->data);
    /* the converted bytes leave this process's resident set (they stay in
     * the page cache): peak memory is the fp32 weights, not the weights
     * plus the whole file */
    map_pages(L, lo, hi, MADV_DONTNEED);
    return DMX_OK;
}

static dmx_status load_quantized(loader *L, dmx__ckpt *ck, const dmx__pv *state);

static dmx_status load_state(loader *L, dmx__ckpt *ck, const dmx__pv *state) {
    const dmx__pv *qflag = dmx__pv_dict_get(state, "__quantized");
    if (qflag) return load_quantized(L, ck, state);
    size_t n = state->u.dict.n;
    ck->tensors = calloc(n ? n : 1, sizeof *ck->tensors);
    if (!ck->tensors) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
    for (size_t i = 0; i < n; i++) {
        const dmx__pv *k = state->u.dict.keys[i];
        if (k->type != DMX__PV_STR || strlen(k->u.str.s) != k->u.str.len)
            return dmx__fail(DMX_ERR_CORRUPT, "%s: state key %zu is a %s, not a name", L->what, i,
                             dmx__pv_type_name(k));
        dmx__tensor *t = &ck->tensors[i];
        t->name = strdup(k->u.str.s);
        ck->n = i + 1;
        if (!t->name) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
        dmx_status s = load_tensor(L, t->name, state->u.dict.vals[i], t);
        if (s != DMX_OK) return s;
    }
    int oom = 0;
    size_t dup = build_index(ck, &oom);
    if (oom) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
    if (dup != SIZE_MAX)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: state tensor '%s' appears twice", L->what,
                         ck->tensors[dup].name);
    return DMX_OK;
}

/* A bare state dict (MSST's RoFormer files): the top-level dict itself, or
 * MSST's loader's unwrapping: 'state', then 'state_dict', then
 * 'model_state_dict' when present (utils/model_utils.py load_start_checkpoint). */
static dmx_status load_bare(loader *L, dmx__ckpt *ck, const dmx__pv *root) {
    static const char *const wrappers[] = {"state", "state_dict", "model_state_dict"};
    for (int i = 0; i < 3; i++) {
        const dmx__pv *w = dmx__pv_dict_get(root, wrappers[i]);
        if (!w) continue;
        if (w->type != DMX__PV_DICT)
            return dmx__fail(DMX_ERR_CORRUPT, "%s: '%s' is a %s, expected a state dict", L->what,
                             wrappers[i], dmx__pv_type_name(w));
        root = w;
    }
    return load_state(L, ck, root);
}

static dmx_status load_buf_ex(const unsigned char *buf, size_t len, const char *what, int bare,
                              int mapped, dmx__ckpt **out);

static dmx_status load_buf(const unsigned char *buf, size_t len, const char *what,
                           dmx__ckpt **out) {
    return load_buf_ex(buf, len, what, 0, 0, out);
}

static dmx_status load_buf_ex(const unsigned char *buf, size_t len, const char *what, int bare,
                              int mapped, dmx__ckpt **out) {
    loader L = {0};
    L.what = what;
    if (mapped) {
        L.map = buf;
        L.map_len = len;
    }
    char *prefix = NULL;
    dmx__ckpt *ck = NULL;
    dmx_status s = dmx__zip_open(&L.zip, buf, len, what);
    if (s != DMX_OK) return s;
    if ((s = find_prefix(&L, &prefix)) != DMX_OK) goto done;
    L.prefix = prefix;
    L.prefix_len = strlen(prefix);
    /* Bound on the total size of the state (see load_tensor). */
    L.max_elems = 2 * (uint64_t)len + (1u << 20);

    const dmx__zip_entry *bo = find_entry(&L, "byteorder");
    if (bo) {
        const char *d = (const char *)dmx__zip_data(&L.zip, bo);
        if (bo->size == 3 && !memcmp(d, "big", 3)) {
            s = dmx__fail(DMX_ERR_UNSUPPORTED, "%s: big-endian checkpoints are not supported",
                          what);
            goto done;
        }
        if (!(bo->size == 6 && !memcmp(d, "little", 6))) {
            s = dmx__fail(DMX_ERR_CORRUPT, "%s: unrecognised byteorder entry", what);
            goto done;
        }
    }

    ck = calloc(1, sizeof *ck);
    if (!ck) {
        s = dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", what);
        goto done;
    }
    const dmx__zip_entry *pe = find_entry(&L, "data.pkl");
    char pwhat[512];
    snprintf(pwhat, sizeof pwhat, "%s: %s", what, pe->name);
    if ((s = dmx__pickle_run(dmx__zip_data(&L.zip, pe), (size_t)pe->size, pwhat, &ck->pk)) !=
        DMX_OK)
        goto done;

    const dmx__pv *root = dmx__pickle_result(ck->pk);
    if (root->type != DMX__PV_DICT) {
        s = dmx__fail(DMX_ERR_UNSUPPORTED,
                      "%s: top-level object is a %s, expected the dict of a Demucs checkpoint",
                      what, dmx__pv_type_name(root));
        goto done;
    }
    if (bare) {
        s = load_bare(&L, ck, root);
        goto done;
    }
    const dmx__pv *klass = dmx__pv_dict_get(root, "klass");
    const dmx__pv *args = dmx__pv_dict_get(root, "args");
    const dmx__pv *kwargs = dmx__pv_dict_get(root, "kwargs");
    const dmx__pv *state = dmx__pv_dict_get(root, "state");
    if (!klass || !kwargs || !state) {
        s = dmx__fail(DMX_ERR_UNSUPPORTED,
                      "%s: not a Demucs checkpoint: no '%s' entry (a bare state dict or another "
                      "model's file?)",
                      what,
                      !klass    ? "klass"
                      : !kwargs ? "kwargs"
                                : "state");
        goto done;
    }
    if (klass->type != DMX__PV_GLOBAL) {
        s = dmx__fail(DMX_ERR_CORRUPT, "%s: 'klass' is a %s, expected a class", what,
                      dmx__pv_type_name(klass));
        goto done;
    }
    if (args &&
        !((args->type == DMX__PV_TUPLE || args->type == DMX__PV_LIST) && args->u.seq.n == 0)) {
        if (args->type == DMX__PV_TUPLE || args->type == DMX__PV_LIST)
            s = dmx__fail(DMX_ERR_UNSUPPORTED,
                          "%s: positional constructor 'args' are not supported (%zu given)", what,
                          args->u.seq.n);
        else
            s = dmx__fail(DMX_ERR_CORRUPT, "%s: 'args' is a %s, expected a tuple", what,
                          dmx__pv_type_name(args));
        goto done;
    }
    if (kwargs->type != DMX__PV_DICT) {
        s = dmx__fail(DMX_ERR_CORRUPT, "%s: 'kwargs' is a %s, expected a dict", what,
                      dmx__pv_type_name(kwargs));
        goto done;
    }
    for (size_t i = 0; i < kwargs->u.dict.n; i++) {
        const dmx__pv *k = kwargs->u.dict.keys[i];
        if (k->type != DMX__PV_STR || strlen(k->u.str.s) != k->u.str.len) {
            s = dmx__fail(DMX_ERR_CORRUPT, "%s: kwargs key %zu is a %s, not a name", what, i,
                          dmx__pv_type_name(k));
            goto done;
        }
    }
    if (state->type != DMX__PV_DICT) {
        s = dmx__fail(DMX_ERR_CORRUPT, "%s: 'state' is a %s, expected a dict", what,
                      dmx__pv_type_name(state));
        goto done;
    }
    ck->kwargs = kwargs;
    ck->klass = strdup(klass->u.global.full);
    if (!ck->klass) {
        s = dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", what);
        goto done;
    }
    s = load_state(&L, ck, state);

done:
    dmx__zip_close(&L.zip);
    free(prefix);
    if (s != DMX_OK) {
        dmx__ckpt_free(ck);
        return s;
    }
    dmx__clear_error();
    *out = ck;
    return DMX_OK;
}

dmx_status dmx__ckpt_load_mem(const void *buf, size_t len, const char *name, dmx__ckpt **out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__ckpt_load_mem: out is NULL");
    *out = NULL;
    if (!buf && len) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__ckpt_load_mem: buf is NULL");
    static const unsigned char empty[1];
    return load_buf(buf ? buf : empty, len, name ? name : "checkpoint", out);
}

static dmx_status load_path(const char *path, int bare, dmx__ckpt **out);

dmx_status dmx__ckpt_load(const char *path, dmx__ckpt **out) { return load_path(path, 0, out); }

dmx_status dmx__ckpt_load_state_dict(const char *path, dmx__ckpt **out) {
    return load_path(path, 1, out);
}

dmx_status dmx__ckpt_load_state_dict_mem(const void *buf, size_t len, const char *name,
                                         dmx__ckpt **out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__ckpt_load_state_dict_mem: out is NULL");
    *out = NULL;
    if (!buf && len)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__ckpt_load_state_dict_mem: buf is NULL");
    static const unsigned char empty[1];
    return load_buf_ex(buf ? buf : empty, len, name ? name : "checkpoint", 1, 0, out);
}

static dmx_status load_path(const char *path, int bare, dmx__ckpt **out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__ckpt_load: out is NULL");
    *out = NULL;
    if (!path) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx__ckpt_load: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return dmx__fail(e == ENOENT ? DMX_ERR_NOT_FOUND : DMX_ERR_IO, "%s: cannot open: %s", path,
                         strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        close(fd);
        return dmx__fail(DMX_ERR_IO, "%s: not a regular file%s%s", path, e ? ": " : "",
                         e ? strerror(e) : "");
    }
    size_t len = (size_t)st.st_size;
    if (len == 0) {
        close(fd);
        return load_buf_ex((const unsigned char *)"", 0, path, bare, 0, out);
    }
    /* Map the file read-only: data is converted straight from the page cache
     * and the mapping is dropped before returning. */
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    unsigned char *heap = NULL;
    if (map == MAP_FAILED) {
        map = NULL;
        heap = malloc(len);
        if (!heap) {
            close(fd);
            return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory (%zu bytes)", path, len);
        }
        size_t got = 0;
        while (got < len) {
            ssize_t r = read(fd, heap + got, len - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                int e = r < 0 ? errno : 0;
                free(heap);
                close(fd);
                return dmx__fail(DMX_ERR_IO, "%s: read failed: %s", path,
                                 e ? strerror(e) : "unexpected end of file");
            }
            got += (size_t)r;
        }
    }
    /* A mapping is faulted in tensor by tensor and each tensor's pages are
     * dropped once converted (load_tensor). */
    close(fd);
    dmx_status s = load_buf_ex(map ? map : heap, len, path, bare, map != NULL, out);
    if (map) munmap(map, len);
    free(heap);
    return s;
}

/* ---- accessors ---------------------------------------------------------------- */

const char *dmx__ckpt_klass(const dmx__ckpt *ck) { return ck ? ck->klass : NULL; }
size_t dmx__ckpt_n_tensors(const dmx__ckpt *ck) { return ck ? ck->n : 0; }
const dmx__tensor *dmx__ckpt_tensor_at(const dmx__ckpt *ck, size_t i) {
    return ck && i < ck->n ? &ck->tensors[i] : NULL;
}
const dmx__tensor *dmx__ckpt_find(const dmx__ckpt *ck, const char *name) {
    return find_tensor(ck, name);
}

float *dmx__ckpt_steal(dmx__ckpt *ck, const char *name) {
    dmx__tensor *t = find_tensor(ck, name);
    if (!t) return NULL;
    float *d = t->data;
    t->data = NULL;
    return d;
}

size_t dmx__ckpt_kw_count(const dmx__ckpt *ck) {
    return ck && ck->kwargs ? ck->kwargs->u.dict.n : 0;
}
const char *dmx__ckpt_kw_key_at(const dmx__ckpt *ck, size_t i) {
    if (!ck || !ck->kwargs || i >= ck->kwargs->u.dict.n) return NULL;
    return ck->kwargs->u.dict.keys[i]->u.str.s;
}

static const dmx__pv *kw(const dmx__ckpt *ck, const char *key) {
    return ck && key ? dmx__pv_dict_get(ck->kwargs, key) : NULL;
}

int dmx__ckpt_kw_has(const dmx__ckpt *ck, const char *key) { return kw(ck, key) != NULL; }

int dmx__ckpt_kw_is_none(const dmx__ckpt *ck, const char *key) {
    const dmx__pv *v = kw(ck, key);
    return v && v->type == DMX__PV_NONE;
}

static dmx_status kw_missing(const char *key) {
    return dmx__fail(DMX_ERR_NOT_FOUND, "checkpoint kwargs have no '%s'", key ? key : "(null)");
}
static dmx_status kw_wrong(const char *key, const dmx__pv *v, const char *expected) {
    return dmx__fail(DMX_ERR_MODEL, "checkpoint kwargs '%s' is a %s, expected %s", key,
                     dmx__pv_type_name(v), expected);
}

static int num_of(const dmx__pv *v, double *out) {
    switch (v->type) {
        case DMX__PV_INT: *out = (double)v->u.i; return 1;
        case DMX__PV_BOOL: *out = v->u.b; return 1;
        case DMX__PV_FLOAT: *out = v->u.f; return 1;
        case DMX__PV_FRACTION: *out = (double)v->u.frac.num / (double)v->u.frac.den; return 1;
        default: return 0;
    }
}

dmx_status dmx__ckpt_kw_int(const dmx__ckpt *ck, const char *key, int64_t *out) {
    const dmx__pv *v = kw(ck, key);
    if (!v) return kw_missing(key);
    if (v->type == DMX__PV_INT)
        *out = v->u.i;
    else if (v->type == DMX__PV_BOOL)
        *out = v->u.b;
    else
        return kw_wrong(key, v, "an int");
    return DMX_OK;
}

dmx_status dmx__ckpt_kw_bool(const dmx__ckpt *ck, const char *key, int *out) {
    const dmx__pv *v = kw(ck, key);
    if (!v) return kw_missing(key);
    if (v->type == DMX__PV_BOOL)
        *out = v->u.b;
    else if (v->type == DMX__PV_INT)
        *out = v->u.i != 0;
    else
        return kw_wrong(key, v, "a bool");
    return DMX_OK;
}

dmx_status dmx__ckpt_kw_num(const dmx__ckpt *ck, const char *key, double *out) {
    const dmx__pv *v = kw(ck, key);
    if (!v) return kw_missing(key);
    if (!num_of(v, out)) return kw_wrong(key, v, "a number");
    return DMX_OK;
}

dmx_status dmx__ckpt_kw_fraction(const dmx__ckpt *ck, const char *key, int64_t *num, int64_t *den) {
    const dmx__pv *v = kw(ck, key);
    if (!v) return kw_missing(key);
    if (v->type == DMX__PV_INT)
        *num = v->u.i, *den = 1;
    else if (v->type == DMX__PV_BOOL)
        *num = v->u.b, *den = 1;
    else if (v->type == DMX__PV_FRACTION)
        *num = v->u.frac.num, *den = v->u.frac.den;
    else
        return kw_wrong(key, v, "an int or a Fraction");
    return DMX_OK;
}

dmx_status dmx__ckpt_kw_str(const dmx__ckpt *ck, const char *key, const char **out) {
    const dmx__pv *v = kw(ck, key);
    if (!v) return kw_missing(key);
    if (v->type != DMX__PV_STR) return kw_wrong(key, v, "a str");
    *out = v->u.str.s;
    return DMX_OK;
}

dmx_status dmx__ckpt_kw_strlist(const dmx__ckpt *ck, const char *key, const char **out, size_t cap,
                                size_t *n) {
    const dmx__pv *v = kw(ck, key);
    if (!v) return kw_missing(key);
    if (v->type != DMX__PV_LIST && v->type != DMX__PV_TUPLE)
        return kw_wrong(key, v, "a list of str");
    for (size_t i = 0; i < v->u.seq.n; i++) {
        const dmx__pv *it = v->u.seq.items[i];
        if (it->type != DMX__PV_STR)
            return dmx__fail(DMX_ERR_MODEL, "checkpoint kwargs '%s'[%zu] is a %s, expected a str",
                             key, i, dmx__pv_type_name(it));
        if (i < cap) out[i] = it->u.str.s;
    }
    *n = v->u.seq.n;
    return DMX_OK;
}

dmx_status dmx__ckpt_kw_numlist(const dmx__ckpt *ck, const char *key, double *out, size_t cap,
                                size_t *n) {
    const dmx__pv *v = kw(ck, key);
    if (!v) return kw_missing(key);
    if (v->type != DMX__PV_LIST && v->type != DMX__PV_TUPLE)
        return kw_wrong(key, v, "a list of numbers");
    for (size_t i = 0; i < v->u.seq.n; i++) {
        const dmx__pv *it = v->u.seq.items[i];
        double d;
        if (!num_of(it, &d))
            return dmx__fail(DMX_ERR_MODEL,
                             "checkpoint kwargs '%s'[%zu] is a %s, expected a number", key, i,
                             dmx__pv_type_name(it));
        if (i < cap) out[i] = d;
    }
    *n = v->u.seq.n;
    return DMX_OK;
}

/* ---- parameter lists (DiffQ naming) ---------------------------------------- */

dmx_status dmx__param_list_add(dmx__param_list *l, const char *name, int ndim,
                               const int64_t *shape) {
    if (ndim < 0 || ndim > DMX__MAX_DIMS)
        return dmx__fail(DMX_ERR_MODEL, "parameter '%s': %d dims", name, ndim);
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        dmx__param_spec *v = realloc(l->v, cap * sizeof *v);
        if (!v) return dmx__fail(DMX_ERR_NOMEM, "out of memory listing parameters");
        l->v = v;
        l->cap = cap;
    }
    dmx__param_spec *p = &l->v[l->n];
    memset(p, 0, sizeof *p);
    p->name = strdup(name);
    if (!p->name) return dmx__fail(DMX_ERR_NOMEM, "out of memory listing parameters");
    p->ndim = ndim;
    for (int i = 0; i < ndim; i++) p->shape[i] = shape[i];
    l->n++;
    return DMX_OK;
}

void dmx__param_list_free(dmx__param_list *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) free(l->v[i].name);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ---- DiffQ-quantized states ---------------------------------------------------
 *
 * diffq's get_quantized_state() (facebookresearch/diffq, base.py/diffq.py):
 *   {'quantized': [(levels, (min, max), packed_bits), ...],
 *    'float16': [...], 'others': [...],
 *    'meta': {'init_kwargs': {...}, 'klass': DiffQuantizer, 'packed': True,
 *             ['torch_pack': False]}, '__quantized': True}
 * Parameters with more than floor(min_size * 2^20 / 4) values are quantized
 * per group of group_size values with a bit width b (min_bits + the packed
 * value); levels[b - 1] packs the levels of all b-bit groups in group order.
 * Bitpack layout (bitpack.pyx): an int64 tensor (lines, nbits, 32) holds
 * 2048 values a line; bit j of value line*2048 + 32*k + i is bit k of
 * word[line, j, i]. Restored value: level * (1 / (2^b - 1)) * (float)(max -
 * min) + (float)min in float32, as diffq.uniform.uniform_unquantize. */

#define DQ_MAX_BITS 14

typedef struct dq_packed {
    uint64_t *w; /* (lines, nbits, 32) */
    int64_t lines;
    int nbits;
} dq_packed;

typedef struct dq_entry {
    double mn, mx;
    dq_packed bits;
    dq_packed levels[DQ_MAX_BITS]; /* [b - 1]; w NULL when None */
} dq_entry;

struct dq_state {
    dq_entry *q;
    size_t nq;
    dmx__tensor *small; /* 'others' (or 'float16'), loaded as fp32, unnamed */
    size_t nsmall;
    double min_size;
    int64_t group_size, min_bits;
    char **exclude; /* fnmatch patterns */
    size_t nexclude;
};

static void dq_free(struct dq_state *q) {
    if (!q) return;
    for (size_t i = 0; i < q->nq; i++) {
        free(q->q[i].bits.w);
        for (int b = 0; b < DQ_MAX_BITS; b++) free(q->q[i].levels[b].w);
    }
    free(q->q);
    for (size_t i = 0; i < q->nsmall; i++) {
        free(q->small[i].name);
        free(q->small[i].data);
    }
    free(q->small);
    for (size_t i = 0; i < q->nexclude; i++) free(q->exclude[i]);
    free(q->exclude);
    free(q);
}

int dmx__ckpt_is_quantized(const dmx__ckpt *ck) { return ck && ck->dq; }

/* value k of a packed array */
static unsigned dq_value(const dq_packed *p, int64_t k) {
    int64_t line = k / 2048, r = k % 2048;
    int bit = (int)(r / 32), idx = (int)(r % 32);
    const uint64_t *w = p->w + (size_t)line * p->nbits * 32;
    unsigned v = 0;
    for (int j = 0; j < p->nbits; j++) v |= (unsigned)((w[(size_t)j * 32 + idx] >> bit) & 1u) << j;
    return v;
}

/* An int64 bit-packed tensor (lines, nbits, 32). */
static dmx_status load_packed(loader *L, const char *what, const dmx__pv *v, dq_packed *out) {
    if (!v || v->type != DMX__PV_TENSOR)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ %s is a %s, not a packed tensor", L->what,
                         what, v ? dmx__pv_type_name(v) : "missing value");
    const dmx__pv_tensor *t = v->u.tensor;
    const dmx__pv_storage *s = t->storage->u.storage;
    int untyped = !strcmp(s->type, "torch.UntypedStorage");
    int is_long = !strcmp(s->type, "torch.LongStorage") ||
                  (untyped && t->dtype &&
                   (!strcmp(t->dtype, "torch.int64") || !strcmp(t->dtype, "torch.long")));
    if (!is_long)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ %s is stored as %s, expected int64", L->what,
                         what, s->type);
    if (t->ndim != 3 || t->size[2] != 32 || t->size[1] < 1 || t->size[1] > 16 || t->size[0] < 0 ||
        t->size[0] > (1 << 24))
        return dmx__fail(DMX_ERR_CORRUPT,
                         "%s: DiffQ %s has a shape other than (lines, 1..16 bits, 32)", L->what,
                         what);
    int64_t numel = t->size[0] * t->size[1] * 32;
    if (t->stride[2] != 1 || t->stride[1] != 32 ||
        (t->size[0] > 1 && t->stride[0] != t->size[1] * 32))
        return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ %s is not contiguous", L->what, what);
    size_t kl = strlen(s->key);
    char rest[300];
    if (kl > 200)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ %s: storage key is too long", L->what, what);
    snprintf(rest, sizeof rest, "data/%s", s->key);
    const dmx__zip_entry *e = find_entry(L, rest);
    if (!e)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: storage entry of DiffQ %s is missing", L->what,
                         what);
    uint64_t snumel = untyped ? (uint64_t)s->numel / 8 : (uint64_t)s->numel;
    if (e->size != snumel * 8 || t->offset < 0 || (uint64_t)t->offset + (uint64_t)numel > snumel)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ %s does not fit its storage entry '%s'",
                         L->what, what, e->name);
    L->total_elems += (uint64_t)numel;
    if (L->total_elems > L->max_elems)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: state tensors expand to more than %llu elements",
                         L->what, (unsigned long long)L->max_elems);
    out->lines = t->size[0];
    out->nbits = (int)t->size[1];
    out->w = malloc((size_t)(numel ? numel : 1) * 8);
    if (!out->w) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
    memcpy(out->w, dmx__zip_data(&L->zip, e) + (size_t)t->offset * 8, (size_t)numel * 8);
    return DMX_OK;
}

static int pv_is_seq(const dmx__pv *v) {
    return v && (v->type == DMX__PV_LIST || v->type == DMX__PV_TUPLE);
}

static int pv_num(const dmx__pv *v, double *out) {
    if (!v) return 0;
    if (v->type == DMX__PV_FLOAT)
        *out = v->u.f;
    else if (v->type == DMX__PV_INT)
        *out = (double)v->u.i;
    else if (v->type == DMX__PV_BOOL)
        *out = v->u.b;
    else
        return 0;
    return 1;
}

static dmx_status load_quantized(loader *L, dmx__ckpt *ck, const dmx__pv *state) {
    const dmx__pv *meta = dmx__pv_dict_get(state, "meta");
    const dmx__pv *quant = dmx__pv_dict_get(state, "quantized");
    const dmx__pv *others = dmx__pv_dict_get(state, "others");
    const dmx__pv *f16 = dmx__pv_dict_get(state, "float16");
    if (!meta || meta->type != DMX__PV_DICT || !pv_is_seq(quant) || !pv_is_seq(others))
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: " QUANT_MSG
                         " in this form (state has a '__quantized' key but not DiffQ's 'meta', "
                         "'quantized' and 'others' entries)",
                         L->what);
    const dmx__pv *klass = dmx__pv_dict_get(meta, "klass");
    const char *kname = klass && klass->type == DMX__PV_GLOBAL ? klass->u.global.full : NULL;
    if (!kname || strcmp(kname, "diffq.diffq.DiffQuantizer"))
        return dmx__fail(
            DMX_ERR_UNSUPPORTED,
            "%s: quantizer %s is not supported (only diffq.diffq.DiffQuantizer states load)",
            L->what,
            kname   ? kname
            : klass ? dmx__pv_type_name(klass)
                    : "(none named in meta)");
    const dmx__pv *packed = dmx__pv_dict_get(meta, "packed");
    const dmx__pv *tpack = dmx__pv_dict_get(meta, "torch_pack");
    if (!packed || !((packed->type == DMX__PV_BOOL && packed->u.b) ||
                     (packed->type == DMX__PV_INT && packed->u.i)))
        return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: DiffQ state with packed=False is not supported",
                         L->what);
    if (tpack && !((tpack->type == DMX__PV_BOOL && !tpack->u.b) ||
                   (tpack->type == DMX__PV_INT && !tpack->u.i) || tpack->type == DMX__PV_NONE))
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: DiffQ state packed with torch_pack=True is not supported", L->what);
    struct dq_state *q = calloc(1, sizeof *q);
    if (!q) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
    ck->dq = q;
    /* DiffQuantizer's defaults, then init_kwargs */
    q->min_size = 0.01;
    q->group_size = 1;
    q->min_bits = 2;
    int use_f16 = 0;
    const dmx__pv *ik = dmx__pv_dict_get(meta, "init_kwargs");
    if (ik && ik->type != DMX__PV_DICT)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ meta.init_kwargs is a %s", L->what,
                         dmx__pv_type_name(ik));
    for (size_t i = 0; ik && i < ik->u.dict.n; i++) {
        const dmx__pv *k = ik->u.dict.keys[i], *v = ik->u.dict.vals[i];
        if (k->type != DMX__PV_STR)
            return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ init_kwargs key", L->what);
        const char *key = k->u.str.s;
        double d;
        if (!strcmp(key, "min_size") && pv_num(v, &d))
            q->min_size = d;
        else if (!strcmp(key, "group_size") && pv_num(v, &d) && d == (int64_t)d)
            q->group_size = (int64_t)d;
        else if (!strcmp(key, "min_bits") && pv_num(v, &d) && d == (int64_t)d)
            q->min_bits = (int64_t)d;
        else if (!strcmp(key, "float16") && pv_num(v, &d))
            use_f16 = d != 0;
        else if (!strcmp(key, "exclude") && (pv_is_seq(v) || v->type == DMX__PV_NONE)) {
            size_t n = v->type == DMX__PV_NONE ? 0 : v->u.seq.n;
            q->exclude = calloc(n ? n : 1, sizeof *q->exclude);
            if (!q->exclude) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
            for (size_t j = 0; j < n; j++) {
                const dmx__pv *pat = v->u.seq.items[j];
                if (pat->type != DMX__PV_STR)
                    return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ exclude pattern %zu is a %s",
                                     L->what, j, dmx__pv_type_name(pat));
                if (!(q->exclude[j] = strdup(pat->u.str.s)))
                    return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
                q->nexclude = j + 1;
            }
        } else if (!strcmp(key, "min_size") || !strcmp(key, "group_size") ||
                   !strcmp(key, "min_bits") || !strcmp(key, "float16") || !strcmp(key, "exclude"))
            return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ init_kwargs '%s' is a %s", L->what, key,
                             dmx__pv_type_name(v));
        /* max_bits, init_bits, extra_bits, param, noise, suffix, detect_bound:
         * training-time only */
    }
    if (q->group_size < 0 || q->group_size > (1 << 20) || q->min_bits < 0 ||
        q->min_bits > DQ_MAX_BITS || !(q->min_size >= 0))
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: DiffQ group_size %lld / min_bits %lld / min_size %g", L->what,
                         (long long)q->group_size, (long long)q->min_bits, q->min_size);
    if (q->group_size == 0)
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: DiffQ group_size 0 (one group per tensor) is not supported", L->what);
    /* small parameters: 'others' (or 'float16' when the quantizer kept them in half precision) */
    const dmx__pv *small = use_f16 ? f16 : others;
    if (!pv_is_seq(small))
        return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ state without its 'float16' list", L->what);
    if (use_f16 ? others->u.seq.n != 0 : (pv_is_seq(f16) && f16->u.seq.n != 0))
        return dmx__fail(DMX_ERR_CORRUPT,
                         "%s: DiffQ state with both 'float16' and 'others' parameters", L->what);
    q->small = calloc(small->u.seq.n ? small->u.seq.n : 1, sizeof *q->small);
    q->q = calloc(quant->u.seq.n ? quant->u.seq.n : 1, sizeof *q->q);
    if (!q->small || !q->q) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
    for (size_t i = 0; i < small->u.seq.n; i++) {
        char nm[48];
        snprintf(nm, sizeof nm, "%s[%zu]", use_f16 ? "float16" : "others", i);
        q->nsmall = i + 1;
        if (!(q->small[i].name = strdup(nm)))
            return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
        dmx_status s = load_tensor(L, nm, small->u.seq.items[i], &q->small[i]);
        if (s != DMX_OK) return s;
    }
    for (size_t i = 0; i < quant->u.seq.n; i++) {
        const dmx__pv *e = quant->u.seq.items[i];
        char what[64];
        q->nq = i + 1;
        dq_entry *d = &q->q[i];
        if (!pv_is_seq(e) || e->u.seq.n != 3 || !pv_is_seq(e->u.seq.items[0]) ||
            !pv_is_seq(e->u.seq.items[1]) || e->u.seq.items[1]->u.seq.n != 2 ||
            !pv_num(e->u.seq.items[1]->u.seq.items[0], &d->mn) ||
            !pv_num(e->u.seq.items[1]->u.seq.items[1], &d->mx))
            return dmx__fail(DMX_ERR_CORRUPT,
                             "%s: DiffQ quantized[%zu] is not (levels, (min, max), packed_bits)",
                             L->what, i);
        const dmx__pv *lv = e->u.seq.items[0];
        if (lv->u.seq.n != DQ_MAX_BITS)
            return dmx__fail(DMX_ERR_CORRUPT,
                             "%s: DiffQ quantized[%zu] has %zu level lists, expected %d", L->what,
                             i, lv->u.seq.n, DQ_MAX_BITS);
        snprintf(what, sizeof what, "quantized[%zu] bits", i);
        dmx_status s = load_packed(L, what, e->u.seq.items[2], &d->bits);
        if (s != DMX_OK) return s;
        for (int b = 0; b < DQ_MAX_BITS; b++) {
            const dmx__pv *p = lv->u.seq.items[b];
            if (p->type == DMX__PV_NONE) continue;
            snprintf(what, sizeof what, "quantized[%zu] levels[%d]", i, b);
            if ((s = load_packed(L, what, p, &d->levels[b])) != DMX_OK) return s;
            if (d->levels[b].nbits != b + 1)
                return dmx__fail(DMX_ERR_CORRUPT, "%s: DiffQ %s packs %d bits, expected %d",
                                 L->what, what, d->levels[b].nbits, b + 1);
        }
    }
    ck->tensors = calloc(1, sizeof *ck->tensors);
    if (!ck->tensors) return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory", L->what);
    return DMX_OK;
}

static int dq_excluded(const struct dq_state *q, const char *full) {
    const char *dot = strrchr(full, '.');
    const char *local = dot ? dot + 1 : full;
    for (size_t i = 0; i < q->nexclude; i++)
        if (!fnmatch(q->exclude[i], full, 0) || !fnmatch(q->exclude[i], local, 0)) return 1;
    return 0;
}

/* Unpacks and dequantizes entry d into dst (numel values). */
static dmx_status dq_restore(const struct dq_state *q, const dq_entry *d, const dmx__param_spec *p,
                             size_t numel, float *dst) {
    const int64_t G = q->group_size, groups = (int64_t)numel / G;
    if ((int64_t)numel % G)
        return dmx__fail(DMX_ERR_MODEL, "DiffQ parameter '%s': %zu values are not groups of %lld",
                         p->name, numel, (long long)G);
    if (d->bits.lines * 2048 < groups)
        return dmx__fail(DMX_ERR_MODEL,
                         "DiffQ parameter '%s': %lld groups but %lld packed bit widths", p->name,
                         (long long)groups, (long long)d->bits.lines * 2048);
    int64_t used[DQ_MAX_BITS] = {0}; /* groups of each width so far */
    const float fmx_mn = (float)(d->mx - d->mn), fmn = (float)d->mn;
    for (int64_t g = 0; g < groups; g++) {
        int64_t b = (int64_t)dq_value(&d->bits, g) + q->min_bits;
        if (b < 1 || b > DQ_MAX_BITS)
            return dmx__fail(DMX_ERR_CORRUPT,
                             "DiffQ parameter '%s': group %lld has %lld bits (1..%d restorable)",
                             p->name, (long long)g, (long long)b, DQ_MAX_BITS);
        const dq_packed *lp = &d->levels[b - 1];
        int64_t k0 = used[b - 1]++ * G;
        if (!lp->w || lp->lines * 2048 < k0 + G)
            return dmx__fail(DMX_ERR_CORRUPT,
                             "DiffQ parameter '%s': levels of its %lld-bit groups are missing",
                             p->name, (long long)b);
        float unit = 1.0f / (ldexpf(1.0f, (int)b) - 1.0f);
        for (int64_t e = 0; e < G; e++) {
            volatile float pv = (float)dq_value(lp, k0 + e) *
                                unit; /* no fused multiply-add: torch rounds each op */
            volatile float sc = pv * fmx_mn;
            dst[g * G + e] = sc + fmn;
        }
    }
    return DMX_OK;
}

dmx_status dmx__ckpt_dequantize(dmx__ckpt *ck, const dmx__param_list *params) {
    if (!ck || !ck->dq) return DMX_OK;
    struct dq_state *q = ck->dq;
    const double min_params = floor(q->min_size * 1048576.0 / 4.0);
    size_t n = params->n, jq = 0, js = 0;
    dmx__tensor *ts = calloc(n ? n : 1, sizeof *ts);
    size_t *from =
        malloc((n ? n : 1) * sizeof *from); /* small entry moved into ts[i], or SIZE_MAX */
    if (!ts || !from) {
        free(ts);
        free(from);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory dequantizing");
    }
    for (size_t k = 0; k < n; k++) from[k] = SIZE_MAX;
    dmx_status s = DMX_OK;
    size_t i;
    for (i = 0; i < n && s == DMX_OK; i++) {
        const dmx__param_spec *p = &params->v[i];
        size_t numel = 1;
        int bad = 0;
        for (int d = 0; d < p->ndim; d++)
            bad |= p->shape[d] < 0 || __builtin_mul_overflow(numel, (size_t)p->shape[d], &numel);
        if (bad) {
            s = dmx__fail(DMX_ERR_MODEL, "parameter '%s' has an impossible shape", p->name);
            break;
        }
        dmx__tensor *t = &ts[i];
        if (!(t->name = strdup(p->name))) {
            s = dmx__fail(DMX_ERR_NOMEM, "out of memory dequantizing");
            break;
        }
        t->ndim = p->ndim;
        memcpy(t->shape, p->shape, sizeof t->shape);
        t->numel = numel;
        if ((double)numel <= min_params || dq_excluded(q, p->name)) {
            if (js >= q->nsmall) {
                s = dmx__fail(DMX_ERR_MODEL,
                              "DiffQ state has %zu small parameters, the architecture more ('%s')",
                              q->nsmall, p->name);
                break;
            }
            dmx__tensor *o = &q->small[js];
            int ok = o->ndim == p->ndim;
            for (int d = 0; ok && d < p->ndim; d++) ok = o->shape[d] == p->shape[d];
            if (!ok) {
                s = dmx__fail(
                    DMX_ERR_MODEL,
                    "DiffQ %s has %zu values where the architecture has '%s' (%zu values)", o->name,
                    o->numel, p->name, numel);
                break;
            }
            t->data = o->data; /* moved (back on failure) */
            o->data = NULL;
            from[i] = js++;
        } else {
            if (jq >= q->nq) {
                s = dmx__fail(
                    DMX_ERR_MODEL,
                    "DiffQ state has %zu quantized parameters, the architecture more ('%s')", q->nq,
                    p->name);
                break;
            }
            /* every value needs a packed level: bounds the allocation by the file */
            const dq_entry *e = &q->q[jq];
            uint64_t cap = 0;
            for (int b = 0; b < DQ_MAX_BITS; b++)
                cap += e->levels[b].w ? (uint64_t)e->levels[b].lines * 2048 : 0;
            if ((uint64_t)numel > cap) {
                s = dmx__fail(
                    DMX_ERR_MODEL,
                    "DiffQ quantized[%zu] packs at most %llu levels but '%s' has %zu values", jq,
                    (unsigned long long)cap, p->name, numel);
                break;
            }
            t->data = alloc_floats(numel);
            if (!t->data) {
                s = dmx__fail(DMX_ERR_NOMEM, "out of memory dequantizing '%s'", p->name);
                break;
            }
            s = dq_restore(q, &q->q[jq++], p, numel, t->data);
        }
    }
    if (s == DMX_OK && (js != q->nsmall || jq != q->nq))
        s = dmx__fail(
            DMX_ERR_MODEL,
            "DiffQ state has %zu quantized and %zu other parameters, the architecture %zu and %zu",
            q->nq, q->nsmall, jq, js);
    if (s != DMX_OK) {
        /* leave the state as it was, so a corrected list can be tried */
        for (size_t k = 0; k < n; k++) {
            free(ts[k].name);
            if (from[k] != SIZE_MAX)
                q->small[from[k]].data = ts[k].data;
            else
                free(ts[k].data);
        }
        free(ts);
        free(from);
        return s;
    }
    free(from);
    free(ck->tensors);
    ck->tensors = ts;
    ck->n = n;
    free(ck->index);
    ck->index = NULL;
    int oom = 0;
    size_t dup = build_index(ck, &oom);
    dq_free(q);
    ck->dq = NULL;
    if (oom) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    if (dup != SIZE_MAX)
        return dmx__fail(DMX_ERR_MODEL, "parameter '%s' listed twice", ck->tensors[dup].name);
    return DMX_OK;
}
