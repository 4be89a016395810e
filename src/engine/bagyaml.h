/*
 * bagyaml.h - internal: upstream's "bag of models" YAML files, and the lookup
 * of each member's checkpoint (the registry's rule, demix/repo.h).
 *
 * A bag file (upstream's remote/htdemucs_ft.yaml, or a user's own) looks like
 *
 *     models: ['f7e0c4bc', 'd12395a8', '92cba59e', '04573f0d']
 *     weights: [
 *       [1., 0., 0., 0.],
 *       ...
 *     ]
 *     segment: 44
 *
 * The text is read as YAML 1.1 by libyaml (yamltree.h, as PyYAML reads it
 * for upstream): flow or block lists, any quoting, comments, tags; aliases,
 * merge keys, duplicate keys and several documents are refused. Weights and
 * the segment are plain ints or floats (a quoted "1" is text). Unknown
 * top-level keys are parsed and ignored, as upstream ignores them. Anything
 * else fails with DMX_ERR_CORRUPT and "WHAT: line N: ..." naming the field.
 */
#ifndef DMX_ENGINE_BAGYAML_H
#define DMX_ENGINE_BAGYAML_H

#include <stddef.h>

#include "demix/status.h"

typedef struct dmx__bag_spec {
    size_t n_models;
    char **models;      /* (n_models) model names (signatures), owned */
    int has_weights;    /* 0: upstream's default, 1 for every model and source */
    size_t weight_rows; /* == n_models when has_weights, else 0 */
    size_t weight_cols; /* one per source; 0 when absent */
    double *weights;    /* (weight_rows * weight_cols) row-major, or NULL */
    int has_segment;
    double segment; /* seconds, when has_segment */
} dmx__bag_spec;

/* Parses YAML text (need not be NUL-terminated). Requires a non-empty
 * `models` list of strings; `weights`, if present, must have one row per
 * model and rows of equal, non-zero length, all finite numbers. On failure
 * *out = NULL and the message says "bag YAML: line N: ..." (except a missing
 * `models` key, which has no line). */
dmx_status dmx__bag_yaml_parse(const char *text, size_t len, dmx__bag_spec **out);

/* Reads and parses a file (at most 1 MiB); messages start with the path
 * instead of "bag YAML".
 * DMX_ERR_NOT_FOUND / DMX_ERR_IO when the file cannot be read. */
dmx_status dmx__bag_yaml_load(const char *path, dmx__bag_spec **out);

void dmx__bag_spec_free(dmx__bag_spec *spec);

/* Finds the checkpoint of bag member `name` in the directory holding
 * `yaml_path` with the registry's rule (dmx_repo_find_checkpoint in
 * demix/repo.h: `NAME.th` or `NAME-<lowercase hex checksum>.th`, several
 * matches refused as upstream does). *path_out is a malloc'd path.
 * DMX_ERR_NOT_FOUND if there is none, DMX_ERR_INVALID_ARG for a name that is
 * not a plain file-name stem, several files, or a file for it whose name
 * breaks the rule. When `checksum_out` is not NULL it gets a malloc'd copy of
 * the hex part ("" for `NAME.th`): upstream checks it against the sha256
 * prefix of the file. */
dmx_status dmx__bag_resolve(const char *yaml_path, const char *name, char **path_out);
dmx_status dmx__bag_resolve_ex(const char *yaml_path, const char *name, char **path_out,
                               char **checksum_out);

#endif
