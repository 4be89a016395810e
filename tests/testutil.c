/*
 * testutil.c - see testutil.h.
 */
#define _GNU_SOURCE /* mkstemp */
#include "testutil.h"

#include "ckpt.h"

#include <math.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

int dmx_test_failures = 0;

int dmx_test_done(const char *name) {
    if (dmx_test_failures) {
        fprintf(stderr, "%s: %d check(s) FAILED\n", name, dmx_test_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long sz = ftell(f);
    if (sz < 0) { fclose(f); return NULL; }
    rewind(f);
    unsigned char *buf = malloc((size_t)sz + 1);
    if (!buf) { fclose(f); return NULL; }
    if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) { free(buf); fclose(f); return NULL; }
    fclose(f);
    *len = (size_t)sz;
    return buf;
}

int write_file(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(buf, 1, len, f);
    if (fclose(f) != 0 || w != len) return -1;
    return 0;
}

int npy_load(const char *path, npy_array *out) {
    memset(out, 0, sizeof *out);
    size_t len;
    unsigned char *buf = read_file(path, &len);
    if (!buf) { fprintf(stderr, "npy_load: cannot read %s\n", path); return -1; }
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) goto bad;
    size_t hlen, hoff;
    if (buf[6] == 1) { hlen = buf[8] | (buf[9] << 8); hoff = 10; }
    else { if (len < 12) goto bad; hlen = buf[8] | (buf[9] << 8) | ((size_t)buf[10] << 16) | ((size_t)buf[11] << 24); hoff = 12; }
    if (hoff + hlen > len) goto bad;
    char *hdr = malloc(hlen + 1);
    memcpy(hdr, buf + hoff, hlen);
    hdr[hlen] = 0;
    if (!strstr(hdr, "'<f4'") || strstr(hdr, "'fortran_order': True")) { free(hdr); goto bad; }
    char *p = strstr(hdr, "'shape': (");
    if (!p) { free(hdr); goto bad; }
    p += 10;
    out->numel = 1;
    while (*p && *p != ')') {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        long long v = strtoll(p, &p, 10);
        out->shape[out->ndim++] = v;
        out->numel *= (size_t)v;
    }
    free(hdr);
    if (hoff + hlen + out->numel * 4 > len) goto bad;
    out->data = malloc(out->numel * sizeof(float) + 1);
    memcpy(out->data, buf + hoff + hlen, out->numel * 4);
    free(buf);
    return 0;
bad:
    fprintf(stderr, "npy_load: %s is not a float32 C-order .npy\n", path);
    free(buf);
    return -1;
}

void npy_free(npy_array *a) {
    free(a->data);
    a->data = NULL;
}

const char *golden_dir(void) {
    const char *d = getenv("DEMIX_GOLDEN_DIR");
    return (d && *d) ? d : "../shared/golden";
}

const char *golden_path(const char *rel) {
    static char bufs[8][4096];
    static int k = 0;
    char *b = bufs[k++ & 7];
    snprintf(b, 4096, "%s/%s", golden_dir(), rel);
    return b;
}

double rel_max_err(const float *ours, const float *ref, size_t n,
                   double *max_abs_diff, double *max_abs_ref) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)ours[i] - (double)ref[i]);
        if (!(d <= md)) md = d; /* also catches NaN */
        double r = fabs((double)ref[i]);
        if (r > mr) mr = r;
    }
    if (max_abs_diff) *max_abs_diff = md;
    if (max_abs_ref) *max_abs_ref = mr;
    return mr > 0 ? md / mr : md;
}

double tu_compare_ratio(const char *name, int width, const float *ours, const float *ref, size_t n,
                        double tol) {
    double mad, mref;
    double r = rel_max_err(ours, ref, n, &mad, &mref);
    printf("%-*s max|ours-ref| = %.3e  max|ref| = %.3e  ratio = %.3e (tolerance %.0e)\n", width, name, mad,
           mref, r, tol);
    CHECK_MSG(r <= tol, "%s: ratio %.3e exceeds %.0e", name, r, tol);
    return r;
}

double tu_compare_strided(const char *name, int width, const char *path, const float *ours, int rows,
                          int64_t len, int stride, double tol) {
    npy_array ref;
    REQUIRE(npy_load(path, &ref) == 0);
    int64_t ls = (len + stride - 1) / stride;
    REQUIRE(ref.numel == (size_t)rows * (size_t)ls);
    float *sub = malloc(sizeof(float) * (ref.numel ? ref.numel : 1));
    REQUIRE(sub);
    for (int r = 0; r < rows; r++)
        for (int64_t i = 0; i < ls; i++) sub[(size_t)r * ls + i] = ours[(size_t)r * len + i * stride];
    double q = tu_compare_ratio(name, width, sub, ref.data, ref.numel, tol);
    free(sub);
    npy_free(&ref);
    return q;
}

double tu_compare_npy(const char *name, int width, const char *path, const float *ours, size_t n, double tol) {
    return tu_compare_strided(name, width, path, ours, 1, (int64_t)n, 1, tol);
}

float *tu_separate(dmx_model *m, const float *mix, int64_t len, int normalize) {
    int S = dmx_model_n_sources(m), A = dmx_model_channels(m);
    REQUIRE(S * A <= 64 && A <= 8);
    float *out = malloc(sizeof(float) * (size_t)S * A * len);
    REQUIRE(out);
    float *outp[64];
    const float *inp[8];
    for (int k = 0; k < S * A; k++) outp[k] = out + (size_t)k * len;
    for (int c = 0; c < A; c++) inp[c] = mix + (size_t)c * len;
    dmx_session *s = NULL;
    REQUIRE(dmx_session_new(m, &s) == DMX_OK);
    dmx_separate_opts o;
    dmx_separate_opts_init(&o);
    o.shifts = 0;
    o.overlap = 0.25;
    o.normalize = normalize;
    dmx_status st = dmx_separate(s, inp, len, outp, &o);
    CHECK_MSG(st == DMX_OK, "separate: %s", dmx_last_error());
    dmx_session_free(s);
    return out;
}

float *tu_windows(const float *x, int rows, int64_t len, const int64_t *starts, int nw, int width) {
    float *win = malloc(sizeof(float) * (size_t)nw * rows * width);
    REQUIRE(win);
    size_t k = 0;
    for (int w = 0; w < nw; w++) {
        REQUIRE(starts[w] >= 0 && starts[w] + width <= len);
        for (int r = 0; r < rows; r++)
            for (int t = 0; t < width; t++) win[k++] = x[(size_t)r * len + starts[w] + t];
    }
    return win;
}

struct dmx__ckpt *tu_load_zoo_ckpt(const char *model) {
    char rel[256];
    snprintf(rel, sizeof rel, "zoo/models/%s.th", model);
    dmx__ckpt *ck = NULL;
    dmx_status st = dmx__ckpt_load(golden_path(rel), &ck);
    if (st != DMX_OK) {
        fprintf(stderr, "cannot load %s: %s: %s\n", rel, dmx_status_str(st), dmx_last_error());
        exit(1);
    }
    return ck;
}

/* ---- checkpoint patching (torch.save zip archives) ---- */

static uint32_t rd32(const unsigned char *p) {
    return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

void tu_zip_fix_pkl_crc(unsigned char *b, size_t len) {
    REQUIRE(len >= 22);
    size_t eocd = len - 22;
    while (eocd > 0 && rd32(b + eocd) != 0x06054b50) eocd--;
    REQUIRE(eocd > 0);
    uint32_t cd = rd32(b + eocd + 16);
    uint16_t n = rd16(b + eocd + 10);
    size_t p = cd;
    for (int i = 0; i < n; i++) {
        REQUIRE(rd32(b + p) == 0x02014b50);
        uint16_t nl = rd16(b + p + 28), el = rd16(b + p + 30), cl = rd16(b + p + 32);
        const char *name = (const char *)b + p + 46;
        if (nl >= 8 && memcmp(name + nl - 8, "data.pkl", 8) == 0) {
            uint32_t lho = rd32(b + p + 42), size = rd32(b + p + 20);
            size_t data = lho + 30 + rd16(b + lho + 26) + rd16(b + lho + 28);
            uint32_t crc = (uint32_t)crc32(0L, b + data, size);
            wr32(b + p + 16, crc);
            wr32(b + lho + 14, crc);
            /* torch.save writes a data descriptor (flag bit 3) after the data */
            if (rd16(b + lho + 6) & 8) {
                unsigned char *dd = b + data + size;
                wr32(rd32(dd) == 0x08074b50 ? dd + 4 : dd, crc);
            }
        }
        p += 46 + nl + el + cl;
    }
}

unsigned char *tu_memfind(unsigned char *hay, size_t n, const void *needle, size_t nl) {
    for (size_t i = 0; i + nl <= n; i++)
        if (!memcmp(hay + i, needle, nl)) return hay + i;
    return NULL;
}

unsigned char *tu_memdup(const void *p, size_t n) {
    unsigned char *b = malloc(n);
    REQUIRE(b);
    memcpy(b, p, n);
    return b;
}

void tu_patch(unsigned char *b, size_t len, const void *from, const void *to, size_t n, const char *after) {
    size_t start = 0;
    if (after) {
        unsigned char *a = tu_memfind(b, len, after, strlen(after));
        REQUIRE(a);
        start = (size_t)(a - b);
    }
    unsigned char *hit = tu_memfind(b + start, len - start, from, n);
    REQUIRE(hit);
    memcpy(hit, to, n);
}

void tu_write_tmp(const void *buf, size_t len, char *path) {
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, buf, len) == (ssize_t)len);
    close(fd);
}

void tu_expect_load_ok(const unsigned char *buf, size_t len) {
    char path[] = "/tmp/demix_test_load_XXXXXX";
    tu_write_tmp(buf, len, path);
    dmx_model *m = NULL;
    CHECK_MSG(dmx_model_load(path, &m) == DMX_OK && m, "load: %s", dmx_last_error());
    dmx_model_free(m);
    unlink(path);
}

void tu_expect_load_error(unsigned char *buf, size_t len, dmx_status want, const char *phrase,
                          const char *what) {
    char path[] = "/tmp/demix_test_load_XXXXXX";
    tu_write_tmp(buf, len, path);
    dmx_model *m = (dmx_model *)1;
    dmx_status st = dmx_model_load(path, &m);
    printf("%-22s -> %s: %s\n", what, dmx_status_name(st), dmx_last_error());
    CHECK_MSG(st == want, "%s: got %s, want %s", what, dmx_status_name(st), dmx_status_name(want));
    CHECK_MSG(m == NULL, "%s: model not NULL on failure", what);
    CHECK_MSG(strstr(dmx_last_error(), phrase) != NULL, "%s: message lacks '%s'", what, phrase);
    unlink(path);
    free(buf);
}
