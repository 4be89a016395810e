/*
 * repo.c - the model registry (see include/demix/repo.h): the table of
 * upstream's published models and files, the naming rule, the cache folder
 * rule, folder scans, name resolution and a tensor-free checkpoint probe.
 *
 * The table is upstream's demucs/remote/files.txt (signature, checksum,
 * folder) and remote/NAME.yaml (members, weights, segment), plus what demix
 * needs to show about each file: its class family and sources (the classes
 * are those documented with the zoo fixtures: the mdx bags mix time-domain
 * Demucs and HDemucs members; every pre-v4 model has upstream's 4 sources).
 *
 * Resolution is a fresh scan of the folder on every call (readdir + stat),
 * so files added or removed while a server runs are seen at once, and two
 * processes never disagree about a stale index.
 */
#define _GNU_SOURCE
#include "demix/repo.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bagyaml.h"
#include "error.h"
#include "pickle.h"
#include "roformer_config.h"
#include "yamltree.h"
#include "zip.h"

#define ROOT_URL "https://dl.fbaipublicfiles.com/demucs/"
#define MDX      "mdx_final/"
#define HT       "hybrid_transformer/"
#define S4 \
    4, { "drums", "bass", "other", "vocals" }
#define S6 \
    6, { "drums", "bass", "other", "vocals", "guitar", "piano" }
#define F_HT DMX_REPO_FAMILY_HTDEMUCS
#define F_HD DMX_REPO_FAMILY_HDEMUCS
#define F_D  DMX_REPO_FAMILY_DEMUCS

/* ---- the table --------------------------------------------------------------- */

/* files.txt, in its order. Sizes: the published byte sizes of the v3 and
 * mdx files (documented with the zoo fixtures), round estimates for the
 * HTDemucs files, 0 where not known. */
static const dmx_repo_file FILES[] = {
    {"0d19c1c6", "0d19c1c6-0f06f20e.th", "0f06f20e", MDX, F_D, 0, 178048329, S4},
    {"5d2d6c55", "5d2d6c55-db83574e.th", "db83574e", MDX, F_HD, 0, 167391595, S4},
    {"7d865c68", "7d865c68-3d5dd56b.th", "3d5dd56b", MDX, F_HD, 0, 167918783, S4},
    {"7ecf8ec1", "7ecf8ec1-70f50cc9.th", "70f50cc9", MDX, F_D, 0, 178048329, S4},
    {"a1d90b5c", "a1d90b5c-ae9d2452.th", "ae9d2452", MDX, F_HD, 0, 167391595, S4},
    {"c511e2ab", "c511e2ab-fe698775.th", "fe698775", MDX, F_HD, 0, 167334095, S4},
    {"cfa93e08", "cfa93e08-61801ae1.th", "61801ae1", MDX, F_HD, 0, 167399275, S4},
    {"e51eebcc", "e51eebcc-c1b80bdd.th", "c1b80bdd", MDX, F_HD, 0, 167399275, S4},
    {"6b9c2ca1", "6b9c2ca1-3fd82607.th", "3fd82607", MDX, F_D, 1, 0, S4},
    {"b72baf4e", "b72baf4e-8778635e.th", "8778635e", MDX, F_D, 1, 0, S4},
    {"42e558d4", "42e558d4-196e0e1b.th", "196e0e1b", MDX, F_HD, 1, 0, S4},
    {"305bc58f", "305bc58f-18378783.th", "18378783", MDX, F_HD, 1, 0, S4},
    {"14fc6a69", "14fc6a69-a89dd0ee.th", "a89dd0ee", MDX, F_HD, 1, 0, S4},
    {"464b36d7", "464b36d7-e5a9386e.th", "e5a9386e", MDX, F_HD, 1, 0, S4},
    {"7fd6ef75", "7fd6ef75-a905dd85.th", "a905dd85", MDX, F_HD, 1, 0, S4},
    {"83fc094f", "83fc094f-4a16d450.th", "4a16d450", MDX, F_HD, 1, 0, S4},
    {"1ef250f1", "1ef250f1-592467ce.th", "592467ce", MDX, F_D, 0, 0, S4},
    {"902315c2", "902315c2-b39ce9c9.th", "b39ce9c9", MDX, F_HD, 0, 0, S4},
    {"9a6b4851", "9a6b4851-03af0aa6.th", "03af0aa6", MDX, F_D, 0, 0, S4},
    {"fa0cb7f9", "fa0cb7f9-100d8bf4.th", "100d8bf4", MDX, F_HD, 0, 0, S4},
    {"955717e8", "955717e8-8726e21a.th", "8726e21a", HT, F_HT, 0, 84000000, S4},
    {"f7e0c4bc", "f7e0c4bc-ba3fe64a.th", "ba3fe64a", HT, F_HT, 0, 84000000, S4},
    {"d12395a8", "d12395a8-e57c48e6.th", "e57c48e6", HT, F_HT, 0, 84000000, S4},
    {"92cfc3b6", "92cfc3b6-ef3bcb9c.th", "ef3bcb9c", HT, F_HT, 0, 84000000, S4},
    {"04573f0d", "04573f0d-f3cf25b2.th", "f3cf25b2", HT, F_HT, 0, 84000000, S4},
    {"75fc33f5", "75fc33f5-1941ce65.th", "1941ce65", HT, F_HD, 0, 167407275, S4},
    {"5c90dfd2", "5c90dfd2-34c22ccb.th", "34c22ccb", HT, F_HT, 0, 55000000, S6},
};
#define N_FILES (sizeof FILES / sizeof FILES[0])

#define W_MDX                                                                                    \
    "weights: [\n  [1., 1., 0., 0.],\n  [0., 1., 0., 0.],\n  [1., 0., 1., 1.],\n  [1., 0., 1., " \
    "1.],\n]\n"

/* remote/NAME.yaml, in the order of upstream's README. */
static const dmx_repo_model MODELS[] = {
    {"htdemucs",
     "Hybrid Transformer Demucs (v4), 4 sources: upstream's default.",
     1,
     {"955717e8"},
     "models: ['955717e8']\n",
     1},
    {"htdemucs_ft",
     "Bag of 4 fine-tuned htdemucs, one per source: better, 4x slower.",
     4,
     {"f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"},
     "models: ['f7e0c4bc', 'd12395a8', '92cfc3b6', '04573f0d']\n"
     "weights: [\n  [1., 0., 0., 0.],\n  [0., 1., 0., 0.],\n  [0., 0., 1., 0.],\n  [0., 0., 0., "
     "1.],\n]\n",
     0},
    {"htdemucs_6s",
     "htdemucs with 6 sources: adds guitar and piano (piano is weak).",
     1,
     {"5c90dfd2"},
     "models: ['5c90dfd2']\n",
     1},
    {"hdemucs_mmi",
     "Hybrid Demucs (v3) retrained on MusDB + 800 songs.",
     1,
     {"75fc33f5"},
     "models: ['75fc33f5']\nsegment: 44\n",
     0},
    {"mdx",
     "Bag of 2 time-domain Demucs and 2 Hybrid Demucs, MDX 2021 track A (MusDB only).",
     4,
     {"0d19c1c6", "7ecf8ec1", "c511e2ab", "7d865c68"},
     "models: ['0d19c1c6', '7ecf8ec1', 'c511e2ab', '7d865c68']\n" W_MDX "segment: 44\n",
     0},
    {"mdx_extra",
     "Bag of 4 Hybrid Demucs, MDX 2021 track B (trained with extra data).",
     4,
     {"e51eebcc", "a1d90b5c", "5d2d6c55", "cfa93e08"},
     "models: ['e51eebcc', 'a1d90b5c', '5d2d6c55', 'cfa93e08']\nsegment: 44\n",
     0},
    {"mdx_q",
     "mdx with DiffQ-quantized weights: smaller download, slightly worse.",
     4,
     {"6b9c2ca1", "b72baf4e", "42e558d4", "305bc58f"},
     "models: ['6b9c2ca1', 'b72baf4e', '42e558d4', '305bc58f']\n" W_MDX "segment: 44\n",
     0},
    {"mdx_extra_q",
     "mdx_extra with DiffQ-quantized weights: smaller download, slightly worse.",
     4,
     {"83fc094f", "464b36d7", "14fc6a69", "7fd6ef75"},
     "models: ['83fc094f', '464b36d7', '14fc6a69', '7fd6ef75']\nsegment: 44\n",
     0},
    {"repro_mdx_a",
     "Reproduction of the MDX 2021 track A bag (2 Demucs + 2 Hybrid Demucs).",
     4,
     {"9a6b4851", "1ef250f1", "fa0cb7f9", "902315c2"},
     "models: ['9a6b4851', '1ef250f1', 'fa0cb7f9', '902315c2']\nsegment: 44\n",
     0},
    {"repro_mdx_a_hybrid_only",
     "repro_mdx_a with its 2 Hybrid Demucs members only.",
     4,
     {"fa0cb7f9", "902315c2", "fa0cb7f9", "902315c2"},
     "models: ['fa0cb7f9', '902315c2', 'fa0cb7f9', '902315c2']\nsegment: 44\n",
     0},
    {"repro_mdx_a_time_only",
     "repro_mdx_a with its 2 time-domain Demucs members only.",
     4,
     {"9a6b4851", "9a6b4851", "1ef250f1", "1ef250f1"},
     "models: ['9a6b4851', '9a6b4851', '1ef250f1', '1ef250f1']\nsegment: 44\n",
     0},
};
#define N_MODELS (sizeof MODELS / sizeof MODELS[0])

/* Community RoFormer checkpoints (docs/MODELS.md: where each URL and
 * checksum comes from). Configs from MSST's repository are pinned to the
 * commit the golden fixtures use, and their sha256 and size are those of
 * that commit's files. Checkpoint checksums are only those a public source
 * states; NULL where none does. */
#define MSST_RAW                                                                  \
    "https://raw.githubusercontent.com/ZFTurbo/Music-Source-Separation-Training/" \
    "ccc011abf7f89dd7922bb2888d48493b575c0289/configs/"
#define UVR_REL "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
#define F_BS    DMX_REPO_FAMILY_BS_ROFORMER
#define F_MEL   DMX_REPO_FAMILY_MEL_BAND_ROFORMER

static const dmx_repo_msst_model MSST[] = {
    {"model_bs_roformer_ep_317_sdr_12.9755",
     "viperx's BS-RoFormer (UVR 'BS-Roformer-Viperx-1297'): vocals, SDR 12.98 on its validation "
     "set.",
     F_BS,
     1,
     {"vocals"},
     {MSST_RAW "viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml",
      "42e5635ceab7287b83d9591c9880966f0b61cff26a0a40a29d236bacb32e5f2c", NULL, 1881},
     {UVR_REL "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
      "5b84f37e8d444c8cb30c79d77f613a41c05868ff9c9ac6c7049c00aefae115aa", NULL, 0}},
    {"model_bs_roformer_ep_368_sdr_12.9628",
     "viperx's BS-RoFormer (UVR 'BS-Roformer-Viperx-1296'): vocals, SDR 12.96.",
     F_BS,
     0,
     {NULL},
     {"https://raw.githubusercontent.com/TRvlvr/application_data/main/mdx_model_data/mdx_c_configs/"
      "model_bs_roformer_ep_368_sdr_12.9628.yaml",
      NULL, NULL, 0},
     {UVR_REL "model_bs_roformer_ep_368_sdr_12.9628.ckpt", NULL, "40780dd7fb1ef17d368a2499ce07a55e",
      639317465}},
    {"vocals_mel_band_roformer_kj",
     "Kimberley Jensen's Mel-Band RoFormer: vocals, SDR 10.98 on Multisong.",
     F_MEL,
     1,
     {"vocals"},
     {MSST_RAW "KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml",
      "f63f38eb1e6e40a7db0dade714a5ae257555dd8748f4e774eae8679275a81926", NULL, 1721},
     {"https://huggingface.co/KimberleyJSN/melbandroformer/resolve/main/MelBandRoformer.ckpt",
      "87201f4d31afb5bc79993230fc49446918425574db48c01c405e44f365c7559e", NULL, 913106900}},
    {"model_mel_band_roformer_ep_3005_sdr_11.4360",
     "viperx's Mel-Band RoFormer: vocals, SDR 9.67 on Multisong.",
     F_MEL,
     1,
     {"vocals"},
     {MSST_RAW "viperx/model_mel_band_roformer_ep_3005_sdr_11.4360.yaml",
      "4e0a24c9078b007caeea94efaad78ed4f29d4f44a80a6aefc4295bff09490314", NULL, 1404},
     {UVR_REL "model_mel_band_roformer_ep_3005_sdr_11.4360.ckpt",
      "21b9d0958e35b8ebfbe2afe69bbd5444e5ffe2f5d80ae0d583b833d2f3c0d139", NULL, 0}},
    {"model_bs_roformer_ep_937_sdr_10.5309",
     "viperx's BS-RoFormer for the accompaniment: other, SDR 6.85 on Multisong.",
     F_BS,
     1,
     {"other"},
     {MSST_RAW "viperx/model_bs_roformer_ep_937_sdr_10.5309.yaml",
      "c9ff80f71867e9b7df08722c3a08a564c68cffcfe1c2c32a004b8153456f8951", NULL, 2351},
     {UVR_REL "model_bs_roformer_ep_937_sdr_10.5309.ckpt", NULL, NULL, 0}},
    {"model_bs_roformer_ep_17_sdr_9.6568",
     "MSST's 4-stem BS-RoFormer (MUSDB18): SDR 9.65 on MUSDB18 test.",
     F_BS,
     4,
     {"drums", "bass", "other", "vocals"},
     {"https://github.com/ZFTurbo/Music-Source-Separation-Training/releases/download/v1.0.12/"
      "config_bs_roformer_384_8_2_485100.yaml",
      NULL, NULL, 0},
     {"https://github.com/ZFTurbo/Music-Source-Separation-Training/releases/download/v1.0.12/"
      "model_bs_roformer_ep_17_sdr_9.6568.ckpt",
      NULL, NULL, 0}},
};
#define N_MSST (sizeof MSST / sizeof MSST[0])

size_t dmx_repo_n_msst(void) { return N_MSST; }
const dmx_repo_msst_model *dmx_repo_msst_at(size_t i) { return i < N_MSST ? &MSST[i] : NULL; }
const dmx_repo_msst_model *dmx_repo_msst_find(const char *name) {
    for (size_t i = 0; name && i < N_MSST; i++)
        if (!strcmp(MSST[i].name, name)) return &MSST[i];
    return NULL;
}

const char *dmx_repo_family_name(dmx_repo_family f) {
    switch (f) {
        case DMX_REPO_FAMILY_HTDEMUCS: return "HTDemucs";
        case DMX_REPO_FAMILY_HDEMUCS: return "HDemucs";
        case DMX_REPO_FAMILY_DEMUCS: return "Demucs";
        case DMX_REPO_FAMILY_BS_ROFORMER: return "BSRoformer";
        case DMX_REPO_FAMILY_MEL_BAND_ROFORMER: return "MelBandRoformer";
        default: return "unknown";
    }
}

dmx_repo_family dmx_repo_family_of_class(const char *klass) {
    if (!klass) return DMX_REPO_FAMILY_UNKNOWN;
    const char *dot = strrchr(klass, '.');
    const char *n = dot ? dot + 1 : klass;
    if (!strcmp(n, "HTDemucs")) return DMX_REPO_FAMILY_HTDEMUCS;
    if (!strcmp(n, "HDemucs")) return DMX_REPO_FAMILY_HDEMUCS;
    if (!strcmp(n, "Demucs")) return DMX_REPO_FAMILY_DEMUCS;
    if (!strcmp(n, "BSRoformer")) return DMX_REPO_FAMILY_BS_ROFORMER;
    if (!strcmp(n, "MelBandRoformer")) return DMX_REPO_FAMILY_MEL_BAND_ROFORMER;
    return DMX_REPO_FAMILY_UNKNOWN;
}

size_t dmx_repo_n_models(void) { return N_MODELS; }
const dmx_repo_model *dmx_repo_model_at(size_t i) { return i < N_MODELS ? &MODELS[i] : NULL; }
const dmx_repo_model *dmx_repo_model_find(const char *name) {
    for (size_t i = 0; name && i < N_MODELS; i++)
        if (!strcmp(MODELS[i].name, name)) return &MODELS[i];
    return NULL;
}

size_t dmx_repo_n_files(void) { return N_FILES; }
const dmx_repo_file *dmx_repo_file_at(size_t i) { return i < N_FILES ? &FILES[i] : NULL; }
const dmx_repo_file *dmx_repo_file_find(const char *s) {
    for (size_t i = 0; s && i < N_FILES; i++)
        if (!strcmp(FILES[i].sig, s) || !strcmp(FILES[i].file, s)) return &FILES[i];
    return NULL;
}

const dmx_repo_file *dmx_repo_model_member(const dmx_repo_model *m, int32_t i) {
    if (!m || i < 0 || i >= m->n_members) return NULL;
    return dmx_repo_file_find(m->members[i]);
}

int32_t dmx_repo_model_n_sources(const dmx_repo_model *m) {
    const dmx_repo_file *f = dmx_repo_model_member(m, 0);
    return f ? f->n_sources : 0;
}

const char *dmx_repo_model_source(const dmx_repo_model *m, int32_t i) {
    const dmx_repo_file *f = dmx_repo_model_member(m, 0);
    return f && i >= 0 && i < f->n_sources ? f->sources[i] : NULL;
}

void dmx_repo_model_families(const dmx_repo_model *m, char *buf, size_t n) {
    if (!n) return;
    buf[0] = '\0';
    unsigned seen = 0;
    for (int32_t i = 0; m && i < m->n_members; i++) {
        const dmx_repo_file *f = dmx_repo_model_member(m, i);
        unsigned bit = 1u << (f ? f->family : 0);
        if (seen & bit) continue;
        seen |= bit;
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, "%s%s", l ? "+" : "", dmx_repo_family_name(f ? f->family : 0));
    }
}

int64_t dmx_repo_model_approx_bytes(const dmx_repo_model *m) {
    int64_t total = 0;
    for (int32_t i = 0; m && i < m->n_members; i++) {
        int dup = 0;
        for (int32_t j = 0; j < i; j++) dup |= !strcmp(m->members[i], m->members[j]);
        if (dup) continue;
        const dmx_repo_file *f = dmx_repo_model_member(m, i);
        if (!f || !f->approx_bytes) return 0;
        total += f->approx_bytes;
    }
    return total;
}

/* ---- naming rule -------------------------------------------------------------- */

int dmx_repo_name_valid(const char *name) {
    if (!name || !*name || name[0] == '.') return 0;
    size_t n = strlen(name);
    if (n > DMX_REPO_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\') return 0;
    }
    return 1;
}

static int ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

dmx_status dmx_repo_parse_name(const char *file, dmx_repo_entry *out) {
    if (!file || !out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_parse_name: NULL argument");
    memset(out, 0, sizeof *out);
    size_t n = strlen(file);
    if (file[0] == '.' || strchr(file, '/'))
        return dmx__fail(DMX_ERR_NOT_FOUND, "%s: not a model file name", file);
    if (ends_with(file, n, ".yaml")) {
        size_t stem = n - 5;
        if (stem == 0 || stem > DMX_REPO_NAME_MAX)
            return dmx__fail(DMX_ERR_NOT_FOUND, "%s: not a bag file name", file);
        out->kind = DMX_REPO_BAG;
        memcpy(out->name, file, stem);
        return DMX_OK;
    }
    if (!ends_with(file, n, ".th"))
        return dmx__fail(DMX_ERR_NOT_FOUND, "%s: not a .th or .yaml file", file);
    size_t stem = n - 3;
    out->kind = DMX_REPO_CHECKPOINT;
    const char *dash = memchr(file, '-', stem);
    size_t sl = dash ? (size_t)(dash - file) : stem;
    memcpy(out->name, file, sl < DMX_REPO_NAME_MAX ? sl : DMX_REPO_NAME_MAX);
    if (sl == 0) return dmx__fail(DMX_ERR_INVALID_ARG, "%s: empty signature before '-'", file);
    if (sl > DMX_REPO_NAME_MAX)
        return dmx__fail(DMX_ERR_INVALID_ARG, "%s: signature longer than %d bytes", file,
                         DMX_REPO_NAME_MAX);
    if (!dash) return DMX_OK;
    const char *c = dash + 1;
    size_t cl = stem - sl - 1;
    if (memchr(c, '-', cl))
        return dmx__fail(DMX_ERR_INVALID_ARG,
                         "%s: more than one '-' (a checkpoint is SIG.th or SIG-CHECKSUM.th; "
                         "rename it, e.g. without '-' in SIG)",
                         file);
    if (cl == 0 || cl > 64)
        return dmx__fail(DMX_ERR_INVALID_ARG,
                         "%s: the checksum after '-' must be 1 to 64 hex digits", file);
    for (size_t i = 0; i < cl; i++) {
        char h = c[i];
        if ((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f')) continue;
        if (h >= 'A' && h <= 'F')
            return dmx__fail(
                DMX_ERR_INVALID_ARG,
                "%s: the checksum after '-' has uppercase digits; it is compared with the "
                "lowercase sha256, so write it in lowercase",
                file);
        return dmx__fail(DMX_ERR_INVALID_ARG,
                         "%s: '%.*s' after '-' is not a hex checksum (a checkpoint is SIG.th or "
                         "SIG-CHECKSUM.th, CHECKSUM a prefix of its sha256)",
                         file, (int)cl, c);
    }
    memcpy(out->checksum, c, cl);
    return DMX_OK;
}

/* ---- places -------------------------------------------------------------------- */

static char *join(const char *dir, const char *file) {
    size_t dl = strlen(dir);
    char *p = NULL;
    if (asprintf(&p, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", file) < 0) return NULL;
    return p;
}

dmx_status dmx_repo_cache_dir(char **out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_cache_dir: out is NULL");
    const char *d = getenv("DEMIX_MODELS");
    char *p = NULL;
    if (d && *d)
        p = strdup(d);
    else if ((d = getenv("XDG_CACHE_HOME")) && d[0] == '/')
        p = join(d, "demix");
    else if ((d = getenv("HOME")) && *d)
        p = join(d, ".cache/demix");
    else
        p = strdup(".cache/demix");
    *out = p;
    return p ? DMX_OK : dmx__fail(DMX_ERR_NOMEM, "out of memory");
}

dmx_status dmx_repo_file_url(const char *file, char **out) {
    if (!file || !out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_file_url: NULL argument");
    const char *base = getenv("DEMIX_MODEL_URL");
    if (!base || !*base) base = ROOT_URL;
    size_t bl = strlen(base);
    const dmx_repo_file *f = dmx_repo_file_find(file);
    const char *root = f && !strcmp(f->file, file) ? f->root : "";
    if (asprintf(out, "%s%s%s%s", base, base[bl - 1] == '/' ? "" : "/", root, file) < 0) {
        *out = NULL;
        return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    }
    return DMX_OK;
}

dmx_status dmx_repo_msst_url(const dmx_repo_msst_model *m, int checkpoint, char **out) {
    if (!m || !out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_msst_url: NULL argument");
    const char *base = getenv("DEMIX_MODEL_URL");
    int r;
    if (base && *base) {
        size_t bl = strlen(base);
        r = asprintf(out, "%s%s%s.%s", base, base[bl - 1] == '/' ? "" : "/", m->name,
                     checkpoint ? "ckpt" : "yaml");
    } else {
        r = asprintf(out, "%s", checkpoint ? m->checkpoint.url : m->config.url);
    }
    if (r < 0) {
        *out = NULL;
        return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    }
    return DMX_OK;
}

dmx_status dmx_repo_msst_check_config(const dmx_repo_msst_model *m, const char *yaml_path) {
    if (!m || !yaml_path)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_msst_check_config: NULL argument");
    dmx__rf_config *cfg = malloc(sizeof *cfg);
    if (!cfg) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    dmx_status st = dmx__rf_config_load(yaml_path, cfg);
    if (st == DMX_OK) {
        dmx_repo_family f = cfg->kind == DMX__RF_BS ? DMX_REPO_FAMILY_BS_ROFORMER
                                                    : DMX_REPO_FAMILY_MEL_BAND_ROFORMER;
        if (f != m->family)
            st = dmx__fail(DMX_ERR_MODEL, "%s: a %s config, but %s is a %s model", yaml_path,
                           dmx_repo_family_name(f), m->name, dmx_repo_family_name(m->family));
    }
    if (st == DMX_OK && m->n_sources > 0) {
        int same = cfg->n_stem_names == m->n_sources;
        for (int i = 0; same && i < m->n_sources; i++) same = !strcmp(cfg->stems[i], m->sources[i]);
        if (!same) {
            char got[256] = "", want[256] = "";
            for (int i = 0; i < cfg->n_stem_names; i++) {
                size_t l = strlen(got);
                snprintf(got + l, sizeof got - l, "%s%s", i ? ", " : "", cfg->stems[i]);
            }
            for (int i = 0; i < m->n_sources; i++) {
                size_t l = strlen(want);
                snprintf(want + l, sizeof want - l, "%s%s", i ? ", " : "", m->sources[i]);
            }
            st = dmx__fail(DMX_ERR_MODEL, "%s: its stems are (%s), but %s has (%s)", yaml_path, got,
                           m->name, want);
        }
    }
    free(cfg);
    return st;
}

/* ---- folders --------------------------------------------------------------- */

void dmx_repo_list_free(dmx_repo_list *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].file);
        free(l->items[i].problem);
    }
    free(l->items);
    free(l);
}

static int cmp_item(const void *a, const void *b) {
    return strcmp(((const dmx_repo_item *)a)->file, ((const dmx_repo_item *)b)->file);
}

dmx_status dmx_repo_scan(const char *dir, dmx_repo_list **out) {
    if (!dir || !out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_scan: NULL argument");
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        return dmx__fail(e == ENOENT || e == ENOTDIR ? DMX_ERR_NOT_FOUND : DMX_ERR_IO,
                         "%s: cannot list: %s", dir, strerror(e));
    }
    dmx_repo_list *l = calloc(1, sizeof *l);
    size_t cap = 0;
    dmx_status st = l ? DMX_OK : dmx__fail(DMX_ERR_NOMEM, "out of memory");
    struct dirent *e;
    while (st == DMX_OK && (e = readdir(d))) {
        dmx_repo_entry en;
        dmx_status ps = dmx_repo_parse_name(e->d_name, &en);
        if (ps == DMX_ERR_NOT_FOUND) continue;
        char *p = join(dir, e->d_name);
        struct stat sb;
        /* Files, and FIFOs: a checkpoint that arrives slowly through a pipe
         * (the service's slow-load test uses one) is still a model file. */
        int reg = p && stat(p, &sb) == 0 && (S_ISREG(sb.st_mode) || S_ISFIFO(sb.st_mode));
        free(p);
        if (!reg) continue;
        if (l->n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            dmx_repo_item *ni = realloc(l->items, nc * sizeof *ni);
            if (!ni) {
                st = dmx__fail(DMX_ERR_NOMEM, "out of memory");
                break;
            }
            l->items = ni;
            cap = nc;
        }
        dmx_repo_item *it = &l->items[l->n];
        memset(it, 0, sizeof *it);
        it->entry = en;
        it->file = strdup(e->d_name);
        if (ps != DMX_OK) it->problem = strdup(dmx_last_error());
        if (!it->file || (ps != DMX_OK && !it->problem)) {
            free(it->file);
            free(it->problem);
            st = dmx__fail(DMX_ERR_NOMEM, "out of memory");
            break;
        }
        l->n++;
    }
    closedir(d);
    if (st != DMX_OK) {
        dmx_repo_list_free(l);
        return st;
    }
    if (l->n) qsort(l->items, l->n, sizeof *l->items, cmp_item);
    /* Upstream refuses two checkpoints for one signature ("delete all but one"). */
    for (size_t i = 0; i < l->n; i++) {
        dmx_repo_item *a = &l->items[i];
        if (a->entry.kind != DMX_REPO_CHECKPOINT || a->problem) continue;
        for (size_t j = 0; j < l->n; j++) {
            dmx_repo_item *b = &l->items[j];
            if (j == i || b->entry.kind != DMX_REPO_CHECKPOINT ||
                strcmp(a->entry.name, b->entry.name))
                continue;
            const char *x = strcmp(a->file, b->file) < 0 ? a->file : b->file;
            const char *y = x == a->file ? b->file : a->file;
            if (asprintf(&a->problem,
                         "%s and %s are both checkpoints of '%s' in %s: delete all but one", x, y,
                         a->entry.name, dir) < 0)
                a->problem = NULL;
            break;
        }
    }
    *out = l;
    return DMX_OK;
}

void dmx_repo_hit_clear(dmx_repo_hit *h) {
    if (!h) return;
    free(h->path);
    free(h->file);
    free(h->checksum);
    memset(h, 0, sizeof *h);
}

static dmx_status fill_hit(const char *dir, const dmx_repo_item *it, dmx_repo_hit *out) {
    out->path = join(dir, it->file);
    out->file = strdup(it->file);
    out->checksum = strdup(it->entry.checksum);
    out->kind = it->entry.kind;
    if (!out->path || !out->file || !out->checksum) {
        dmx_repo_hit_clear(out);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    }
    return DMX_OK;
}

/* The lookup of dmx_repo_find: checkpoints first, then (if allowed) bags. */
static dmx_status find_in(const char *dir, const char *name, int bags, dmx_repo_hit *out) {
    memset(out, 0, sizeof *out);
    if (!dir) return dmx__fail(DMX_ERR_INVALID_ARG, "no model folder given");
    if (!dmx_repo_name_valid(name))
        return dmx__fail(DMX_ERR_INVALID_ARG, "'%s' is not a valid model name",
                         name ? name : "(null)");
    dmx_repo_list *l = NULL;
    dmx_status st = dmx_repo_scan(dir, &l);
    if (st != DMX_OK) return st;
    const dmx_repo_item *ck = NULL, *bag = NULL;
    for (size_t i = 0; i < l->n; i++) {
        const dmx_repo_item *it = &l->items[i];
        if (strcmp(it->entry.name, name)) continue;
        if (it->entry.kind == DMX_REPO_CHECKPOINT) {
            if (it->problem) {
                st = dmx__fail(DMX_ERR_INVALID_ARG, "model '%s': %s", name, it->problem);
                goto done;
            }
            ck = it;
        } else if (!bag) {
            bag = it;
        }
    }
    const dmx_repo_item *hit = ck ? ck : bags ? bag : NULL;
    if (hit) {
        st = fill_hit(dir, hit, out);
        if (st == DMX_OK) {
            out->known = dmx_repo_model_find(name);
            out->msst = hit->entry.kind == DMX_REPO_BAG ? dmx_repo_msst_find(name) : NULL;
        }
        goto done;
    }
    /* Say why a file that looks like the model is not it. */
    char hint[512] = "";
    for (size_t i = 0; i < l->n; i++) {
        const dmx_repo_item *it = &l->items[i];
        size_t nl = strlen(name);
        if (it->entry.kind == DMX_REPO_CHECKPOINT && strcmp(it->entry.name, name) &&
            !strncmp(it->file, name, nl) &&
            (it->file[nl] == '-' || !strcmp(it->file + nl, ".th"))) {
            if (it->problem)
                snprintf(hint, sizeof hint, " (%s)", it->problem);
            else
                snprintf(hint, sizeof hint, " (%s is read as signature '%s' with checksum '%s')",
                         it->file, it->entry.name, it->entry.checksum);
            break;
        }
    }
    if (bags)
        st = dmx__fail(DMX_ERR_NOT_FOUND,
                       "no model '%s' in %s: no %s.th, %s-<checksum>.th or %s.yaml%s", name, dir,
                       name, name, name, hint);
    else
        st = dmx__fail(DMX_ERR_NOT_FOUND, "no checkpoint '%s.th' or '%s-<checksum>.th' in %s%s",
                       name, name, dir, hint);
done:
    dmx_repo_list_free(l);
    return st;
}

dmx_status dmx_repo_find(const char *dir, const char *name, dmx_repo_hit *out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_find: out is NULL");
    return find_in(dir, name, 1, out);
}

dmx_status dmx_repo_find_checkpoint(const char *dir, const char *sig, dmx_repo_hit *out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_find_checkpoint: out is NULL");
    return find_in(dir, sig, 0, out);
}

dmx_status dmx_repo_resolve(const char *repo, const char *name, dmx_repo_hit *out) {
    if (!out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_resolve: out is NULL");
    memset(out, 0, sizeof *out);
    if (repo) return dmx_repo_find(repo, name, out);
    if (!dmx_repo_name_valid(name))
        return dmx__fail(DMX_ERR_INVALID_ARG, "'%s' is not a valid model name",
                         name ? name : "(null)");
    char *cache = NULL;
    dmx_status st = dmx_repo_cache_dir(&cache);
    if (st != DMX_OK) return st;
    st = dmx_repo_find(cache, name, out);
    const dmx_repo_model *m = dmx_repo_model_find(name);
    const dmx_repo_msst_model *rf = m ? NULL : dmx_repo_msst_find(name);
    if (st == DMX_OK && rf && out->kind != DMX_REPO_BAG) rf = NULL; /* a user's NAME.th */
    if (st == DMX_OK) out->msst = rf;
    if (st == DMX_ERR_NOT_FOUND && rf)
        st = dmx__fail(DMX_ERR_NOT_FOUND,
                       "model '%s' is not in the cache %s; 'demix models fetch %s' downloads "
                       "its config and checkpoint",
                       name, cache, name);
    if (st != DMX_ERR_NOT_FOUND || !m) goto done;

    /* An upstream name whose YAML is not in the cache: its members are. */
    int missing = 0;
    dmx_repo_hit member;
    for (int32_t i = 0; i < m->n_members; i++) {
        dmx_status ms = dmx_repo_find_checkpoint(cache, m->members[i], &member);
        if (ms == DMX_OK && m->direct) {
            *out = member;
            out->known = m;
            st = DMX_OK;
            goto done;
        }
        dmx_repo_hit_clear(&member);
        if (ms == DMX_ERR_NOT_FOUND)
            missing++;
        else if (ms != DMX_OK) {
            st = dmx__fail(ms, "model '%s' (member %s): %s", name, m->members[i], dmx_last_error());
            goto done;
        }
    }
    if (missing)
        st = dmx__fail(DMX_ERR_NOT_FOUND,
                       "model '%s' is not in the cache %s (%d of its %d files missing); "
                       "'demix models fetch %s' downloads it",
                       name, cache, missing, m->n_members, name);
    else
        st = dmx__fail(DMX_ERR_NOT_FOUND,
                       "model '%s': its checkpoints are in the cache %s but its bag file %s.yaml "
                       "is not; 'demix models fetch %s' writes it",
                       name, cache, name, name);
done:
    if (st != DMX_OK) {
        dmx_repo_hit_clear(out);
        out->known = m;
        out->msst = rf;
    }
    free(cache);
    return st;
}

/* ---- probe ------------------------------------------------------------------- */

static dmx_status probe_buf(const unsigned char *buf, size_t len, const char *path,
                            dmx_repo_probe_info *out) {
    dmx__zip z;
    dmx_status st = dmx__zip_open(&z, buf, len, path);
    if (st != DMX_OK) return st;
    const dmx__zip_entry *pe = NULL;
    for (size_t i = 0; i < z.n; i++) {
        const char *nm = z.entries[i].name;
        size_t nl = strlen(nm);
        if (nl > 9 && !strcmp(nm + nl - 9, "/data.pkl") && !memchr(nm, '/', nl - 9))
            pe = &z.entries[i];
    }
    dmx__pickle *pk = NULL;
    if (!pe) {
        st = dmx__fail(DMX_ERR_CORRUPT, "%s: no data.pkl entry: not a torch.save archive", path);
        goto done;
    }
    if ((st = dmx__pickle_run(dmx__zip_data(&z, pe), (size_t)pe->size, path, &pk)) != DMX_OK)
        goto done;
    const dmx__pv *root = dmx__pickle_result(pk);
    const dmx__pv *klass = root->type == DMX__PV_DICT ? dmx__pv_dict_get(root, "klass") : NULL;
    const dmx__pv *kwargs = root->type == DMX__PV_DICT ? dmx__pv_dict_get(root, "kwargs") : NULL;
    if (!klass || klass->type != DMX__PV_GLOBAL || !kwargs || kwargs->type != DMX__PV_DICT) {
        st = dmx__fail(DMX_ERR_UNSUPPORTED, "%s: not a Demucs checkpoint (no klass and kwargs)",
                       path);
        goto done;
    }
    snprintf(out->klass, sizeof out->klass, "%s", klass->u.global.name);
    out->family = dmx_repo_family_of_class(klass->u.global.full);
    const dmx__pv *src = dmx__pv_dict_get(kwargs, "sources");
    if (!src || (src->type != DMX__PV_LIST && src->type != DMX__PV_TUPLE)) {
        st = dmx__fail(DMX_ERR_MODEL, "%s: kwargs has no 'sources' list", path);
        goto done;
    }
    for (size_t i = 0; i < src->u.seq.n && i < DMX_REPO_MAX_SOURCES; i++) {
        const dmx__pv *s = src->u.seq.items[i];
        if (s->type != DMX__PV_STR) {
            st = dmx__fail(DMX_ERR_MODEL, "%s: source %zu is not a name", path, i);
            goto done;
        }
        snprintf(out->sources[i], sizeof out->sources[i], "%s", s->u.str.s);
        out->n_sources = (int32_t)i + 1;
    }
done:
    dmx__pickle_free(pk);
    dmx__zip_close(&z);
    return st;
}

static dmx_status probe_checkpoint(const char *path, dmx_repo_probe_info *out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return dmx__fail(e == ENOENT ? DMX_ERR_NOT_FOUND : DMX_ERR_IO, "%s: cannot open: %s", path,
                         strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size == 0) {
        close(fd);
        return dmx__fail(DMX_ERR_CORRUPT, "%s: not a checkpoint (empty or not a regular file)",
                         path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return dmx__fail(DMX_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    dmx_status st = probe_buf(map, len, path, out);
    munmap(map, len);
    if (st == DMX_OK)
        snprintf(out->families, sizeof out->families, "%s", dmx_repo_family_name(out->family));
    return st;
}

dmx_status dmx_repo_config_checkpoint(const char *yaml_path, char **ckpt) {
    if (!ckpt) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_config_checkpoint: NULL argument");
    *ckpt = NULL;
    if (!yaml_path)
        return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_config_checkpoint: NULL argument");
    dmx__ynode *root = NULL;
    dmx_status st = dmx__yaml_load(yaml_path, &root);
    if (st != DMX_OK) return st;
    int msst = dmx__yaml_get(root, "model") != NULL;
    dmx__yaml_free(root);
    if (!msst) return DMX_OK;
    size_t n = strlen(yaml_path);
    size_t stem = ends_with(yaml_path, n, ".yaml")  ? n - 5
                  : ends_with(yaml_path, n, ".yml") ? n - 4
                                                    : n;
    if (!(*ckpt = malloc(stem + 6))) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    memcpy(*ckpt, yaml_path, stem);
    memcpy(*ckpt + stem, ".ckpt", 6);
    return DMX_OK;
}

int dmx_repo_is_msst_config(const char *path) {
    if (!path) return 0;
    size_t n = strlen(path);
    if (!ends_with(path, n, ".yaml") && !ends_with(path, n, ".yml")) return 0;
    char *ck = NULL;
    int yes = dmx_repo_config_checkpoint(path, &ck) == DMX_OK && ck;
    free(ck);
    return yes;
}

/* An MSST config: family and stems from the config; its checkpoint must be
 * a regular file (its tensors are checked when the model loads). */
static dmx_status probe_config(const char *path, const char *ckpt, dmx_repo_probe_info *out) {
    dmx__rf_config *cfg = malloc(sizeof *cfg);
    if (!cfg) return dmx__fail(DMX_ERR_NOMEM, "out of memory");
    dmx_status st = dmx__rf_config_load(path, cfg);
    struct stat sb;
    if (st == DMX_OK && (stat(ckpt, &sb) != 0 || !S_ISREG(sb.st_mode)))
        st = dmx__fail(DMX_ERR_NOT_FOUND, "%s: its checkpoint %s is missing", path, ckpt);
    if (st == DMX_OK) {
        out->family = cfg->kind == DMX__RF_BS ? DMX_REPO_FAMILY_BS_ROFORMER
                                              : DMX_REPO_FAMILY_MEL_BAND_ROFORMER;
        snprintf(out->klass, sizeof out->klass, "%s", dmx_repo_family_name(out->family));
        snprintf(out->families, sizeof out->families, "%s", dmx_repo_family_name(out->family));
        for (int i = 0; i < cfg->num_stems && i < DMX_REPO_MAX_SOURCES; i++) {
            snprintf(out->sources[i], sizeof out->sources[i], "%s", cfg->stems[i]);
            out->n_sources = i + 1;
        }
    }
    free(cfg);
    return st;
}

dmx_status dmx_repo_probe(const char *path, dmx_repo_probe_info *out) {
    if (!path || !out) return dmx__fail(DMX_ERR_INVALID_ARG, "dmx_repo_probe: NULL argument");
    memset(out, 0, sizeof *out);
    size_t n = strlen(path);
    if (!ends_with(path, n, ".yaml")) return probe_checkpoint(path, out);
    char *ckpt = NULL;
    dmx_status st = dmx_repo_config_checkpoint(path, &ckpt);
    if (st != DMX_OK || ckpt) {
        if (st == DMX_OK) st = probe_config(path, ckpt, out);
        free(ckpt);
        return st;
    }
    dmx__bag_spec *spec = NULL;
    st = dmx__bag_yaml_load(path, &spec);
    if (st != DMX_OK) return st;
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) st = dmx__fail(DMX_ERR_NOMEM, "out of memory");
    /* Member 0 fills `out`; the others add their family, each once. */
    unsigned seen = 0;
    for (size_t i = 0; st == DMX_OK && i < spec->n_models; i++) {
        dmx_repo_hit h;
        dmx_repo_probe_info mi;
        st = dmx_repo_find_checkpoint(dir, spec->models[i], &h);
        if (st != DMX_OK) break;
        st = probe_checkpoint(h.path, i ? &mi : out);
        dmx_repo_hit_clear(&h);
        if (st != DMX_OK) break;
        dmx_repo_family f = i ? mi.family : out->family;
        if (i == 0) out->families[0] = '\0';
        if (seen & (1u << f)) continue;
        seen |= 1u << f;
        size_t l = strlen(out->families);
        snprintf(out->families + l, sizeof out->families - l, "%s%s", l ? "+" : "",
                 dmx_repo_family_name(f));
    }
    free(dir);
    dmx__bag_spec_free(spec);
    return st;
}
