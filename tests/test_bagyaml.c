/*
 * test_bagyaml.c - bag-of-models YAML parser and LocalRepo lookup
 * (src/engine/bagyaml.c, on libyaml through yamltree.c): the golden
 * tinybag.yaml and the zoo's mdx_tiny.yaml / mmi_tiny.yaml, upstream-style
 * bag files, block lists, malformed inputs with line numbers and the field, hostile inputs (every
 * truncation, random mutations) and name resolution in a temporary directory.
 */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "bagyaml.h"
#include "demix/status.h"
#include "testutil.h"

static int has(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

static dmx__bag_spec *parse_ok(const char *text, int line) {
    dmx__bag_spec *s = NULL;
    dmx_status st = dmx__bag_yaml_parse(text, strlen(text), &s);
    if (st != DMX_OK || !s) {
        fprintf(stderr, "line %d: parse failed: %s %s\n", line, dmx_status_name(st), dmx_last_error());
        dmx_test_failures++;
        return NULL;
    }
    return s;
}
#define PARSE_OK(text) parse_ok(text, __LINE__)

static void parse_bad(const char *text, size_t len, const char *phrase, int line) {
    dmx__bag_spec *s = (dmx__bag_spec *)1;
    dmx_status st = dmx__bag_yaml_parse(text, len, &s);
    if (st != DMX_ERR_CORRUPT || s != NULL || !has(dmx_last_error(), phrase)) {
        fprintf(stderr, "line %d: got %s '%s', want DMX_ERR_CORRUPT with '%s'\n", line, dmx_status_name(st),
                dmx_last_error(), phrase);
        dmx_test_failures++;
        if (st == DMX_OK) dmx__bag_spec_free(s);
    }
}
#define PARSE_BAD(text, phrase) parse_bad(text, strlen(text), phrase, __LINE__)

static int models_are(const dmx__bag_spec *s, size_t n, const char *const *names) {
    if (!s || s->n_models != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->models[i], names[i])) return 0;
    return 1;
}

static int weights_are(const dmx__bag_spec *s, size_t rows, size_t cols, const double *w) {
    if (!s || !s->has_weights || s->weight_rows != rows || s->weight_cols != cols) return 0;
    for (size_t i = 0; i < rows * cols; i++)
        if (s->weights[i] != w[i]) return 0;
    return 1;
}

static void test_golden(void) {
    const char *path = golden_path("models/tinybag.yaml");
    dmx__bag_spec *s = NULL;
    dmx_status st = dmx__bag_yaml_load(path, &s);
    CHECK_MSG(st == DMX_OK, "%s: %s", path, dmx_last_error());
    static const char *const names[] = {"tinybag_a", "tinybag_b"};
    static const double w[] = {1, 0, 1, 0.5, 0, 1, 1, 0.5};
    CHECK(models_are(s, 2, names));
    CHECK(weights_are(s, 2, 4, w));
    CHECK(s && !s->has_segment);
    dmx__bag_spec_free(s);

    /* its members resolve next to it (NAME.th) */
    char *p = NULL, *sum = NULL;
    CHECK(dmx__bag_resolve_ex(path, "tinybag_a", &p, &sum) == DMX_OK && p && sum && sum[0] == '\0');
    CHECK(p && has(p, "/models/tinybag_a.th") && access(p, R_OK) == 0);
    free(p);
    free(sum);
    p = NULL;
    CHECK(dmx__bag_resolve(path, "tinybag_b", &p) == DMX_OK && p && has(p, "tinybag_b.th"));
    free(p);

    /* the zoo's bags, written as upstream's mdx.yaml and hdemucs_mmi.yaml */
    s = NULL;
    path = golden_path("zoo/models/mdx_tiny.yaml");
    CHECK_MSG(dmx__bag_yaml_load(path, &s) == DMX_OK, "%s: %s", path, dmx_last_error());
    static const char *const mdx[] = {"mdx_demucs_a_tiny", "mdx_demucs_b_tiny", "mdx_hdemucs_mask_tiny",
                                      "mdx_hdemucs_cac_tiny"};
    static const double wm[] = {1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 1};
    CHECK(models_are(s, 4, mdx));
    CHECK(weights_are(s, 4, 4, wm));
    CHECK(s && s->has_segment && s->segment == 44.0);
    dmx__bag_spec_free(s);
    s = NULL;
    path = golden_path("zoo/models/mmi_tiny.yaml");
    CHECK_MSG(dmx__bag_yaml_load(path, &s) == DMX_OK, "%s: %s", path, dmx_last_error());
    static const char *const mmi[] = {"hdemucs_mmi_tiny"};
    CHECK(models_are(s, 1, mmi));
    CHECK(s && !s->has_weights && s->has_segment && s->segment == 44.0);
    dmx__bag_spec_free(s);
}

static void test_upstream_style(void) {
    /* upstream's remote/htdemucs_ft.yaml */
    dmx__bag_spec *s = PARSE_OK("models: ['f7e0c4bc', 'd12395a8', '92cba59e', '04573f0d']\n"
                                "weights: [\n"
                                "    [1., 0., 0., 0.],\n"
                                "    [0., 1., 0., 0.],\n"
                                "    [0., 0., 1., 0.],\n"
                                "    [0., 0., 0., 1.],\n"
                                "]\n");
    static const char *const ft[] = {"f7e0c4bc", "d12395a8", "92cba59e", "04573f0d"};
    static const double eye[] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    CHECK(models_are(s, 4, ft));
    CHECK(weights_are(s, 4, 4, eye));
    dmx__bag_spec_free(s);

    /* mdx-style: weights then a segment; hdemucs_mmi-style: one model, no weights */
    s = PARSE_OK("models: ['0d19c1c6', '7ecf8ec1']\nweights: [[1., 1., 0., 0.], [0., 1., 0., 0.]]\nsegment: 44\n");
    CHECK(s && s->n_models == 2 && s->has_segment && s->segment == 44.0 && s->weight_cols == 4);
    dmx__bag_spec_free(s);
    s = PARSE_OK("models: ['75fc33f5']\nsegment: 44\n");
    CHECK(s && s->n_models == 1 && !s->has_weights && !s->weights && s->weight_rows == 0 && s->segment == 44.0);
    dmx__bag_spec_free(s);
}

static void test_block_and_variants(void) {
    static const char *const ab[] = {"a", "b"};
    dmx__bag_spec *s = PARSE_OK("# a bag\n"
                                "models:   # the members\n"
                                "  - a    # first\n"
                                "\n"
                                "  - \"b\"\n"
                                "weights:\n"
                                "  - [1, 0.5e-1]\n"
                                "  - [-2, .5]\n"
                                "segment: 7.8\n");
    static const double w1[] = {1, 0.05, -2, 0.5};
    CHECK(models_are(s, 2, ab));
    CHECK(weights_are(s, 2, 2, w1));
    CHECK(s && s->has_segment && s->segment == 7.8);
    dmx__bag_spec_free(s);

    /* block list at the key's own indentation */
    s = PARSE_OK("models:\n- a\n- b\n");
    CHECK(models_are(s, 2, ab));
    dmx__bag_spec_free(s);

    /* plain scalars, trailing commas, CRLF, BOM, nulls, unknown keys, '---' */
    s = PARSE_OK("\xef\xbb\xbf---\r\nfoo: [1, [2, 'x'], bar]\r\nmodels: [a, b,]\r\nweights: null\r\nsegment: ~\r\n...\r\n");
    CHECK(models_are(s, 2, ab));
    CHECK(s && !s->has_weights && !s->has_segment);
    dmx__bag_spec_free(s);

    s = PARSE_OK("models: ['it''s', \"q\\\"x\"]\nweights: [[1],[2]]");
    static const char *const q[] = {"it's", "q\"x"};
    static const double w2[] = {1, 2};
    CHECK(models_are(s, 2, q));
    CHECK(weights_are(s, 2, 1, w2));
    dmx__bag_spec_free(s);

    /* YAML that the old hand-written subset refused, read as PyYAML does:
     * an indented top-level mapping, an anchor, a tuple tag, a folded line */
    s = PARSE_OK("  models: &m !!python/tuple [a, b]\n  segment: 10\n");
    CHECK(models_are(s, 2, ab));
    CHECK(s && s->has_segment && s->segment == 10.0);
    dmx__bag_spec_free(s);
    s = PARSE_OK("models:\n  - a\n    - b\n");
    static const char *const folded[] = {"a - b"};
    CHECK(models_are(s, 1, folded));
    dmx__bag_spec_free(s);

    /* flow list spanning lines with comments inside */
    s = PARSE_OK("models: [\n  a, # first\n\n  b  # second\n]\n");
    CHECK(models_are(s, 2, ab));
    dmx__bag_spec_free(s);
}

static void test_malformed(void) {
    /* libyaml's own messages for syntax errors, at the line it stops on */
    PARSE_BAD("models: ['a', 'b'\n", "line 2: did not find expected ',' or ']' while parsing a flow sequence");
    PARSE_BAD("models: ['a', 'b']\nweights: [\n  [1, 0],\n  [0, 1],\n", "line 5: did not find expected node content");
    PARSE_BAD("models: ['a',\n 'b'\nweights: [1]\n", "line 3: did not find expected ',' or ']'");
    PARSE_BAD("models: [a, b]\nweights: [\n  [1, 0, 1, 0.5],\n  [0, 1, 1],\n]\n",
              "line 4: 'weights' row 2 has 3 values but row 1 has 4");
    PARSE_BAD("models: [a, b]\nweights: [[1], [2], [3]]\n", "line 2: 'weights' has 3 rows but there are 2 models");
    PARSE_BAD("models: [a]\nweights: [[1, x]]\n", "line 2: 'weights' row 1, column 2 is not a number");
    PARSE_BAD("models: [a]\nweights: [[1, '2']]\n", "column 2 is not a number");
    PARSE_BAD("models: [a]\nweights: [[]]\n", "'weights' row 1 is empty");
    PARSE_BAD("models: [a]\nweights: [1]\n", "'weights' row 1 is not a list");
    PARSE_BAD("models: [a]\nweights: 3\n", "'weights' must be a list");
    PARSE_BAD("models: ['a]\n", "line 2: found unexpected end of stream while scanning a quoted scalar");
    PARSE_BAD("models: [\"a\\q\"]\n", "line 1: found unknown escape character");
    PARSE_BAD("weights: [[1]]\n", "no 'models' key");
    PARSE_BAD("", "no 'models' key");
    PARSE_BAD("models: []\n", "line 1: 'models' is empty");
    PARSE_BAD("models: a\n", "'models' must be a list");
    PARSE_BAD("models:\n", "'models' must be a list");
    PARSE_BAD("models: [[a]]\n", "'models' item 1 is not a model name");
    PARSE_BAD("models:\n\t- a\n", "line 2: found character that cannot start any token");
    PARSE_BAD("models:\n  foo: bar\n", "line 2: 'models' must be a list of model names, not a mapping");
    PARSE_BAD("models: [a]\nmodels: [b]\n", "line 2: duplicate key 'models' (first on line 1)");
    PARSE_BAD("models: [a] junk\n", "line 1: did not find expected key");
    PARSE_BAD("models [a]\n", "line 1: expected 'key: value'");
    PARSE_BAD("models [a]\n", "line 1: expected 'key: value' at the top level, found a string");
    PARSE_BAD("- a\n", "found a list item");
    PARSE_BAD("models: {a: 1}\n", "line 1: 'models' must be a list of model names, not a mapping");
    PARSE_BAD("models: [{a: 1}]\n", "line 1: 'models' item 1 is not a model name (a mapping)");
    PARSE_BAD("models: &x [a]\nother: *x\n", "line 2: aliases (*x) are not supported");
    PARSE_BAD("models: |\n  a\n", "line 1: 'models' must be a list of model names, not a string");
    PARSE_BAD("models: [a]\nsegment: -1\n", "line 2: 'segment' must be a positive number");
    PARSE_BAD("models: [a]\nsegment: fast\n", "'segment' must be a positive number");
    PARSE_BAD("models: [a]\n---\nmodels: [b]\n", "line 2: several YAML documents");
    PARSE_BAD("models: [a, , b]\n", "line 1: did not find expected node content");
    PARSE_BAD("models:\n  - - a\n", "line 2: 'models' item 1 is not a model name (a sequence)");
    PARSE_BAD("models:\n  - a\n  b: 1\n", "line 3: did not find expected '-' indicator");
    PARSE_BAD("models:\n  -\n", "line 2: 'models' item 1 is not a model name (a null)");
    { /* nesting is bounded (yamltree.c: 64 levels) */
        char deep[200] = "models: ";
        for (int i = 0; i < 70; i++) strcat(deep, "[");
        strcat(deep, "a");
        for (int i = 0; i < 70; i++) strcat(deep, "]");
        PARSE_BAD(deep, "line 1: nested deeper than 64 levels");
    }
    PARSE_BAD("models: [a]\nweights: [[.nan]]\n", "line 2: 'weights' row 1, column 1 is not a number");
    PARSE_BAD("models: [a]\nsegment: .inf\n", "line 2: 'segment' must be a positive number");
    PARSE_BAD("models: [a]\nweights:\n  - [1]\n  - [2]\n", "line 3: 'weights' has 2 rows but there are 1 models");
    parse_bad("models: [a]\n\0\n", 14, "line 2: NUL byte", __LINE__);

    /* the file wrapper prefixes the path; missing files are NOT_FOUND */
    dmx__bag_spec *s = (dmx__bag_spec *)1;
    CHECK(dmx__bag_yaml_load("/nonexistent/bag.yaml", &s) == DMX_ERR_NOT_FOUND && s == NULL);
    CHECK(has(dmx_last_error(), "/nonexistent/bag.yaml"));
    dmx__bag_spec_free(NULL);
}

static void test_hostile(void) {
    static const char good[] = "# bag\nmodels: ['a', \"b\"]\nweights: [\n  [1., 0., 1., 0.5],\n  [0., 1., 1., 0.5],\n]\n"
                               "extra:\n  - x\n  - [1, [2]]\nsegment: 44\n";
    dmx__bag_spec *s = PARSE_OK(good);
    CHECK(s && s->n_models == 2 && s->weight_cols == 4 && s->segment == 44.0);
    dmx__bag_spec_free(s);
    size_t n = sizeof good - 1;
    /* every prefix: parses or fails cleanly (no reads past len: ASan) */
    for (size_t cut = 0; cut <= n; cut++) {
        char *t = malloc(cut ? cut : 1);
        REQUIRE(t);
        memcpy(t, good, cut);
        dmx__bag_spec *x = NULL;
        dmx_status st = dmx__bag_yaml_parse(t, cut, &x);
        CHECK(st == DMX_OK || st == DMX_ERR_CORRUPT);
        CHECK((st == DMX_OK) == (x != NULL));
        dmx__bag_spec_free(x);
        free(t);
    }
    uint64_t rng = 12345;
    static const char alphabet[] = "[]{},:-#'\"\n\t \\ab1.e&|>~\r";
    char *t = malloc(n);
    REQUIRE(t);
    for (int it = 0; it < 20000; it++) {
        memcpy(t, good, n);
        for (int k = 0; k <= it % 3; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % n;
            t[at] = alphabet[(rng >> 20) % (sizeof alphabet - 1)];
        }
        dmx__bag_spec *x = NULL;
        dmx_status st = dmx__bag_yaml_parse(t, n, &x);
        CHECK(st == DMX_OK || st == DMX_ERR_CORRUPT);
        if (st == DMX_ERR_CORRUPT) CHECK(has(dmx_last_error(), "line ") || has(dmx_last_error(), "models"));
        dmx__bag_spec_free(x);
    }
    free(t);
}

static void touch(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    REQUIRE(write_file(p, "x", 1) == 0);
}

static void test_resolve(void) {
    char dir[] = "/tmp/dmx_bagyaml_XXXXXX";
    REQUIRE(mkdtemp(dir));
    static const char *const files[] = {"bag.yaml",      "a-abcdef12.th",    "a_extra-abcdef12.th", "b.th",
                                        "dup.th",        "dup-0123.th",      "two-aa.th",           "two-bb.th",
                                        "odd-xyz.th",    "c-ABCDEF.th.bak",  "c.pt"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) touch(dir, files[i]);
    char yaml[4096];
    snprintf(yaml, sizeof yaml, "%s/bag.yaml", dir);

    char *p = NULL, *sum = NULL;
    CHECK(dmx__bag_resolve_ex(yaml, "a", &p, &sum) == DMX_OK);
    CHECK(p && has(p, dir) && has(p, "/a-abcdef12.th") && sum && !strcmp(sum, "abcdef12"));
    free(p);
    free(sum);
    p = NULL;
    CHECK(dmx__bag_resolve(yaml, "b", &p) == DMX_OK && p && has(p, "/b.th"));
    free(p);
    p = (char *)1;
    CHECK(dmx__bag_resolve(yaml, "dup", &p) == DMX_ERR_INVALID_ARG && p == NULL);
    CHECK(has(dmx_last_error(), "dup.th") && has(dmx_last_error(), "dup-0123.th"));
    CHECK(dmx__bag_resolve(yaml, "two", &p) == DMX_ERR_INVALID_ARG && has(dmx_last_error(), "delete all but one"));
    /* the registry's rule: "odd-xyz.th" is signature "odd" with a checksum that is not hex */
    CHECK(dmx__bag_resolve(yaml, "odd", &p) == DMX_ERR_INVALID_ARG && has(dmx_last_error(), "not a hex checksum"));
    CHECK(dmx__bag_resolve(yaml, "c", &p) == DMX_ERR_NOT_FOUND && has(dmx_last_error(), "'c.th'"));
    CHECK(dmx__bag_resolve(yaml, "missing", &p) == DMX_ERR_NOT_FOUND && has(dmx_last_error(), dir));
    CHECK(dmx__bag_resolve(yaml, "../b", &p) == DMX_ERR_INVALID_ARG);
    CHECK(dmx__bag_resolve(yaml, "", &p) == DMX_ERR_INVALID_ARG);
    CHECK(dmx__bag_resolve(yaml, "..", &p) == DMX_ERR_INVALID_ARG);
    CHECK(dmx__bag_resolve("/nonexistent/dir/bag.yaml", "a", &p) == DMX_ERR_NOT_FOUND);

    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char f[4096];
        snprintf(f, sizeof f, "%s/%s", dir, files[i]);
        unlink(f);
    }
    rmdir(dir);
}

int main(void) {
    test_golden();
    test_upstream_style();
    test_block_and_variants();
    test_malformed();
    test_hostile();
    test_resolve();
    return dmx_test_done("test_bagyaml");
}
