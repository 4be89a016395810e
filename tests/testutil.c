/*
 * testutil.c - see testutil.h.
 */
#include "testutil.h"

#include <math.h>
#include <zlib.h>
#include <string.h>

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

static uint32_t rd32(const unsigned char *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }
static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* see testutil.h (the same code as test_model_errors.c's fix_pkl_crc) */
void dmx_test_fix_pkl_crc(unsigned char *b, size_t len) {
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
