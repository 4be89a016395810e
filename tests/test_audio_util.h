/*
 * test_audio_util.h - helpers for the audio I/O tests (test_audio_*.c):
 * a scratch directory, running the ffmpeg CLI to make input files, raw
 * float files, and simple signal measurements. Header-only (static).
 */
#ifndef DMX_TEST_AUDIO_UTIL_H
#define DMX_TEST_AUDIO_UTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "demix/audio.h"
#include "testutil.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static char ta_dir[256];

/* Creates the scratch directory (fatal on failure). */
static inline void ta_setup(void) {
    const char *t = getenv("TMPDIR");
    snprintf(ta_dir, sizeof ta_dir, "%s/demix_audio_XXXXXX", t && *t ? t : "/tmp");
    REQUIRE(mkdtemp(ta_dir) != NULL);
}

/* Removes the scratch directory and everything in it. */
static inline void ta_cleanup(void) {
    char cmd[512];
    if (!ta_dir[0]) return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ta_dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", ta_dir);
}

/* Path of `name` in the scratch directory (one of 8 rotating buffers). */
static inline const char *ta_path(const char *name) {
    static char bufs[8][512];
    static int k = 0;
    char *b = bufs[k++ & 7];
    snprintf(b, 512, "%s/%s", ta_dir, name);
    return b;
}

static inline int ta_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Runs a shell command (printf-style) from inside the scratch directory;
 * returns its exit status. */
static inline int ta_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int ta_sh(const char *fmt, ...) {
    char cmd[4096], full[4600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "cd '%s' && %s", ta_dir, cmd);
    int rc = system(full);
    if (rc != 0) fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}

/* Runs the ffmpeg CLI quietly with the given arguments. */
#define TA_FFMPEG(...) ta_sh("ffmpeg -nostdin -hide_banner -loglevel error -y " __VA_ARGS__)

/* Writes interleaved float32 little-endian raw audio (for `ffmpeg -f f32le`). */
static inline void ta_write_f32(const char *name, float *const *planar, int ch, int64_t n) {
    float *buf = malloc((size_t)(n * ch) * sizeof(float));
    REQUIRE(buf);
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < ch; c++) buf[i * ch + c] = planar[c][i];
    REQUIRE(write_file(ta_path(name), buf, (size_t)(n * ch) * sizeof(float)) == 0);
    free(buf);
}

/* Reads raw interleaved float32 into new planar buffers (free with
 * dmx_audio_free). */
static inline float **ta_read_f32(const char *name, int ch, int64_t *n) {
    size_t len = 0;
    unsigned char *raw = read_file(ta_path(name), &len);
    REQUIRE(raw);
    *n = (int64_t)(len / sizeof(float) / (size_t)ch);
    float **p = calloc((size_t)ch, sizeof *p);
    REQUIRE(p);
    for (int c = 0; c < ch; c++) {
        p[c] = malloc((size_t)(*n + 1) * sizeof(float));
        REQUIRE(p[c]);
        for (int64_t i = 0; i < *n; i++)
            memcpy(&p[c][i], raw + ((size_t)(i * ch + c)) * sizeof(float), sizeof(float));
    }
    free(raw);
    return p;
}

/* New planar buffers: channel c is amp * sin(2 pi f_c t), f_c = freq * (c + 1). */
static inline float **ta_sine(int ch, int64_t n, double rate, double freq, double amp) {
    float **p = calloc((size_t)ch, sizeof *p);
    REQUIRE(p);
    for (int c = 0; c < ch; c++) {
        p[c] = malloc((size_t)n * sizeof(float));
        REQUIRE(p[c]);
        for (int64_t i = 0; i < n; i++)
            p[c][i] = (float)(amp * sin(2 * M_PI * freq * (c + 1) * (double)i / rate));
    }
    return p;
}

/* Upward zero crossings of x[from, to). */
static inline int64_t ta_zero_crossings(const float *x, int64_t from, int64_t to) {
    int64_t z = 0;
    for (int64_t i = from + 1; i < to; i++)
        if (x[i - 1] < 0 && x[i] >= 0) z++;
    return z;
}

static inline double ta_rms(const float *x, int64_t from, int64_t to) {
    double s = 0;
    for (int64_t i = from; i < to; i++) s += (double)x[i] * x[i];
    return to > from ? sqrt(s / (double)(to - from)) : 0;
}

/* Max |a - b| over [from, to). */
static inline double ta_max_diff(const float *a, const float *b, int64_t from, int64_t to) {
    double m = 0;
    for (int64_t i = from; i < to; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

/* Normalised cross-correlation of a and b over [from, to). */
static inline double ta_corr(const float *a, const float *b, int64_t from, int64_t to) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = from; i < to; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
}

/* 1 if the error detail is a single non-empty line. */
static inline int ta_one_line_error(void) {
    const char *e = dmx_last_error();
    return e && *e && !strchr(e, '\n');
}

#endif
