/*
 * repo.h - the model registry: which models upstream Demucs publishes, what
 * their files are called, where demix keeps them, and how a model name finds
 * the file to load. One rule for the CLI, the bag loader and the service.
 * Nothing here touches the network; downloading is the CLI's job.
 *
 * Naming rule (upstream's demucs/repo.py LocalRepo + BagOnlyRepo, and
 * AnyModelRepo's order):
 *   - a checkpoint file is `SIG.th` or `SIG-CHECKSUM.th`. SIG is the part of
 *     the name before the first '-'; CHECKSUM is what follows it and must be
 *     1 to 64 lowercase hex digits: a prefix of the file's sha256, compared
 *     as upstream compares it (`sha256().hexdigest()[:len]`), so uppercase
 *     digits or a second '-' make the file unusable (upstream's LocalRepo
 *     cannot even scan a folder holding such a name). Signatures are
 *     case-sensitive.
 *   - a bag of models is `NAME.yaml` (models, weights, segment); its members
 *     are signatures resolved as checkpoints in the same folder.
 *   - a `NAME.yaml` with a top-level `model:` section is instead an MSST
 *     config (BS-RoFormer, Mel-Band RoFormer); its checkpoint is `NAME.ckpt`
 *     in the same folder (dmx_repo_config_checkpoint, the one place of this
 *     rule). Such a NAME resolves, lists and probes like a bag.
 *   - a name resolves to a checkpoint whose SIG is the name first, then to a
 *     bag NAME.yaml. Two checkpoints with the same SIG (e.g. `x.th` and
 *     `x-ab12.th`) are an error for that name ("delete all but one").
 *   - file names starting with '.' and anything that is not a regular file
 *     (after following symlinks) are ignored.
 *
 * The cache (where `demix models fetch` stores upstream's files under their
 * upstream names) is $DEMIX_MODELS if set and non-empty, else
 * $XDG_CACHE_HOME/demix if XDG_CACHE_HOME is an absolute path, else
 * $HOME/.cache/demix, else .cache/demix. Resolving in the cache first treats
 * it as a repo folder (so `955717e8`, a user's `mymodel.th` or a bag YAML
 * written there resolve), then as upstream's remote repo: an upstream name
 * such as `htdemucs` finds its member checkpoints by signature.
 *
 * Ownership: table entries (dmx_repo_model, dmx_repo_file and every string
 * they point to) are static and never freed. Every `char *` or struct that a
 * function fills is malloc'ed and owned by the caller, released with the
 * matching _free/_clear (NULL-safe). Failing calls set dmx_last_error().
 */
#ifndef DEMIX_REPO_H
#define DEMIX_REPO_H

#include <stddef.h>
#include <stdint.h>

#include "demix/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Network class a checkpoint needs (its `klass`). */
typedef enum dmx_repo_family {
    DMX_REPO_FAMILY_UNKNOWN = 0,
    DMX_REPO_FAMILY_HTDEMUCS = 1,          /* demucs.htdemucs.HTDemucs, Hybrid Transformer (v4) */
    DMX_REPO_FAMILY_HDEMUCS = 2,           /* demucs.hdemucs.HDemucs, Hybrid Demucs (v3) */
    DMX_REPO_FAMILY_DEMUCS = 3,            /* demucs.demucs.Demucs, time domain (v2) */
    DMX_REPO_FAMILY_BS_ROFORMER = 4,       /* MSST's BSRoformer (an MSST config + .ckpt) */
    DMX_REPO_FAMILY_MEL_BAND_ROFORMER = 5, /* MSST's MelBandRoformer */
} dmx_repo_family;

/* "HTDemucs", "HDemucs", "Demucs", "BSRoformer", "MelBandRoformer" or
 * "unknown" (static). */
const char *dmx_repo_family_name(dmx_repo_family f);
/* Family of a checkpoint class name, with or without its module
 * ("HDemucs", "demucs.hdemucs.HDemucs"); UNKNOWN for anything else. */
dmx_repo_family dmx_repo_family_of_class(const char *klass);

#define DMX_REPO_MAX_SOURCES 8
#define DMX_REPO_MAX_MEMBERS 4

/* One checkpoint of upstream's remote repository (demucs/remote/files.txt). */
typedef struct dmx_repo_file {
    const char *sig;      /* "955717e8" */
    const char *file;     /* "955717e8-8726e21a.th" */
    const char *checksum; /* "8726e21a": lowercase hex prefix of the file's sha256 */
    const char *root;     /* folder under upstream's root URL: "hybrid_transformer/" */
    dmx_repo_family family;
    int32_t quantized;    /* 1: DiffQ-quantized state (mdx_q, mdx_extra_q) */
    int64_t approx_bytes; /* approximate size for messages; 0 when not known */
    int32_t n_sources;
    const char *sources[DMX_REPO_MAX_SOURCES]; /* (n_sources) in the checkpoint's order */
} dmx_repo_file;

/* One name upstream's `demucs -n` accepts (a demucs/remote/NAME.yaml bag). */
typedef struct dmx_repo_model {
    const char *name;        /* "htdemucs" */
    const char *description; /* one sentence for lists and the web page */
    int32_t n_members;
    const char *members[DMX_REPO_MAX_MEMBERS]; /* signatures in YAML order (repeats allowed) */
    const char *yaml; /* upstream's NAME.yaml content (models, weights, segment) */
    /* 1 when the YAML is one member with no weights and no segment: loading
     * that member's checkpoint is the same model (htdemucs, htdemucs_6s), so
     * no YAML file is needed in the cache. */
    int32_t direct;
} dmx_repo_model;

/* The known models, in upstream's documentation order. */
size_t dmx_repo_n_models(void);
const dmx_repo_model *dmx_repo_model_at(size_t i);           /* NULL past the end */
const dmx_repo_model *dmx_repo_model_find(const char *name); /* exact name or NULL */

/* The known checkpoint files (files.txt order). */
size_t dmx_repo_n_files(void);
const dmx_repo_file *dmx_repo_file_at(size_t i);
/* By signature ("955717e8") or by full file name ("955717e8-8726e21a.th"). */
const dmx_repo_file *dmx_repo_file_find(const char *sig_or_file);
/* Member i of a known model (never NULL for i < n_members). */
const dmx_repo_file *dmx_repo_model_member(const dmx_repo_model *m, int32_t i);
/* Sources of a known model (those of its first member: every member of an
 * upstream bag has the same). */
int32_t dmx_repo_model_n_sources(const dmx_repo_model *m);
const char *dmx_repo_model_source(const dmx_repo_model *m, int32_t i);
/* Families the model's members need, as "HTDemucs" or "Demucs+HDemucs"
 * (each family once, in member order) into buf (always NUL-terminated). */
void dmx_repo_model_families(const dmx_repo_model *m, char *buf, size_t n);
/* Sum of the distinct member files' approximate sizes; 0 if any is unknown. */
int64_t dmx_repo_model_approx_bytes(const dmx_repo_model *m);

/* ---- RoFormer checkpoints (MSST configs) --------------------------------------- */

/* One published file of a RoFormer model. Checksums are only those a public
 * source states (docs/MODELS.md names each source); a file without one is
 * checked another way (exact size when known; the config is parsed and
 * must describe the table's family and stems; the checkpoint must load with
 * it). */
typedef struct dmx_repo_remote {
    const char *url;    /* where its publisher serves it */
    const char *sha256; /* full lowercase hex, or NULL when no public source states one */
    const char *md5;    /* full lowercase hex, or NULL */
    int64_t bytes;      /* exact size, or 0 when not known */
} dmx_repo_remote;

/* A community RoFormer checkpoint: an MSST config and its .ckpt, cached as
 * NAME.yaml + NAME.ckpt (the MSST rule of dmx_repo_config_checkpoint). */
typedef struct dmx_repo_msst_model {
    const char *name;        /* "model_bs_roformer_ep_317_sdr_12.9755" */
    const char *description; /* one sentence: author, stems, score */
    dmx_repo_family family;  /* BS_ROFORMER or MEL_BAND_ROFORMER */
    int32_t n_sources;       /* 0 when the config was not available to check */
    const char *sources[DMX_REPO_MAX_SOURCES];
    dmx_repo_remote config, checkpoint;
} dmx_repo_msst_model;

size_t dmx_repo_n_msst(void);
const dmx_repo_msst_model *dmx_repo_msst_at(size_t i);           /* NULL past the end */
const dmx_repo_msst_model *dmx_repo_msst_find(const char *name); /* exact name or NULL */

/* Where to download one of its files into *out: the table's URL, or with
 * $DEMIX_MODEL_URL set, that root + "NAME.yaml" / "NAME.ckpt" (a mirror
 * serves the cache's own file names). `checkpoint` picks the file. */
dmx_status dmx_repo_msst_url(const dmx_repo_msst_model *m, int checkpoint, char **out);

/* Checks a downloaded config: it must parse as an MSST config
 * (DMX_ERR_MODEL / DMX_ERR_UNSUPPORTED / DMX_ERR_CORRUPT as the loader says)
 * and describe m's family and (when the table lists them) stems, in order
 * (DMX_ERR_MODEL naming the difference). */
dmx_status dmx_repo_msst_check_config(const dmx_repo_msst_model *m, const char *yaml_path);

/* ---- naming rule ------------------------------------------------------------ */

typedef enum dmx_repo_kind {
    DMX_REPO_CHECKPOINT = 1, /* SIG.th or SIG-CHECKSUM.th */
    DMX_REPO_BAG = 2,        /* NAME.yaml */
} dmx_repo_kind;

#define DMX_REPO_NAME_MAX 200

/* What a file name means under the naming rule. */
typedef struct dmx_repo_entry {
    dmx_repo_kind kind;
    char name[DMX_REPO_NAME_MAX + 1]; /* signature or bag name */
    char checksum[65];                /* "" when the name carries none */
} dmx_repo_entry;

/* Classifies a file name (no directory part). DMX_OK: a model file, *out
 * filled. DMX_ERR_NOT_FOUND: not a model file (other suffix, hidden file).
 * DMX_ERR_INVALID_ARG: a `.th` whose name breaks the rule (uppercase or
 * non-hex checksum, a second '-', empty signature, too long); the message
 * says why and out->name still holds the signature before the first '-'. */
dmx_status dmx_repo_parse_name(const char *file, dmx_repo_entry *out);

/* 1 if `name` may be looked up: 1..DMX_REPO_NAME_MAX bytes, no '/', '\\' or
 * control characters, not starting with '.'. Every lookup below checks it. */
int dmx_repo_name_valid(const char *name);

/* ---- places ------------------------------------------------------------------- */

/* The cache folder (see the top of this file) into *out. DMX_ERR_NOMEM only. */
dmx_status dmx_repo_cache_dir(char **out);

/* Where upstream publishes `file` into *out: $DEMIX_MODEL_URL (default
 * "https://dl.fbaipublicfiles.com/demucs/", upstream's ROOT_URL; a '/' is
 * added if missing) + the file's root folder for a known file + the name.
 * A name that is not a known file gets no root folder. */
dmx_status dmx_repo_file_url(const char *file, char **out);

/* ---- folders ---------------------------------------------------------------- */

typedef struct dmx_repo_item {
    char *file;           /* file name in the folder */
    dmx_repo_entry entry; /* its meaning (for an unusable name: see problem) */
    char *problem;        /* NULL, or why the file cannot be used (bad name, duplicate) */
} dmx_repo_item;

typedef struct dmx_repo_list {
    size_t n;
    dmx_repo_item *items; /* (n) sorted by file name */
} dmx_repo_list;

/* Lists the model files of `dir` (.th and .yaml; see the naming rule).
 * Checkpoints sharing a signature all get a `problem`. DMX_ERR_NOT_FOUND /
 * DMX_ERR_IO when the folder cannot be read. */
dmx_status dmx_repo_scan(const char *dir, dmx_repo_list **out);
void dmx_repo_list_free(dmx_repo_list *l);

/* Result of a lookup. */
typedef struct dmx_repo_hit {
    char *path; /* the file dmx_model_load() gets: a .th or a bag .yaml */
    char *file; /* its name within its folder */
    dmx_repo_kind kind;
    char *checksum;              /* the hex in the file name, "" when none (always "" for a bag) */
    const dmx_repo_model *known; /* the upstream model of that name, or NULL */
    const dmx_repo_msst_model *msst; /* the RoFormer checkpoint of that name, or NULL */
} dmx_repo_hit;

/* Looks `name` up in folder `dir` as upstream's LocalRepo then BagOnlyRepo
 * do: SIG.th / SIG-CHECKSUM.th, then NAME.yaml. On DMX_OK *out is filled
 * (release with dmx_repo_hit_clear); on failure it is zeroed.
 * DMX_ERR_NOT_FOUND: no such model; DMX_ERR_INVALID_ARG: invalid name, two
 * checkpoints for it, or a file for it whose name breaks the rule. */
dmx_status dmx_repo_find(const char *dir, const char *name, dmx_repo_hit *out);
/* The same for checkpoints only (how a bag's members are found). */
dmx_status dmx_repo_find_checkpoint(const char *dir, const char *sig, dmx_repo_hit *out);

/* What `demix separate -n NAME [--repo DIR]` loads: with repo != NULL,
 * dmx_repo_find(repo, name); else in the cache: dmx_repo_find(cache, name),
 * then a known model whose files are there (a `direct` model resolves to its
 * member's checkpoint; any other needs NAME.yaml in the cache, which
 * `demix models fetch` writes). DMX_ERR_NOT_FOUND when it is not there
 * (for a known model the message says to run `demix models fetch NAME`);
 * out->known (out->msst) is set even then when NAME is a known model (a
 * known RoFormer checkpoint, found in the cache as NAME.yaml + NAME.ckpt). */
dmx_status dmx_repo_resolve(const char *repo, const char *name, dmx_repo_hit *out);

void dmx_repo_hit_clear(dmx_repo_hit *h);

/* Whether the YAML file at `yaml_path` is an MSST config (a top-level
 * `model:` section) rather than a bag: DMX_OK with *ckpt = its checkpoint's
 * path (NAME.yaml -> NAME.ckpt beside it, malloc'ed, caller frees; not
 * checked to exist), or DMX_OK with *ckpt = NULL for any other YAML.
 * DMX_ERR_NOT_FOUND / DMX_ERR_IO / DMX_ERR_CORRUPT when it cannot be read or
 * parsed. dmx_model_load() and dmx_repo_probe() decide with it. */
dmx_status dmx_repo_config_checkpoint(const char *yaml_path, char **ckpt);

/* 1 when `path` names an MSST config (a .yaml/.yml file that
 * dmx_repo_config_checkpoint takes for one: a RoFormer model), else 0 (any
 * other file, or one that cannot be read). Never fails. */
int dmx_repo_is_msst_config(const char *path);

/* ---- what a checkpoint file holds ------------------------------------------- */

/* Reads a checkpoint's class and `sources` kwarg without loading its
 * tensors (the archive is still checked entry by entry). */
typedef struct dmx_repo_probe_info {
    dmx_repo_family family;
    char klass[128]; /* class name, e.g. "HTDemucs" */
    int32_t n_sources;
    char sources[DMX_REPO_MAX_SOURCES][64]; /* (n_sources) */
    char families[32]; /* as dmx_repo_model_families: "HDemucs", "Demucs+HDemucs" */
} dmx_repo_probe_info;

/* For a bag YAML, every member's checkpoint is probed: `families` names each
 * member's family once (member order), the rest is the first member's. For
 * an MSST config, the config gives the family and the stems (its checkpoint
 * must exist, DMX_ERR_NOT_FOUND otherwise). Statuses as dmx_model_load's for
 * an unreadable or damaged file. */
dmx_status dmx_repo_probe(const char *path, dmx_repo_probe_info *out);

#ifdef __cplusplus
}
#endif

#endif
