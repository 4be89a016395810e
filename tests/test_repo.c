/*
 * test_repo.c - the model registry (src/engine/repo.c, include/demix/repo.h):
 * the naming rule and its edge cases (case, dashes, checksum length,
 * duplicates, hidden and foreign files), the cache folder rule with its
 * environment overrides, the table of upstream's models against upstream's
 * files.txt / remote YAMLs, lookups in a folder and in the cache (an upstream
 * name found through its members' signatures: the service's bug of issue
 * 12), URLs, and the checkpoint probe on the golden fixtures.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bagyaml.h"
#include "demix/repo.h"
#include "demix/status.h"
#include "testutil.h"

static int has(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

static char tmp_root[] = "/tmp/dmx_repo_XXXXXX";

static char *mkdir_in(const char *name) {
    char *p = NULL;
    REQUIRE(asprintf(&p, "%s/%s", tmp_root, name) > 0);
    REQUIRE(mkdir(p, 0755) == 0);
    return p;
}

static void put(const char *dir, const char *name, const char *text) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    REQUIRE(write_file(p, text, strlen(text)) == 0);
}

static void test_parse_name(void) {
    dmx_repo_entry e;
    CHECK(dmx_repo_parse_name("955717e8-8726e21a.th", &e) == DMX_OK);
    CHECK(e.kind == DMX_REPO_CHECKPOINT && !strcmp(e.name, "955717e8") && !strcmp(e.checksum, "8726e21a"));
    CHECK(dmx_repo_parse_name("tiny4s.th", &e) == DMX_OK && !strcmp(e.name, "tiny4s") && e.checksum[0] == '\0');
    CHECK(dmx_repo_parse_name("htdemucs_ft.yaml", &e) == DMX_OK && e.kind == DMX_REPO_BAG &&
          !strcmp(e.name, "htdemucs_ft"));
    /* a bag name may hold dashes (upstream's BagOnlyRepo takes the stem) */
    CHECK(dmx_repo_parse_name("my-bag.yaml", &e) == DMX_OK && !strcmp(e.name, "my-bag"));
    /* checksum length: any 1..64 lowercase hex digits (upstream compares a prefix) */
    CHECK(dmx_repo_parse_name("a-f.th", &e) == DMX_OK && !strcmp(e.name, "a") && !strcmp(e.checksum, "f"));
    char f64[80], f65[80];
    snprintf(f64, sizeof f64, "s-%064d.th", 0);
    snprintf(f65, sizeof f65, "s-%065d.th", 0);
    CHECK(dmx_repo_parse_name(f64, &e) == DMX_OK && strlen(e.checksum) == 64);
    CHECK(dmx_repo_parse_name(f65, &e) == DMX_ERR_INVALID_ARG);
    /* case: uppercase hex never matches the lowercase sha256 upstream compares */
    CHECK(dmx_repo_parse_name("a-ABCDEF12.th", &e) == DMX_ERR_INVALID_ARG && has(dmx_last_error(), "uppercase"));
    CHECK(!strcmp(e.name, "a"));
    /* the FIRST dash splits (upstream's files.txt parser); a second one is refused */
    CHECK(dmx_repo_parse_name("my-model-8726e21a.th", &e) == DMX_ERR_INVALID_ARG && !strcmp(e.name, "my"));
    CHECK(has(dmx_last_error(), "more than one '-'"));
    CHECK(dmx_repo_parse_name("my-model.th", &e) == DMX_ERR_INVALID_ARG && has(dmx_last_error(), "not a hex"));
    CHECK(dmx_repo_parse_name("a-.th", &e) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_repo_parse_name("-abcd.th", &e) == DMX_ERR_INVALID_ARG && has(dmx_last_error(), "empty signature"));
    /* not model files at all */
    CHECK(dmx_repo_parse_name("x.pt", &e) == DMX_ERR_NOT_FOUND);
    CHECK(dmx_repo_parse_name("x.th.part", &e) == DMX_ERR_NOT_FOUND);
    CHECK(dmx_repo_parse_name(".hidden.th", &e) == DMX_ERR_NOT_FOUND);
    CHECK(dmx_repo_parse_name(".th", &e) == DMX_ERR_NOT_FOUND);
    CHECK(dmx_repo_parse_name(".yaml", &e) == DMX_ERR_NOT_FOUND);

    CHECK(dmx_repo_name_valid("htdemucs") && dmx_repo_name_valid("955717e8") && dmx_repo_name_valid("a-b"));
    CHECK(!dmx_repo_name_valid("") && !dmx_repo_name_valid(NULL) && !dmx_repo_name_valid("../x"));
    CHECK(!dmx_repo_name_valid("..") && !dmx_repo_name_valid(".x") && !dmx_repo_name_valid("a/b"));
    CHECK(!dmx_repo_name_valid("a\nb") && !dmx_repo_name_valid("a\\b"));
    char longname[DMX_REPO_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK(!dmx_repo_name_valid(longname));
    longname[DMX_REPO_NAME_MAX] = '\0';
    CHECK(dmx_repo_name_valid(longname));
}

static void check_cache(const char *models, const char *xdg, const char *home, const char *want) {
    if (models) setenv("DEMIX_MODELS", models, 1); else unsetenv("DEMIX_MODELS");
    if (xdg) setenv("XDG_CACHE_HOME", xdg, 1); else unsetenv("XDG_CACHE_HOME");
    if (home) setenv("HOME", home, 1); else unsetenv("HOME");
    char *d = NULL;
    CHECK(dmx_repo_cache_dir(&d) == DMX_OK);
    CHECK_MSG(d && !strcmp(d, want), "cache dir %s, expected %s", d ? d : "(null)", want);
    free(d);
}

static void test_cache_dir(void) {
    char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    check_cache("/m", "/x", "/h", "/m");
    check_cache("", "/x", "/h", "/x/demix");         /* empty DEMIX_MODELS is unset */
    check_cache(NULL, "/x/", "/h", "/x/demix");
    check_cache(NULL, "rel", "/h", "/h/.cache/demix"); /* a relative XDG_CACHE_HOME is ignored */
    check_cache(NULL, NULL, "/h/", "/h/.cache/demix");
    check_cache(NULL, NULL, NULL, ".cache/demix");
    unsetenv("XDG_CACHE_HOME");
    if (old_home) setenv("HOME", old_home, 1);
    free(old_home);
}

/* The table against upstream's demucs/remote/files.txt and *.yaml. */
static void test_table(void) {
    static const char *const names[] = {"htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx", "mdx_extra",
                                        "mdx_q", "mdx_extra_q", "repro_mdx_a", "repro_mdx_a_hybrid_only",
                                        "repro_mdx_a_time_only"};
    CHECK(dmx_repo_n_models() == sizeof names / sizeof names[0]);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const dmx_repo_model *m = dmx_repo_model_find(names[i]);
        CHECK_MSG(m, "model %s missing", names[i]);
        if (!m) continue;
        /* every member is a known file, and the YAML says the same */
        dmx__bag_spec *spec = NULL;
        CHECK(dmx__bag_yaml_parse(m->yaml, strlen(m->yaml), &spec) == DMX_OK);
        CHECK(spec && spec->n_models == (size_t)m->n_members);
        for (int32_t k = 0; k < m->n_members; k++) {
            CHECK_MSG(dmx_repo_model_member(m, k), "%s member %s unknown", m->name, m->members[k]);
            CHECK(spec && !strcmp(spec->models[k], m->members[k]));
        }
        CHECK(m->direct == (spec && spec->n_models == 1 && !spec->has_weights && !spec->has_segment));
        dmx__bag_spec_free(spec);
        CHECK(dmx_repo_model_n_sources(m) == (strcmp(m->name, "htdemucs_6s") ? 4 : 6));
    }
    CHECK(!dmx_repo_model_find("HTDEMUCS") && !dmx_repo_model_find("955717e8"));
    CHECK(dmx_repo_model_find("htdemucs")->direct && dmx_repo_model_find("htdemucs_6s")->direct);
    CHECK(!dmx_repo_model_find("hdemucs_mmi")->direct); /* segment: 44 */
    CHECK(!strcmp(dmx_repo_model_source(dmx_repo_model_find("htdemucs_6s"), 5), "piano"));

    char fam[64];
    dmx_repo_model_families(dmx_repo_model_find("mdx"), fam, sizeof fam);
    CHECK_MSG(!strcmp(fam, "Demucs+HDemucs"), "mdx families: %s", fam);
    dmx_repo_model_families(dmx_repo_model_find("htdemucs_ft"), fam, sizeof fam);
    CHECK(!strcmp(fam, "HTDemucs"));
    dmx_repo_model_families(dmx_repo_model_find("hdemucs_mmi"), fam, sizeof fam);
    CHECK(!strcmp(fam, "HDemucs"));
    dmx_repo_model_families(dmx_repo_model_find("repro_mdx_a_time_only"), fam, sizeof fam);
    CHECK(!strcmp(fam, "Demucs"));

    /* files.txt: 27 files; SIG-CHECKSUM.th, 8 lowercase hex digits each */
    CHECK(dmx_repo_n_files() == 27);
    for (size_t i = 0; i < dmx_repo_n_files(); i++) {
        const dmx_repo_file *f = dmx_repo_file_at(i);
        char want[64];
        snprintf(want, sizeof want, "%s-%s.th", f->sig, f->checksum);
        CHECK(!strcmp(f->file, want));
        dmx_repo_entry e;
        CHECK(dmx_repo_parse_name(f->file, &e) == DMX_OK && strlen(e.checksum) == 8);
        CHECK(dmx_repo_file_find(f->sig) == f && dmx_repo_file_find(f->file) == f);
        CHECK(!strcmp(f->root, "mdx_final/") || !strcmp(f->root, "hybrid_transformer/"));
    }
    CHECK(dmx_repo_file_find("75fc33f5")->family == DMX_REPO_FAMILY_HDEMUCS);
    CHECK(dmx_repo_file_find("0d19c1c6")->family == DMX_REPO_FAMILY_DEMUCS);
    CHECK(dmx_repo_file_find("83fc094f")->quantized && !dmx_repo_file_find("e51eebcc")->quantized);
    CHECK(dmx_repo_family_of_class("demucs.hdemucs.HDemucs") == DMX_REPO_FAMILY_HDEMUCS);
    CHECK(dmx_repo_family_of_class("HTDemucs") == DMX_REPO_FAMILY_HTDEMUCS);
    CHECK(dmx_repo_family_of_class("demucs.demucs.Demucs") == DMX_REPO_FAMILY_DEMUCS);
    CHECK(dmx_repo_family_of_class("foo.Bar") == DMX_REPO_FAMILY_UNKNOWN);
}

static void test_url(void) {
    char *u = NULL;
    unsetenv("DEMIX_MODEL_URL");
    CHECK(dmx_repo_file_url("955717e8-8726e21a.th", &u) == DMX_OK);
    CHECK(u && !strcmp(u, "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"));
    free(u);
    CHECK(dmx_repo_file_url("0d19c1c6-0f06f20e.th", &u) == DMX_OK);
    CHECK(u && !strcmp(u, "https://dl.fbaipublicfiles.com/demucs/mdx_final/0d19c1c6-0f06f20e.th"));
    free(u);
    setenv("DEMIX_MODEL_URL", "http://127.0.0.1:1/m", 1);
    CHECK(dmx_repo_file_url("5c90dfd2-34c22ccb.th", &u) == DMX_OK);
    CHECK(u && !strcmp(u, "http://127.0.0.1:1/m/hybrid_transformer/5c90dfd2-34c22ccb.th"));
    free(u);
    CHECK(dmx_repo_file_url("mine-abcd.th", &u) == DMX_OK && u && !strcmp(u, "http://127.0.0.1:1/m/mine-abcd.th"));
    free(u);
    unsetenv("DEMIX_MODEL_URL");
}

static void test_find(void) {
    char *d = mkdir_in("repo");
    put(d, "x.th", "x");
    put(d, "x.yaml", "models: ['x']\n");        /* a checkpoint wins over a bag */
    put(d, "bag.yaml", "models: ['x']\n");
    put(d, "Up-abcd.th", "x");                  /* signatures are case-sensitive */
    put(d, "dup.th", "x");
    put(d, "dup-0123.th", "x");
    put(d, "my-model-8726e21a.th", "x");        /* second dash */
    put(d, "bad-ABCD.th", "x");                 /* uppercase checksum */
    put(d, ".hidden.th", "x");
    put(d, "h-1.th", "x");                      /* 1-digit checksum: fine */
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/dir.th", d);  /* not a regular file */
    REQUIRE(mkdir(sub, 0755) == 0);

    dmx_repo_hit h;
    CHECK(dmx_repo_find(d, "x", &h) == DMX_OK && h.kind == DMX_REPO_CHECKPOINT && has(h.path, "/x.th"));
    CHECK(h.checksum && h.checksum[0] == '\0' && !h.known);
    dmx_repo_hit_clear(&h);
    CHECK(dmx_repo_find(d, "bag", &h) == DMX_OK && h.kind == DMX_REPO_BAG && has(h.path, "/bag.yaml"));
    dmx_repo_hit_clear(&h);
    CHECK(dmx_repo_find_checkpoint(d, "bag", &h) == DMX_ERR_NOT_FOUND && !h.path);
    CHECK(dmx_repo_find(d, "Up", &h) == DMX_OK && !strcmp(h.checksum, "abcd") && !strcmp(h.file, "Up-abcd.th"));
    dmx_repo_hit_clear(&h);
    CHECK(dmx_repo_find(d, "up", &h) == DMX_ERR_NOT_FOUND);
    CHECK(dmx_repo_find(d, "UP", &h) == DMX_ERR_NOT_FOUND);
    CHECK(dmx_repo_find(d, "dup", &h) == DMX_ERR_INVALID_ARG && has(dmx_last_error(), "delete all but one"));
    CHECK(has(dmx_last_error(), "dup-0123.th") && has(dmx_last_error(), "dup.th") && !h.path);
    CHECK(dmx_repo_find(d, "my", &h) == DMX_ERR_INVALID_ARG && has(dmx_last_error(), "more than one '-'"));
    /* the whole stem is not a name; the message says how the file is read */
    CHECK(dmx_repo_find(d, "my-model", &h) == DMX_ERR_NOT_FOUND);
    CHECK(dmx_repo_find(d, "bad", &h) == DMX_ERR_INVALID_ARG && has(dmx_last_error(), "uppercase"));
    CHECK(dmx_repo_find(d, "h", &h) == DMX_OK && !strcmp(h.checksum, "1"));
    dmx_repo_hit_clear(&h);
    CHECK(dmx_repo_find(d, "hidden", &h) == DMX_ERR_NOT_FOUND);
    CHECK(dmx_repo_find(d, ".hidden", &h) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_repo_find(d, "dir", &h) == DMX_ERR_NOT_FOUND);
    CHECK(dmx_repo_find(d, "../repo/x", &h) == DMX_ERR_INVALID_ARG);
    CHECK(dmx_repo_find(d, "nothing", &h) == DMX_ERR_NOT_FOUND && has(dmx_last_error(), d));
    CHECK(dmx_repo_find("/nonexistent/dir", "x", &h) == DMX_ERR_NOT_FOUND);

    /* scan: every model file once, problems flagged, others skipped */
    dmx_repo_list *l = NULL;
    CHECK(dmx_repo_scan(d, &l) == DMX_OK && l);
    size_t problems = 0, n = l ? l->n : 0;
    for (size_t i = 0; i < n; i++) problems += l->items[i].problem != NULL;
    CHECK_MSG(n == 9 && problems == 4, "scan: %zu files, %zu problems", n, problems);
    dmx_repo_list_free(l);
    free(d);
}

/* The cache: upstream names resolve through their members' signatures. */
static void test_resolve_cache(void) {
    char *c = mkdir_in("cache");
    setenv("DEMIX_MODELS", c, 1);
    put(c, "955717e8-8726e21a.th", "x"); /* what `demix models fetch htdemucs` stores */

    dmx_repo_hit h;
    CHECK_MSG(dmx_repo_resolve(NULL, "htdemucs", &h) == DMX_OK, "%s", dmx_last_error());
    CHECK(has(h.path, "/955717e8-8726e21a.th") && h.known == dmx_repo_model_find("htdemucs"));
    CHECK(h.kind == DMX_REPO_CHECKPOINT && !strcmp(h.checksum, "8726e21a"));
    dmx_repo_hit_clear(&h);
    /* the signature itself, as upstream's `-n 955717e8` */
    CHECK(dmx_repo_resolve(NULL, "955717e8", &h) == DMX_OK && has(h.path, "/955717e8-8726e21a.th"));
    dmx_repo_hit_clear(&h);
    /* with --repo, upstream's LocalRepo only: the name is not a file there */
    CHECK(dmx_repo_resolve(c, "htdemucs", &h) == DMX_ERR_NOT_FOUND);
    dmx_repo_hit_clear(&h);

    /* a bag not fetched: the message says how to get it, and it is known */
    CHECK(dmx_repo_resolve(NULL, "htdemucs_ft", &h) == DMX_ERR_NOT_FOUND);
    CHECK(has(dmx_last_error(), "demix models fetch htdemucs_ft") && h.known && !h.path);
    /* members there but not its YAML (the bag has weights: it needs it) */
    put(c, "f7e0c4bc-ba3fe64a.th", "x");
    put(c, "d12395a8-e57c48e6.th", "x");
    put(c, "92cfc3b6-ef3bcb9c.th", "x");
    put(c, "04573f0d-f3cf25b2.th", "x");
    CHECK(dmx_repo_resolve(NULL, "htdemucs_ft", &h) == DMX_ERR_NOT_FOUND && has(dmx_last_error(), "writes it"));
    put(c, "htdemucs_ft.yaml", dmx_repo_model_find("htdemucs_ft")->yaml);
    CHECK(dmx_repo_resolve(NULL, "htdemucs_ft", &h) == DMX_OK && h.kind == DMX_REPO_BAG &&
          has(h.path, "/htdemucs_ft.yaml") && h.known);
    /* the bag's members resolve next to it */
    char *p = NULL;
    CHECK(dmx__bag_resolve(h.path, "92cfc3b6", &p) == DMX_OK && has(p, "/92cfc3b6-ef3bcb9c.th"));
    free(p);
    dmx_repo_hit_clear(&h);
    /* a user's own checkpoint in the cache */
    put(c, "mine-00ff.th", "x");
    CHECK(dmx_repo_resolve(NULL, "mine", &h) == DMX_OK && has(h.path, "/mine-00ff.th") && !h.known);
    dmx_repo_hit_clear(&h);
    /* a duplicate of a member is reported for the upstream name too */
    put(c, "5c90dfd2.th", "x");
    put(c, "5c90dfd2-34c22ccb.th", "x");
    CHECK(dmx_repo_resolve(NULL, "htdemucs_6s", &h) == DMX_ERR_INVALID_ARG && has(dmx_last_error(), "delete all"));
    CHECK(dmx_repo_resolve(NULL, "nosuch", &h) == DMX_ERR_NOT_FOUND && !h.known);
    CHECK(dmx_repo_resolve(NULL, "../x", &h) == DMX_ERR_INVALID_ARG);
    unsetenv("DEMIX_MODELS");
    free(c);
}

static void test_probe(void) {
    dmx_repo_probe_info pi;
    const char *p6 = golden_path("models/tiny6s.th");
    CHECK_MSG(dmx_repo_probe(p6, &pi) == DMX_OK, "%s", dmx_last_error());
    CHECK(pi.family == DMX_REPO_FAMILY_HTDEMUCS && !strcmp(pi.klass, "HTDemucs") && pi.n_sources == 6);
    CHECK(!strcmp(pi.sources[0], "drums") && !strcmp(pi.sources[5], "piano"));
    CHECK_MSG(dmx_repo_probe(golden_path("models/tinybag.yaml"), &pi) == DMX_OK, "%s", dmx_last_error());
    CHECK(pi.n_sources == 4 && !strcmp(pi.sources[3], "vocals"));
    CHECK(!strcmp(pi.families, "HTDemucs"));
    /* a mixed bag names every member's family (was the first member's only) */
    CHECK_MSG(dmx_repo_probe(golden_path("zoo/models/mdx_tiny.yaml"), &pi) == DMX_OK, "%s", dmx_last_error());
    CHECK_MSG(!strcmp(pi.families, "Demucs+HDemucs") && pi.family == DMX_REPO_FAMILY_DEMUCS, "%s", pi.families);
    CHECK(pi.n_sources == 4 && !strcmp(pi.sources[0], "drums"));
    CHECK_MSG(dmx_repo_probe(golden_path("zoo/models/mmi_tiny.yaml"), &pi) == DMX_OK, "%s", dmx_last_error());
    CHECK_MSG(!strcmp(pi.families, "HDemucs"), "%s", pi.families);
    /* a truncated checkpoint is an error, not a crash */
    size_t len = 0;
    unsigned char *buf = read_file(p6, &len);
    REQUIRE(buf && len > 5000);
    char t[4096];
    snprintf(t, sizeof t, "%s/trunc.th", tmp_root);
    REQUIRE(write_file(t, buf, 5000) == 0);
    free(buf);
    CHECK(dmx_repo_probe(t, &pi) != DMX_OK);
    CHECK(dmx_repo_probe("/nonexistent.th", &pi) == DMX_ERR_NOT_FOUND);
}

static int is_hex(const char *s, size_t n) {
    if (!s) return 1; /* no checksum stated */
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* The RoFormer checkpoints: well-formed entries, names under the MSST rule,
 * URLs (a mirror serves the cache's names), resolution in the cache. */
static void test_msst(void) {
    CHECK(dmx_repo_n_msst() >= 5 && dmx_repo_msst_at(dmx_repo_n_msst()) == NULL);
    for (size_t i = 0; i < dmx_repo_n_msst(); i++) {
        const dmx_repo_msst_model *m = dmx_repo_msst_at(i);
        CHECK_MSG(dmx_repo_msst_find(m->name) == m, "%s", m->name);
        CHECK_MSG(!dmx_repo_model_find(m->name) && !dmx_repo_file_find(m->name), "%s is also a Demucs name", m->name);
        CHECK(m->family == DMX_REPO_FAMILY_BS_ROFORMER || m->family == DMX_REPO_FAMILY_MEL_BAND_ROFORMER);
        CHECK(m->description && m->description[0] && m->n_sources >= 0 && m->n_sources <= DMX_REPO_MAX_SOURCES);
        const dmx_repo_remote *r[2] = {&m->config, &m->checkpoint};
        for (int k = 0; k < 2; k++) {
            CHECK_MSG(!strncmp(r[k]->url, "https://", 8), "%s: %s", m->name, r[k]->url);
            CHECK_MSG(is_hex(r[k]->sha256, 64) && is_hex(r[k]->md5, 32), "%s: malformed checksum", m->name);
            CHECK(r[k]->bytes >= 0);
        }
        char y[300];
        snprintf(y, sizeof y, "%s.yaml", m->name);
        dmx_repo_entry e;
        CHECK_MSG(dmx_repo_parse_name(y, &e) == DMX_OK && e.kind == DMX_REPO_BAG && !strcmp(e.name, m->name), "%s", y);
    }
    const dmx_repo_msst_model *kj = dmx_repo_msst_find("vocals_mel_band_roformer_kj");
    REQUIRE(kj);
    char *u = NULL;
    unsetenv("DEMIX_MODEL_URL");
    CHECK(dmx_repo_msst_url(kj, 1, &u) == DMX_OK && u && !strcmp(u, kj->checkpoint.url));
    free(u);
    setenv("DEMIX_MODEL_URL", "http://127.0.0.1:1/m", 1);
    CHECK(dmx_repo_msst_url(kj, 0, &u) == DMX_OK && u && !strcmp(u, "http://127.0.0.1:1/m/vocals_mel_band_roformer_kj.yaml"));
    free(u);
    CHECK(dmx_repo_msst_url(kj, 1, &u) == DMX_OK && u && !strcmp(u, "http://127.0.0.1:1/m/vocals_mel_band_roformer_kj.ckpt"));
    free(u);
    unsetenv("DEMIX_MODEL_URL");
    /* not cached: NOT_FOUND naming `demix models fetch`, msst set */
    char *c = mkdir_in("msst_cache");
    setenv("DEMIX_MODELS", c, 1);
    dmx_repo_hit h;
    CHECK(dmx_repo_resolve(NULL, kj->name, &h) == DMX_ERR_NOT_FOUND && h.msst == kj && !h.known);
    CHECK(strstr(dmx_last_error(), "demix models fetch vocals_mel_band_roformer_kj") != NULL);
    dmx_repo_hit_clear(&h);
    /* cached as NAME.yaml (+ NAME.ckpt): resolves to the config */
    put(c, "vocals_mel_band_roformer_kj.yaml", "model: {}\n");
    CHECK(dmx_repo_resolve(NULL, kj->name, &h) == DMX_OK && h.msst == kj && h.kind == DMX_REPO_BAG);
    CHECK(has(h.path, "/vocals_mel_band_roformer_kj.yaml"));
    dmx_repo_hit_clear(&h);
    unsetenv("DEMIX_MODELS");
    free(c);
}

int main(void) {
    REQUIRE(mkdtemp(tmp_root));
    test_msst();
    test_parse_name();
    test_cache_dir();
    test_table();
    test_url();
    test_find();
    test_resolve_cache();
    test_probe();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    return dmx_test_done("test_repo");
}
