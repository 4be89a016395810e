/*
 * test_observ.c - unit tests of the service's observability and output
 * pieces (tests/server.cmake, label unit): the UTF-8 truncation rule
 * (log.c), label values and the alert series budget (metrics.c), counters
 * declared at 0, text log escaping and the engine log rate limit (log.c),
 * and ZIP64 archives from zip.c with the threshold lowered (checked with
 * python3's zipfile and `unzip -t` when present).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server.h"

static int failures;
#define CHECK(c, ...)                                                                 \
    do {                                                                              \
        if (!(c)) {                                                                   \
            failures++;                                                               \
            fprintf(stdout, "FAIL %s:%d: ", __FILE__, __LINE__);                      \
            fprintf(stdout, __VA_ARGS__);                                             \
            fputc('\n', stdout);                                                      \
        }                                                                             \
    } while (0)

/* 1 if s is valid UTF-8 (strict: no overlongs, surrogates or cut characters). */
static int valid_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0) return 0;
        unsigned cp = n == 0 ? *p : *p & (0x3F >> n);
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += n + 1;
    }
    return 1;
}

static void test_utf8_copy(void) {
    char e60[121] = "", out[96];
    for (int i = 0; i < 60; i++) strcat(e60, "\xc3\xa9");
    size_t n = srv_utf8_copy(out, sizeof out, e60);
    CHECK(n == 94 && valid_utf8(out), "60 x e-acute cut to 95 bytes: %zu bytes, valid %d", n,
          valid_utf8(out));
    n = srv_utf8_copy(out, 6, "ab\xe2\x82\xac"); /* "ab€" needs 6 bytes with the NUL */
    CHECK(n == 5 && !strcmp(out, "ab\xe2\x82\xac"), "fits exactly: %s", out);
    n = srv_utf8_copy(out, 5, "ab\xe2\x82\xac");
    CHECK(n == 2 && !strcmp(out, "ab"), "a character that does not fit is dropped whole: %s", out);
    srv_utf8_copy(out, sizeof out, "a\xff" "b\xc0\xafz\xed\xa0\x80!");
    CHECK(valid_utf8(out) && out[0] == 'a' && out[1] == '?' && out[2] == 'b', "invalid bytes: %s", out);
    char cut[] = "xy\xe2\x82"; /* a truncation upstream cut the last character */
    srv_utf8_copy(cut, sizeof cut, cut);
    CHECK(!strcmp(cut, "xy"), "a cut character at the end is dropped: %s", cut);
    srv_utf8_copy(out, sizeof out, NULL);
    CHECK(!strcmp(out, ""), "NULL is the empty string");
}

/* Each line of a rendered exposition that holds NEEDLE; returns how many. */
static int count_lines(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_metrics(void) {
    char e60[121] = "";
    for (int i = 0; i < 60; i++) strcat(e60, "\xc3\xa9");
    srv_metrics_alert(e60, "warning", "firing");
    srv_metrics_alert("a\"b\\c\nd", "made-up", "firing");
    char name[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "Invented%d", i);
        srv_metrics_alert(name, "critical", "firing");
    }
    srv_metrics_alert("DemixDown", "critical", "firing");
    srv_metrics_alert("DemixDown", "critical", "resolved");
    srv_metrics_declare_separation("htdemucs", "done");
    srv_metrics_declare_error("queue_full", "/separate");
    /* Declared series leave room for real ones: 300 declared models do not
     * stop a real separation from being counted. */
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "model%d", i);
        srv_metrics_declare_separation(name, "done");
    }
    srv_metrics_separation("real", "done", 1.0);
    srv_metrics_gauges g = {.models_loaded = 2, .queue_depth = 3};
    char *t = srv_metrics_render(&g);
    CHECK(t != NULL, "render");
    if (!t) return;
    CHECK(valid_utf8(t), "the exposition is valid UTF-8");
    CHECK(strstr(t, "alerts_received_total{alertname=\"DemixDown\",severity=\"critical\",status=\"firing\"} 1\n") &&
              strstr(t, "alerts_received_total{alertname=\"DemixDown\",severity=\"critical\",status=\"resolved\"} 1\n"),
          "a known alert keeps its series after 300 invented names");
    /* 16 outside names had room: the e-acute one, the escaped one, Invented0..13. */
    CHECK(strstr(t, "alertname=\"Invented13\",") && !strstr(t, "alertname=\"Invented14\","),
          "outside names beyond the budget are not series of their own");
    CHECK(strstr(t, "alerts_received_total{alertname=\"other\",severity=\"critical\",status=\"firing\"} 286\n"),
          "the rest are counted as alertname=\"other\"");
    CHECK(strstr(t, "alertname=\"a\\\"b\\\\c\\nd\",severity=\"other\""),
          "quote, backslash and newline escaped; unknown severity is \"other\"");
    CHECK(count_lines(t, "alerts_received_total{") <= 19, "alert series bounded: %d",
          count_lines(t, "alerts_received_total{"));
    CHECK(strstr(t, "separations_total{model=\"htdemucs\",status=\"done\"} 0\n") &&
              strstr(t, "separation_duration_seconds_count{model=\"htdemucs\"} 0\n"),
          "a declared separation series exists at 0");
    CHECK(strstr(t, "separations_total{model=\"real\",status=\"done\"} 1\n"),
          "a real separation is counted after many declared models");
    CHECK(strstr(t, "errors_total{type=\"queue_full\",endpoint=\"/separate\"} 0\n"),
          "a declared error series exists at 0");
    CHECK(strstr(t, "\nmodels_loaded 2\n") && strstr(t, "\nqueue_depth 3\n"),
          "gauges come from the snapshot");
    /* Every label value is closed on its line: an even number of unescaped quotes. */
    for (char *line = t, *end; *line; line = end + 1) {
        end = strchr(line, '\n');
        if (!end) break;
        int q = 0;
        for (char *p = line; p < end; p++) {
            if (*p == '\\') p++;
            else if (*p == '"') q++;
        }
        if (q % 2) {
            CHECK(0, "unbalanced quotes: %.*s", (int)(end - line), line);
            break;
        }
    }
    free(t);
}

/* Runs fn with stderr redirected to a file; returns what it wrote (malloc'ed). */
static char *capture(void (*fn)(void)) {
    char path[] = "/tmp/test_observ_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fdopen(fd, "r");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = calloc(1, (size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = '\0';
    fclose(f);
    unlink(path);
    return s;
}

static void log_forged(void) {
    srv_log_configure(1, DMX_LOG_INFO);
    srv_log(DMX_LOG_INFO, "demix.test", "test", "rid\nX", NULL,
                "model 'x'\n2026-01-01T00:00:00.000Z error   demix.auth [-] forged\x1b[2J");
    srv_log_configure(0, DMX_LOG_INFO);
}

static void test_text_log(void) {
    char *s = capture(log_forged);
    CHECK(s && count_lines(s, "\n") == 1, "one text line whatever the message holds: %s", s ? s : "");
    CHECK(s && strstr(s, "'x'\\n2026") && strstr(s, "\\x1b[2J") && strstr(s, "[rid\\nX]"),
          "newline and escape shown escaped: %s", s ? s : "");
    free(s);
}

static void log_long(void) {
    char msg[3000] = "";
    for (int i = 0; i < 1400; i++) strcat(msg, "\xc3\xa9");
    srv_log(DMX_LOG_INFO, "demix.test", "test", NULL, NULL, "%s", msg);
}

static void test_long_log(void) {
    char *s = capture(log_long);
    CHECK(s && valid_utf8(s) && strstr(s, "\"message\":\"\xc3\xa9"), "a long message is cut between characters");
    free(s);
}

static void log_flood(void) {
    for (int i = 0; i < 1373; i++)
        srv_engine_log(NULL, DMX_LOG_WARN, "[flac @ 0x1] invalid residual\n");
    srv_log_flush();
}

static void test_engine_rate_limit(void) {
    char *s = capture(log_flood);
    int lines = s ? count_lines(s, "\"event_type\":\"engine\"") : -1;
    CHECK(lines >= 1 && lines <= 40, "1373 FFmpeg warnings in a burst: %d engine lines written", lines);
    char want[64];
    snprintf(want, sizeof want, "\"dropped\":%d", 1373 - lines);
    CHECK(s && strstr(s, "\"event_type\":\"log_suppressed\"") && strstr(s, want),
          "one summary line counts the %d dropped ones", 1373 - lines);
    free(s);
}

/* ---- ZIP64 ---------------------------------------------------------------------------- */

static int sh(const char *cmd) {
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

static void write_file(const char *path, size_t n, int seed) {
    FILE *f = fopen(path, "wb");
    for (size_t i = 0; f && i < n; i++) fputc((int)((i * 31 + (size_t)seed) & 0xFF), f);
    if (f) fclose(f);
}

static void test_zip(uint64_t threshold, const char *what) {
    char dir[] = "/tmp/test_observ_zip_XXXXXX";
    if (!mkdtemp(dir)) return;
    char *paths[3], *names[3] = {"drums.wav", "bass.wav", "vocals.wav"}, zp[256], cmd[1024];
    for (int i = 0; i < 3; i++) {
        if (asprintf(&paths[i], "%s/in%d", dir, i) < 0) return;
        write_file(paths[i], 3000 + 1000 * (size_t)i, i);
    }
    snprintf(zp, sizeof zp, "%s/stems.zip", dir);
    srv_zip64_threshold = threshold;
    int rc = srv_zip_write(zp, paths, names, 3);
    srv_zip64_threshold = 0xFFFFFFFFu;
    CHECK(rc == 0, "%s: srv_zip_write", what);
    /* python3's zipfile: every entry's CRC, the names and contents. */
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import sys,zipfile\n"
             "z=zipfile.ZipFile(sys.argv[1])\n"
             "assert z.testzip() is None\n"
             "assert z.namelist()==[\"drums.wav\",\"bass.wav\",\"vocals.wav\"], z.namelist()\n"
             "for i,n in enumerate(z.namelist()):\n"
             "  assert z.read(n)==open(sys.argv[2]+\"/in%%d\"%%i,\"rb\").read(), n\n"
             "z64=open(sys.argv[1],\"rb\").read().find(b\"PK\\x06\\x06\")>=0\n"
             "sys.exit(0 if z64==(sys.argv[3]==\"1\") else 3)' %s %s %d",
             zp, dir, threshold < 0xFFFFFFFFu);
    CHECK(sh(cmd) == 0, "%s: python3 zipfile reads it back (ZIP64 end record iff needed)", what);
    if (sh("command -v unzip >/dev/null") == 0) {
        snprintf(cmd, sizeof cmd, "unzip -tq %s >/dev/null", zp);
        CHECK(sh(cmd) == 0, "%s: unzip -t", what);
    }
    for (int i = 0; i < 3; i++) {
        unlink(paths[i]);
        free(paths[i]);
    }
    unlink(zp);
    rmdir(dir);
}

int main(void) {
    test_utf8_copy();
    test_metrics();
    test_text_log();
    test_long_log();
    test_engine_rate_limit();
    test_zip(0xFFFFFFFFu, "plain zip");
    test_zip(1000, "ZIP64 (threshold 1000: sizes, offsets and directory past it)");
    test_zip(6000, "ZIP64 (threshold 6000: only the last offset and the directory past it)");
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
