/*
 * test_roformer_config.c - the YAML tree (yamltree.c), the MSST config reader
 * (roformer_config.c), the bare state-dict loader and the RoFormer build's
 * checks: PyYAML's scalar rules, every golden config read as MSST reads it,
 * bad configs and mismatched checkpoints rejected with a message naming the
 * key / tensor, and the Mel-Band layout equal to the reference's (manifest).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "net.h"
#include "demix/demix.h"
#include "roformer.h"
#include "roformer_config.h"
#include "testutil.h"
#include "yamltree.h"

static dmx__ynode *parse(const char *s) {
    dmx__ynode *r = NULL;
    dmx_status st = dmx__yaml_parse(s, strlen(s), "t.yaml", &r);
    if (st != DMX_OK) fprintf(stderr, "parse: %s\n", dmx_last_error());
    REQUIRE(st == DMX_OK);
    return r;
}

static void expect_parse_error(const char *s, const char *needle) {
    dmx__ynode *r = NULL;
    dmx_status st = dmx__yaml_parse(s, strlen(s), "t.yaml", &r);
    CHECK_MSG(st == DMX_ERR_CORRUPT && !r, "'%s' parsed (status %d)", s, st);
    CHECK_MSG(strstr(dmx_last_error(), needle), "message '%s' lacks '%s'", dmx_last_error(), needle);
}

static void test_yaml(void) {
    dmx__ynode *r = parse("a: 1\nb: 1.0e-05\nc: 1e-5\nd: true\ne: Off\nf: ~\ng: '12'\nh: 0x1F\ni: 1_000\n"
                          "j: !!python/tuple\n  - 2\n  - 3\nk: !!python/tuple [4, 5]\nl:\nm: .inf\nn: hello\n");
    int64_t i;
    double d;
    int b;
    const char *s;
    CHECK(dmx__yaml_int(dmx__yaml_get(r, "a"), &i) == 0 && i == 1);
    CHECK(dmx__yaml_float(dmx__yaml_get(r, "b"), &d) == 0 && d == 1e-5);
    /* PyYAML (YAML 1.1) needs a '.' in a float: 1e-5 is a string */
    CHECK(dmx__yaml_float(dmx__yaml_get(r, "c"), &d) != 0);
    CHECK(!strcmp(dmx__yaml_type_name(dmx__yaml_get(r, "c")), "string"));
    CHECK(dmx__yaml_bool(dmx__yaml_get(r, "d"), &b) == 0 && b == 1);
    CHECK(dmx__yaml_bool(dmx__yaml_get(r, "e"), &b) == 0 && b == 0);
    CHECK(dmx__yaml_is_null(dmx__yaml_get(r, "f")));
    CHECK(dmx__yaml_is_null(dmx__yaml_get(r, "l")));
    /* quoted: a string, never a number */
    CHECK(dmx__yaml_int(dmx__yaml_get(r, "g"), &i) != 0);
    CHECK(dmx__yaml_str(dmx__yaml_get(r, "g"), &s) == 0 && !strcmp(s, "12"));
    CHECK(dmx__yaml_int(dmx__yaml_get(r, "h"), &i) == 0 && i == 31);
    CHECK(dmx__yaml_int(dmx__yaml_get(r, "i"), &i) == 0 && i == 1000);
    const dmx__ynode *j = dmx__yaml_get(r, "j"), *k = dmx__yaml_get(r, "k");
    CHECK(j && j->kind == DMX__Y_SEQ && j->n == 2 && !strcmp(dmx__yaml_type_name(j), "tuple"));
    CHECK(j && j->n == 2 && dmx__yaml_int(j->items[1], &i) == 0 && i == 3 && j->items[1]->line == 12);
    CHECK(k && k->kind == DMX__Y_SEQ && k->n == 2 && dmx__yaml_int(k->items[0], &i) == 0 && i == 4);
    CHECK(dmx__yaml_float(dmx__yaml_get(r, "m"), &d) == 0 && d > 1e308);
    CHECK(dmx__yaml_str(dmx__yaml_get(r, "n"), &s) == 0 && !strcmp(s, "hello"));
    CHECK(dmx__yaml_get(r, "zz") == NULL);
    dmx__yaml_free(r);

    expect_parse_error("a: 1\na: 2\n", "duplicate key 'a'");
    expect_parse_error("a: &x 1\nb: *x\n", "aliases");
    expect_parse_error("a: [1, 2\nb: 3\n", "line ");
    expect_parse_error("a: 1\n---\nb: 2\n", "several YAML documents");
    expect_parse_error("? [1, 2]\n: 3\n", "key must be a scalar");
    char deep[400];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 199);
    deep[399] = 0;
    expect_parse_error(deep, "nested deeper");
    /* empty document: a null scalar */
    r = parse("");
    CHECK(dmx__yaml_is_null(r));
    dmx__yaml_free(r);
}

static void golden_configs(void) {
    static const struct {
        const char *name;
        dmx__rf_kind kind;
        int dim, bands, stems, linear, zero_dc;
        long chunk;
        const char *stem0;
    } cases[] = {
        {"bs_roformer_tiny", DMX__RF_BS, 32, 62, 1, 0, 1, 352800, "vocals"},
        {"mel_band_roformer_tiny", DMX__RF_MEL, 16, 60, 1, 0, 1, 352800, "vocals"},
        {"bs_roformer_4stem_tiny", DMX__RF_BS, 8, 62, 4, 0, 1, 485100, "drums"},
        {"mel_band_roformer_4stem_tiny", DMX__RF_MEL, 4, 60, 4, 0, 1, 352800, "drums"},
        {"bs_roformer_linear_tiny", DMX__RF_BS, 4, 62, 1, 1, 0, 352800, "vocals"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "roformer/models/%s.yaml", cases[i].name);
        dmx__rf_config c;
        dmx_status st = dmx__rf_config_load(golden_path(rel), &c);
        CHECK_MSG(st == DMX_OK, "%s: %s", cases[i].name, dmx_last_error());
        if (st != DMX_OK) continue;
        CHECK(c.kind == cases[i].kind && c.dim == cases[i].dim && c.n_bands == cases[i].bands);
        CHECK(c.num_stems == cases[i].stems && c.linear_depth == cases[i].linear && c.zero_dc == cases[i].zero_dc);
        CHECK(c.chunk_size == cases[i].chunk && c.num_overlap == 2 && !strcmp(c.stems[0], cases[i].stem0));
        CHECK(c.n_fft == 2048 && c.hop == 441 && c.win_length == 2048 && c.stereo == 1 && c.depth == 2);
        CHECK(c.mask_estimator_depth == 2);
    }
}

/* A minimal valid config with one line replaced / added. */
static const char *BASE =
    "audio:\n  sample_rate: 44100\n  chunk_size: 352800\ninference:\n  num_overlap: 2\n  batch_size: 4\n"
    "training:\n  instruments: [vocals, other]\n  target_instrument: vocals\n"
    "model:\n  dim: 8\n  depth: 1\n  stereo: true\n  stft_n_fft: 8\n  stft_win_length: 8\n"
    "  freqs_per_bands: !!python/tuple [2, 3]\n";

static dmx_status read_cfg(const char *text, dmx__rf_config *c) {
    dmx__ynode *r = NULL;
    dmx_status st = dmx__yaml_parse(text, strlen(text), "bad.yaml", &r);
    if (st != DMX_OK) return st;
    st = dmx__rf_config_read(r, "bad.yaml", c);
    dmx__yaml_free(r);
    return st;
}

static void expect_bad(const char *extra, const char *remove, dmx_status want, const char *needle) {
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", BASE);
    if (remove) {
        char *p = strstr(buf, remove);
        REQUIRE(p);
        memmove(p, p + strlen(remove), strlen(p + strlen(remove)) + 1);
    }
    strncat(buf, extra, sizeof buf - strlen(buf) - 1);
    dmx__rf_config c;
    dmx_status st = read_cfg(buf, &c);
    CHECK_MSG(st == want, "[%s] status %d, want %d (%s)", extra, st, want, dmx_last_error());
    CHECK_MSG(strstr(dmx_last_error(), needle), "[%s] message '%s' lacks '%s'", extra, dmx_last_error(), needle);
}

static void bad_configs(void) {
    dmx__rf_config c;
    CHECK_MSG(read_cfg(BASE, &c) == DMX_OK, "base: %s", dmx_last_error());
    CHECK(c.kind == DMX__RF_BS && c.n_bands == 2 && c.freqs_per_bands[1] == 3 && c.heads == 8 && c.dim_head == 64);
    CHECK(c.time_depth == 2 && c.mlp_expansion_factor == 4 && c.zero_dc == 1 && c.batch_size == 4);
    CHECK(c.num_stems == 1 && !strcmp(c.stems[0], "vocals") && c.audio_sample_rate == 44100);
    expect_bad("  dim_head: 9\n", NULL, DMX_ERR_MODEL, "dim_head = 9 must be even");
    expect_bad("  heads: four\n", NULL, DMX_ERR_MODEL, "model.heads is a string ('four'), expected an integer");
    expect_bad("  heads: 0\n", NULL, DMX_ERR_MODEL, "model.heads = 0 is out of range");
    expect_bad("  zero_dc: maybe\n", NULL, DMX_ERR_MODEL, "model.zero_dc is a string");
    expect_bad("  num_bands: 60\n", NULL, DMX_ERR_MODEL, "both freqs_per_bands");
    expect_bad("", "  freqs_per_bands: !!python/tuple [2, 3]\n", DMX_ERR_MODEL, "neither freqs_per_bands");
    expect_bad("", "  dim: 8\n", DMX_ERR_MODEL, "model.dim is missing");
    expect_bad("", "  chunk_size: 352800\n", DMX_ERR_MODEL, "audio.chunk_size is missing");
    expect_bad("", "  num_overlap: 2\n", DMX_ERR_MODEL, "inference.num_overlap is missing");
    expect_bad("  stft_n_fft: 16\n", "  stft_n_fft: 8\n", DMX_ERR_MODEL, "sums to 5, but stft_n_fft = 16 gives 9");
    expect_bad("  stft_win_length: 16\n", "  stft_win_length: 8\n", DMX_ERR_MODEL, "exceeds stft_n_fft");
    expect_bad("  num_stems: 2\n", NULL, DMX_ERR_MODEL, "num_stems = 2 but training names 1 stem");
    expect_bad("  use_pope: true\n", NULL, DMX_ERR_UNSUPPORTED, "PoPE");
    /* inference.normalize: true is refused (MSST normalises the whole mix;
     * demix does not); false, or anything MSST's `is True` rejects, is off */
    static const struct {
        const char *line;
        dmx_status want;
    } nz[] = {{"  normalize: true\n", DMX_ERR_UNSUPPORTED}, {"  normalize: True\n", DMX_ERR_UNSUPPORTED},
              {"  normalize: false\n", DMX_OK}, {"  normalize: 1\n", DMX_OK}};
    for (size_t i = 0; i < sizeof nz / sizeof nz[0]; i++) {
        char buf[2048];
        const char *at = strstr(BASE, "  batch_size: 4\n");
        REQUIRE(at);
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - BASE), BASE, nz[i].line, at);
        dmx__rf_config c2;
        dmx_status st = read_cfg(buf, &c2);
        CHECK_MSG(st == nz[i].want, "[%s] status %d (%s)", nz[i].line, st, dmx_last_error());
        if (nz[i].want != DMX_OK)
            CHECK_MSG(strstr(dmx_last_error(), "line 6: inference.normalize: true"), "message: %s",
                      dmx_last_error());
    }
    expect_bad("  sage_attention: true\n", NULL, DMX_ERR_UNSUPPORTED, "sage_attention");
    expect_bad("  linear_transformer_depth: -1\n", NULL, DMX_ERR_MODEL, "out of range");
    expect_bad("  attn_dropout: high\n", NULL, DMX_ERR_MODEL, "attn_dropout is a string");
    {
        char buf[2048];
        snprintf(buf, sizeof buf, "%s", BASE);
        char *p = strstr(buf, "[2, 3]");
        memcpy(p, "[2, x]", 6);
        CHECK(read_cfg(buf, &c) == DMX_ERR_MODEL && strstr(dmx_last_error(), "freqs_per_bands[1]"));
    }
    CHECK(read_cfg("model: 3\naudio: {}\ninference: {}\ntraining: {}\n", &c) == DMX_ERR_MODEL &&
          strstr(dmx_last_error(), "'model:' is a int"));
    CHECK(read_cfg("audio: {}\n", &c) == DMX_ERR_MODEL && strstr(dmx_last_error(), "section 'model:' is missing"));
    CHECK(read_cfg("- 1\n", &c) == DMX_ERR_MODEL && strstr(dmx_last_error(), "expected a mapping"));
    CHECK(dmx__rf_config_load("/nonexistent/x.yaml", &c) == DMX_ERR_NOT_FOUND);
}

/* The reference's 60-band layout for sr 44100 / n_fft 2048 (manifest). */
static void mel_layout(void) {
    size_t len;
    char *man = (char *)read_file(golden_path("roformer/manifest.json"), &len);
    REQUIRE(man);
    man = realloc(man, len + 1);
    man[len] = 0;
    char *p = strstr(man, "\"bands_[first_bin,end_bin)\": [");
    REQUIRE(p);
    p += strlen("\"bands_[first_bin,end_bin)\": [");
    dmx__rf_config c;
    REQUIRE(dmx__rf_config_load(golden_path("roformer/models/mel_band_roformer_tiny.yaml"), &c) == DMX_OK);
    dmx__rf_bands b;
    REQUIRE(dmx__rf_bands_make(&c, &b) == DMX_OK);
    int bad = 0;
    for (int k = 0; k < 60; k++) {
        long lo = 0, hi = 0;
        REQUIRE(sscanf(p, " [%ld, %ld]", &lo, &hi) == 2);
        p = strchr(p, ']') + 1;
        if (*p == ',') p++;
        int n = b.off[k + 1] - b.off[k];
        int ok = n == hi - lo && b.bins[b.off[k]] == lo && b.bins[b.off[k + 1] - 1] == hi - 1;
        if (!ok) bad++;
        CHECK_MSG(ok, "mel band %d: ours [%d, %d], reference [%ld, %ld)", k, b.bins[b.off[k]],
                  b.bins[b.off[k + 1] - 1], lo, hi);
    }
    int total = b.off[60];
    CHECK_MSG(total == 1979, "band bins %d, reference 1979", total);
    printf("mel layout: 60 bands, %d band-bins, %d mismatches with the reference\n", total, bad);
    dmx__rf_bands_free(&b);
    free(man);
}

static void checkpoints(void) {
    /* plain, {'state_dict': ...}, MSST training checkpoint */
    static const char *files[] = {"bs_roformer_tiny", "bs_roformer_4stem_tiny", "bs_roformer_linear_tiny"};
    static const size_t counts[] = {479, 1223, 497};
    for (int i = 0; i < 3; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "roformer/models/%s.ckpt", files[i]);
        dmx__ckpt *ck = NULL;
        dmx_status st = dmx__ckpt_load_state_dict(golden_path(rel), &ck);
        CHECK_MSG(st == DMX_OK, "%s: %s", files[i], dmx_last_error());
        if (st != DMX_OK) continue;
        CHECK(dmx__ckpt_n_tensors(ck) == counts[i] && dmx__ckpt_klass(ck) == NULL);
        CHECK(dmx__ckpt_find(ck, "final_norm.gamma") != NULL);
        dmx__ckpt_free(ck);
    }
    /* a Demucs-style load of a bare state dict still says what it is */
    dmx__ckpt *ck = NULL;
    CHECK(dmx__ckpt_load(golden_path("roformer/models/bs_roformer_tiny.ckpt"), &ck) == DMX_ERR_UNSUPPORTED);

    /* config and checkpoint that disagree: build names the tensor */
    struct {
        const char *yaml, *ckpt, *needle;
    } mism[] = {
        {"bs_roformer_4stem_tiny", "bs_roformer_tiny", "has shape"},
        {"bs_roformer_tiny", "bs_roformer_linear_tiny", "has shape"},
        {"mel_band_roformer_tiny", "bs_roformer_tiny", "has shape"},
    };
    for (int i = 0; i < 3; i++) {
        char y[256], k[256];
        snprintf(y, sizeof y, "roformer/models/%s.yaml", mism[i].yaml);
        snprintf(k, sizeof k, "roformer/models/%s.ckpt", mism[i].ckpt);
        dmx__roformer *n = NULL;
        dmx_status st = dmx__roformer_load(golden_path(y), golden_path(k), &n);
        CHECK_MSG(st == DMX_ERR_MODEL && !n && strstr(dmx_last_error(), mism[i].needle), "%s + %s: %d %s",
                  mism[i].yaml, mism[i].ckpt, st, dmx_last_error());
    }
    /* a missing tensor is named */
    {
        dmx__rf_config c;
        REQUIRE(dmx__rf_config_load(golden_path("roformer/models/bs_roformer_linear_tiny.yaml"), &c) == DMX_OK);
        c.linear_depth = 0;
        REQUIRE(dmx__ckpt_load_state_dict(golden_path("roformer/models/bs_roformer_linear_tiny.ckpt"), &ck) == DMX_OK);
        dmx__roformer *n = NULL;
        dmx_status st = dmx__roformer_build(&c, ck, &n);
        CHECK_MSG(st == DMX_ERR_MODEL && strstr(dmx_last_error(), "no tensor 'layers.0.0.layers.0.0.rotary_embed.freqs'"),
                  "%d %s", st, dmx_last_error());
    }
    /* an extra tensor is refused like torch's strict load_state_dict */
    {
        dmx__rf_config c;
        REQUIRE(dmx__rf_config_load(golden_path("roformer/models/bs_roformer_tiny.yaml"), &c) == DMX_OK);
        c.depth = 1; /* the checkpoint has 2 layers */
        REQUIRE(dmx__ckpt_load_state_dict(golden_path("roformer/models/bs_roformer_tiny.ckpt"), &ck) == DMX_OK);
        dmx__roformer *n = NULL;
        dmx_status st = dmx__roformer_build(&c, ck, &n);
        CHECK_MSG(st == DMX_ERR_MODEL && strstr(dmx_last_error(), "unexpected tensor 'layers.1."), "%d %s", st,
                  dmx_last_error());
    }
    /* a window too short for its hop cannot be inverted (torch.istft's NOLA check) */
    {
        dmx__rf_config c;
        REQUIRE(dmx__rf_config_load(golden_path("roformer/models/bs_roformer_tiny.yaml"), &c) == DMX_OK);
        c.win_length = 256; /* hop 441 */
        REQUIRE(dmx__ckpt_load_state_dict(golden_path("roformer/models/bs_roformer_tiny.ckpt"), &ck) == DMX_OK);
        dmx__roformer *n = NULL;
        REQUIRE(dmx__roformer_build(&c, ck, &n) == DMX_OK);
        static float x[2 * 8820], y[2 * 8820];
        dmx__arena ar;
        dmx__arena_init(&ar);
        dmx_status st = dmx__roformer_forward(n, &ar, x, 8820, y, NULL, NULL);
        CHECK_MSG(st == DMX_ERR_MODEL && strstr(dmx_last_error(), "NOLA"), "%d %s", st, dmx_last_error());
        CHECK(ar.in_use == 0);
        dmx__arena_free(&ar);
        dmx__roformer_free(n);
    }
    /* too short an input for the STFT's reflect padding */
    {
        dmx__roformer *n = NULL;
        REQUIRE(dmx__roformer_load(golden_path("roformer/models/bs_roformer_tiny.yaml"),
                                   golden_path("roformer/models/bs_roformer_tiny.ckpt"), &n) == DMX_OK);
        float x[2 * 1024] = {0}, y[2 * 1024];
        dmx__arena ar;
        dmx__arena_init(&ar);
        CHECK(dmx__roformer_forward(n, &ar, x, 1024, y, NULL, NULL) == DMX_ERR_BAD_INPUT);
        CHECK(strstr(dmx_last_error(), "too few"));
        dmx__arena_free(&ar);
        dmx__roformer_free(n);
    }
}

/* The network seen through the engine's seam (net.h). */
static void through_net(void) {
    dmx__net *n = NULL;
    dmx_status st = dmx__roformer_net_load(golden_path("roformer/models/bs_roformer_4stem_tiny.yaml"),
                                           golden_path("roformer/models/bs_roformer_4stem_tiny.ckpt"), &n);
    CHECK_MSG(st == DMX_OK, "net_load: %s", dmx_last_error());
    if (st != DMX_OK) return;
    CHECK(n->vt == &dmx__bs_roformer_vt && !strcmp(n->desc.klass, "BSRoformer"));
    CHECK(n->desc.n_sources == 4 && !strcmp(n->desc.sources[0], "drums") && !strcmp(n->desc.sources[3], "vocals"));
    CHECK(n->desc.audio_channels == 2 && n->desc.samplerate == 44100 && n->desc.training_length == 485100);
    CHECK(dmx__net_valid_length(n, 1000) == 1000);
    float x[2 * 4410], y[4 * 2 * 4410];
    for (int i = 0; i < 2 * 4410; i++) x[i] = (float)((i * 7919) % 2000 - 1000) / 1e4f;
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__net_forward(n, &ar, x, 4410, y, NULL, NULL) == DMX_OK);
    float mx = 0;
    for (int i = 0; i < 4 * 2 * 4410; i++) mx = y[i] > mx ? y[i] : mx;
    CHECK(mx > 0);
    dmx__arena_free(&ar);
    dmx__net_free(n);
    /* a RoFormer cannot be built from a checkpoint alone */
    dmx__ckpt *ck = NULL;
    REQUIRE(dmx__ckpt_load_state_dict(golden_path("roformer/models/bs_roformer_tiny.ckpt"), &ck) == DMX_OK);
    void *impl = NULL;
    CHECK(dmx__bs_roformer_vt.build(ck, &impl) == DMX_ERR_UNSUPPORTED && !impl);
    CHECK(strstr(dmx_last_error(), "YAML config"));
}

int main(void) {
    test_yaml();
    golden_configs();
    bad_configs();
    mel_layout();
    checkpoints();
    through_net();
    return dmx_test_done("test_roformer_config");
}
