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
/* A torch.save zip (len bytes) whose data.pkl was patched in place: recomputes
 * the CRC-32 of every entry named *data.pkl (central directory, local header,
 * data descriptor) so the loader reads the patched pickle. */
void dmx_test_fix_pkl_crc(unsigned char *b, size_t len);

#endif
