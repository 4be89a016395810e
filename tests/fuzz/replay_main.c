/*
 * replay_main.c - a main() for the fuzz targets when libFuzzer is not there
 * (any compiler): calls LLVMFuzzerTestOneInput once per file named on the
 * command line, recursing into directories, so ctest replays the committed
 * corpora and regression inputs (under ASan/UBSan in the sanitizer build).
 * Exits 1 if an argument cannot be read; a bug in a target shows up as a
 * crash or a sanitizer report, as under libFuzzer.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int n_run, n_bad;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stdout, "replay: cannot open %s\n", path);
        n_bad++;
        return;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0) break;
        n += got;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        fprintf(stdout, "replay: cannot read %s\n", path);
        free(buf);
        n_bad++;
        return;
    }
    /* An exact-size copy, so ASan sees reads past the input's end. */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(buf);
        n_bad++;
        return;
    }
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    n_run++;
}

static void run_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stdout, "replay: %s does not exist\n", path);
        n_bad++;
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        run_file(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stdout, "replay: cannot list %s\n", path);
        n_bad++;
        return;
    }
    /* Sorted, so a failing replay is reproducible in the same order. */
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) break;
            names = nn;
        }
        if (asprintf(&names[n], "%s/%s", path, e->d_name) < 0) break;
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        run_path(names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv) {
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        /* libFuzzer-style flags (-runs=N) are ignored, so one command line
         * serves both builds. */
        if (argv[i][0] == '-') continue;
        run_path(argv[i]);
    }
    printf("replay: %d input(s)%s\n", n_run, n_bad ? ", some unreadable" : "");
    return n_bad ? 1 : 0;
}
