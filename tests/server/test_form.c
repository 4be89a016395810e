/*
 * test_form.c - unit test of the pure parts of POST /separate and of the
 * error table: srv_separate_parse (defaults, every field's rule),
 * srv_error_scrub_paths (no server path in client messages) and
 * SRV_ERROR_MAP lookups. No server runs.
 */
#include <string.h>

#include "separate.h"
#include "testutil.h"

static int parse(const char *model, const char *stems, const char *fmt, const char *shifts,
                 const char *overlap, const char *wait, srv_separate_request *q) {
    srv_separate_fields f;
    memset(&f, 0, sizeof f);
    snprintf(f.model_name, sizeof f.model_name, "%s", model);
    snprintf(f.two_stems, sizeof f.two_stems, "%s", stems);
    snprintf(f.format, sizeof f.format, "%s", fmt);
    snprintf(f.shifts, sizeof f.shifts, "%s", shifts);
    snprintf(f.overlap, sizeof f.overlap, "%s", overlap);
    snprintf(f.wait, sizeof f.wait, "%s", wait);
    srv_error code = SRV_E_COUNT;
    char msg[256] = "";
    int rc = srv_separate_parse(&f, q, &code, msg, sizeof msg);
    if (rc < 0) {
        CHECK(code == SRV_E_INVALID_ARGUMENT);
        CHECK(msg[0] != '\0');
    }
    return rc;
}

static void test_parse(void) {
    srv_separate_request q;
    REQUIRE(parse("", "", "", "", "", "", &q) == 0);
    CHECK(!strcmp(q.model, "htdemucs") && !q.two_stems[0] && !strcmp(q.format, "wav"));
    CHECK(q.shifts == 1 && q.overlap == 0.25 && q.wait == 0);
    REQUIRE(parse("tiny4s", "vocals", "flac", "0", "0.5", "true", &q) == 0);
    CHECK(!strcmp(q.model, "tiny4s") && !strcmp(q.two_stems, "vocals") && !strcmp(q.format, "flac"));
    CHECK(q.shifts == 0 && q.overlap == 0.5 && q.wait == 1);
    CHECK(parse("", "", "mp3", "100", "0", "yes", &q) == 0 && q.shifts == 100 && q.wait == 1);
    CHECK(parse("", "", "", "", "", "no", &q) == 0 && q.wait == 0);
    /* every rule */
    CHECK(parse("", "", "ogg", "", "", "", &q) < 0);
    CHECK(parse("", "", "WAV", "", "", "", &q) < 0);
    CHECK(parse("", "", "", "101", "", "", &q) < 0);
    CHECK(parse("", "", "", "-1", "", "", &q) < 0);
    CHECK(parse("", "", "", "1x", "", "", &q) < 0);
    CHECK(parse("", "", "", " ", "", "", &q) < 0);
    CHECK(parse("", "", "", "", "1", "", &q) < 0);
    CHECK(parse("", "", "", "", "-0.1", "", &q) < 0);
    CHECK(parse("", "", "", "", "nan", "", &q) < 0);
    CHECK(parse("", "", "", "", "0.2.", "", &q) < 0);
    char longs[128];
    memset(longs, 'a', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    CHECK(parse(longs, "", "", "", "", "", &q) < 0);
    longs[100] = '\0';
    CHECK(parse(longs, "", "", "", "", "", &q) < 0);
    longs[99] = '\0';
    CHECK(parse(longs, "", "", "", "", "", &q) == 0 && strlen(q.model) == 99);
    longs[60] = '\0';
    CHECK(parse("", longs, "", "", "", "", &q) < 0);
    longs[59] = '\0';
    CHECK(parse("", longs, "", "", "", "", &q) == 0);
}

static void scrub(const char *in, const char *want) {
    char b[256];
    snprintf(b, sizeof b, "%s", in);
    srv_error_scrub_paths(b);
    CHECK_MSG(!strcmp(b, want), "'%s' -> '%s', want '%s'", in, b, want);
}

static void test_scrub(void) {
    scrub("demix-data/jobs/0a1b/input: Invalid data found", "input: Invalid data found");
    scrub("cannot load model 'm': /srv/models/m.th: corrupt zip", "cannot load model 'm': m.th: corrupt zip");
    scrub("cannot write the stems: /a/b/vocals.wav.part: No space left on device (28)",
          "cannot write the stems: vocals.wav.part: No space left on device (28)");
    scrub("'/x/y' and \"/p/q\"", "'y' and \"q\"");
    scrub("no path here", "no path here");
    scrub("", "");
    scrub("/", "");
}

static void test_table(void) {
    CHECK(srv_error_status("queue_full") == 503);
    CHECK(srv_error_status("insufficient_storage") == 507);
    CHECK(srv_error_status("store_unavailable") == 503);
    CHECK(srv_error_status("job_not_found") == 404);
    CHECK(srv_error_status("no such code") == 500);
    for (int e = 0; e < SRV_E_COUNT; e++) {
        const char *code = srv_error_code((srv_error)e);
        /* each code once: the lookup by name finds this row's status */
        CHECK_MSG(srv_error_status(code) == srv_error_status_of((srv_error)e), "%s", code);
        for (int k = 0; k < e; k++) CHECK(strcmp(code, srv_error_code((srv_error)k)));
    }
    CHECK(!strcmp(srv_error_code(SRV_E_AUDIO_TOO_LONG), "audio_too_long"));
}

int main(void) {
    test_parse();
    test_scrub();
    test_table();
    return dmx_test_done("test_server_form");
}
