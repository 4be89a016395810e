/*
 * pickle.h - internal: a small, bounded pickle VM for torch.save's data.pkl.
 *
 * Runs protocol 0-4 opcodes that torch.save and plain Python containers emit
 * and builds a tree of tagged values without executing anything: an unknown
 * class becomes a generic object (class, args, state) so foreign payloads
 * such as omegaconf objects in training_args do not fail. A few callables are
 * recognised and evaluated: collections.OrderedDict (-> dict),
 * fractions.Fraction (-> fraction), torch._utils._rebuild_tensor(_v2/_v3) and
 * _rebuild_parameter (-> tensor view), and BINPERSID ('storage', ...) tuples
 * (-> storage reference). Every resource (stack, marks, memo, string lengths,
 * total values) is bounded, so a hostile pickle fails with DMX_ERR_CORRUPT or
 * DMX_ERR_UNSUPPORTED instead of crashing, hanging or exhausting memory.
 *
 * All values live in an arena owned by the dmx__pickle and die with it; the
 * graph may share nodes (memo) and even contain cycles, so consumers must not
 * recurse blindly.
 */
#ifndef DMX_ENGINE_PICKLE_H
#define DMX_ENGINE_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "demix/status.h"

/* Limits (each one reported by name when exceeded). */
#define DMX__PK_MAX_STACK  (1u << 20) /* values on the stack, all marks together */
#define DMX__PK_MAX_MARKS  (1u << 16) /* nested MARKs */
#define DMX__PK_MAX_MEMO   (1u << 22) /* memo index bound (also <= pickle size + 256) */
#define DMX__PK_MAX_STR    (1u << 28) /* bytes in one string/bytes value */
#define DMX__PK_MAX_VALUES (1u << 21) /* values created in total (~56 bytes each) */
#define DMX__PK_MAX_LINE   4096u      /* text-protocol argument lines */

typedef enum dmx__pv_type {
    DMX__PV_NONE,
    DMX__PV_BOOL,
    DMX__PV_INT,
    DMX__PV_BIGINT, /* integer beyond int64: kept as an opaque value */
    DMX__PV_FLOAT,
    DMX__PV_STR,
    DMX__PV_BYTES,
    DMX__PV_LIST,
    DMX__PV_TUPLE,
    DMX__PV_SET,
    DMX__PV_FROZENSET,
    DMX__PV_DICT,   /* insertion-ordered; duplicate keys are kept (lookups take the last) */
    DMX__PV_GLOBAL, /* module + name */
    DMX__PV_OBJECT, /* generic result of REDUCE / NEWOBJ / BUILD on an unknown class */
    DMX__PV_FRACTION,
    DMX__PV_STORAGE, /* torch storage reference from a persistent id */
    DMX__PV_TENSOR   /* view over a storage */
} dmx__pv_type;

typedef struct dmx__pv dmx__pv;

typedef struct dmx__pv_storage {
    const char *type; /* storage class as "module.Name", e.g. "torch.HalfStorage" */
    const char *key;  /* zip entry is <prefix>/data/<key> */
    const char *location;
    int64_t numel; /* elements of `type` (bytes for torch.UntypedStorage) */
} dmx__pv_storage;

typedef struct dmx__pv_tensor {
    const dmx__pv *storage; /* DMX__PV_STORAGE */
    const char *dtype;      /* "torch.float16" etc. from _rebuild_tensor_v3, else NULL */
    int64_t offset;         /* storage_offset, in elements */
    int ndim;
    int64_t size[8];
    int64_t stride[8];
} dmx__pv_tensor;

struct dmx__pv {
    dmx__pv_type type;
    union {
        int b;
        int64_t i;
        double f;
        struct {
            const char *s;
            size_t len;
        } str; /* STR, BYTES (NUL-terminated copy) */
        struct {
            dmx__pv **items;
            size_t n, cap;
        } seq; /* LIST, TUPLE, SET, FROZENSET */
        struct {
            dmx__pv **keys, **vals;
            size_t n, cap;
        } dict; /* DICT */
        struct {
            const char *module, *name, *full;
        } global; /* full = "module.name" */
        struct {
            dmx__pv *cls, *args, *kwargs, *state, *list, *dict;
        } obj;
        struct {
            int64_t num, den;
        } frac; /* den > 0 */
        dmx__pv_storage *storage;
        dmx__pv_tensor *tensor;
    } u;
};

typedef struct dmx__pickle dmx__pickle;

/* Runs the pickle program p[0..len). `what` names it in messages (e.g.
 * "tiny4s.th: tiny4s/data.pkl"). On success *out owns every value. */
dmx_status dmx__pickle_run(const void *p, size_t len, const char *what, dmx__pickle **out);

/* The value STOP returned. */
const dmx__pv *dmx__pickle_result(const dmx__pickle *pk);

void dmx__pickle_free(dmx__pickle *pk);

/* Last value stored under string key `key` in a DICT, or NULL. */
const dmx__pv *dmx__pv_dict_get(const dmx__pv *dict, const char *key);

/* Short description of a value's type for messages ("int", "str",
 * "object demucs.foo.Bar", ...). Static or arena-owned string. */
const char *dmx__pv_type_name(const dmx__pv *v);

/* strtod in the "C" locale whatever LC_NUMERIC is (also used by bagyaml.c). */
double dmx__strtod_c(const char *s, char **end);

#endif
