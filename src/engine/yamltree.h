/*
 * yamltree.h - internal: a YAML document as a small tree (libyaml underneath).
 *
 * dmx__yaml_parse runs libyaml's event parser over one document and builds a
 * tree of mappings, sequences and scalars, each with its 1-based source line.
 * Tags are kept verbatim ("tag:yaml.org,2002:python/tuple" for
 * `!!python/tuple`) and otherwise ignored: a tuple is a sequence. Scalars stay
 * text; the typed accessors resolve plain scalars the way PyYAML's resolver
 * (YAML 1.1, as MSST and Demucs load their configs) does:
 *   null   ~, null, Null, NULL, or empty
 *   bool   yes/no/true/false/on/off (lower, Capitalised or UPPER)
 *   int    [-+]digits (underscores allowed), 0x.., 0o.. / 0.., 0b..
 *   float  with a '.', optional exponent; .inf, -.inf, .nan
 * A quoted scalar is always a string. Aliases, merge keys, non-scalar keys,
 * duplicate keys and multi-document streams are rejected with
 * DMX_ERR_CORRUPT and "line N: ...". Nesting and node counts are bounded.
 */
#ifndef DMX_ENGINE_YAMLTREE_H
#define DMX_ENGINE_YAMLTREE_H

#include <stddef.h>
#include <stdint.h>

#include "demix/status.h"

typedef enum dmx__ykind { DMX__Y_SCALAR, DMX__Y_SEQ, DMX__Y_MAP } dmx__ykind;

typedef struct dmx__ynode dmx__ynode;
struct dmx__ynode {
    dmx__ykind kind;
    int line;           /* 1-based line where the node starts */
    char *tag;          /* explicit tag or NULL */
    char *str;          /* SCALAR: the text, NUL-terminated */
    int quoted;         /* SCALAR: written quoted or as a block scalar (always a string) */
    size_t n;           /* SEQ: items; MAP: pairs */
    dmx__ynode **items; /* SEQ items, MAP values */
    char **keys;        /* MAP keys (scalars) */
};

/* Parses text[0..len). `what` prefixes messages (a file name). The whole
 * tree is owned by *out; free with dmx__yaml_free. An empty document gives a
 * null scalar. */
dmx_status dmx__yaml_parse(const char *text, size_t len, const char *what, dmx__ynode **out);
/* Reads and parses a file (DMX_ERR_NOT_FOUND / DMX_ERR_IO when unreadable). */
dmx_status dmx__yaml_load(const char *path, dmx__ynode **out);
void dmx__yaml_free(dmx__ynode *n);

/* Value under `key` in a mapping, or NULL (also when `map` is not a map). */
const dmx__ynode *dmx__yaml_get(const dmx__ynode *map, const char *key);

/* Typed reads of a scalar: 0 on success, -1 when the node is not a scalar
 * of that type. */
int dmx__yaml_is_null(const dmx__ynode *n);
int dmx__yaml_bool(const dmx__ynode *n, int *v);
int dmx__yaml_int(const dmx__ynode *n, int64_t *v);
/* Accepts ints and floats. */
int dmx__yaml_float(const dmx__ynode *n, double *v);
/* Any scalar that is not null; quoted or plain. */
int dmx__yaml_str(const dmx__ynode *n, const char **v);

/* "mapping", "sequence", "tuple", "null", "bool", "int", "float", "string". */
const char *dmx__yaml_type_name(const dmx__ynode *n);

#endif
