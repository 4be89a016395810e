/*
 * testutil.h - a tiny assert harness for demix tests (libuv task.h style),
 * plus .npy loading and golden-file helpers.
 */
#ifndef DMX_TESTUTIL_H
#define DMX_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "demix/demix.h"

extern int dmx_test_failures;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            dmx_test_failures++;                                                 \
        }                                                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
            dmx_test_failures++;                                                 \
        }                                                                        \
    } while (0)

/* Fatal: stops the test immediately. */
#define REQUIRE(cond)                                                            \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

/* Prints a summary line and returns the process exit code. */
int dmx_test_done(const char *name);

/* A loaded .npy array (little-endian float32, C order). */
typedef struct {
    int ndim;
    int64_t shape[8];
    size_t numel;
    float *data; /* (numel), owned; free with npy_free */
} npy_array;

/* Loads a float32 .npy; returns 0 on success. */
int npy_load(const char *path, npy_array *out);
void npy_free(npy_array *a);

/* Directory of the golden fixtures (DEMIX_GOLDEN_DIR or ../shared/golden). */
const char *golden_dir(void);
/* Joins golden_dir()/rel into a static buffer (one of 8 rotating buffers). */
const char *golden_path(const char *rel);

/* max|a-b| / max|ref|, with the components reported through out params. */
double rel_max_err(const float *ours, const float *ref, size_t n,
                   double *max_abs_diff, double *max_abs_ref);

/* Reads a whole file; returns NULL on failure. *len gets the size. */
unsigned char *read_file(const char *path, size_t *len);
/* Writes a whole file; 0 on success. */
int write_file(const char *path, const void *buf, size_t len);

/* Compares ours with ref: prints the line "<name> max|ours-ref| = ... ratio =
 * ... (tolerance ...)" (name left-aligned in `width` columns) and CHECKs
 * max|ours-ref| / max|ref| <= tol. Returns the ratio. */
double tu_compare_ratio(const char *name, int width, const float *ours, const float *ref, size_t n,
                        double tol);
/* The same against the .npy at path, holding rows x ceil(len / stride)
 * values: ours (rows, len) is compared at every stride-th sample. */
double tu_compare_strided(const char *name, int width, const char *path, const float *ours, int rows,
                          int64_t len, int stride, double tol);
/* tu_compare_strided with one row and stride 1: the .npy holds n values. */
double tu_compare_npy(const char *name, int width, const char *path, const float *ours, size_t n, double tol);

/* Upstream's separator as the golden fixtures ran it (shifts 0, overlap
 * 0.25, normalize as given) on the planar mix (A channels of len); returns
 * the planar output (S * A rows of len, malloc'ed, caller frees). CHECKs that
 * dmx_separate succeeded. */
float *tu_separate(dmx_model *m, const float *mix, int64_t len, int normalize);
/* Gathers, for each of the nw windows starts[w], `width` samples of every
 * row of x (rows of len) into a new (nw, rows, width) array (caller frees). */
float *tu_windows(const float *x, int rows, int64_t len, const int64_t *starts, int nw, int width);

/* Loads golden zoo/models/<model>.th; exits with a message on failure. */
struct dmx__ckpt *tu_load_zoo_ckpt(const char *model);

/* Checkpoint patching for error tests: a torch.save zip edited in memory by
 * same-length replacements inside data.pkl, then tu_zip_fix_pkl_crc so only
 * the model builder can object. */
/* Recomputes the CRC-32 of every entry named *data.pkl in local header, data
 * descriptor and central directory. */
void tu_zip_fix_pkl_crc(unsigned char *b, size_t len);
/* First occurrence of needle in hay[0, n), or NULL. */
unsigned char *tu_memfind(unsigned char *hay, size_t n, const void *needle, size_t nl);
/* malloc'ed copy of p[0, n) (caller frees). */
unsigned char *tu_memdup(const void *p, size_t n);
/* Replaces the first occurrence of from (n bytes) with to, at or after the
 * first occurrence of `after` when that is not NULL; REQUIREs both found. */
void tu_patch(unsigned char *b, size_t len, const void *from, const void *to, size_t n, const char *after);
/* mkstemp(path) (a template, rewritten) and writes buf[0, len) to it. */
void tu_write_tmp(const void *buf, size_t len, char *path);
/* Writes buf (len bytes, the caller's) to a temporary file and CHECKs that
 * dmx_model_load loads it. */
void tu_expect_load_ok(const unsigned char *buf, size_t len);
/* Writes buf (len bytes, freed here) to a temporary file and CHECKs that
 * dmx_model_load fails on it with `want`, a NULL model and a message holding
 * `phrase`; prints "<what> -> STATUS: message". */
void tu_expect_load_error(unsigned char *buf, size_t len, dmx_status want, const char *phrase,
                          const char *what);

#endif
