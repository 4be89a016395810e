/*
 * zip.c - a minimal zip writer for GET /jobs/{id}/zip and wait=true with
 * Accept: application/zip. Entries are stored, not deflated: encoded audio
 * barely compresses and WAV stems are large enough that deflating them
 * would cost more CPU than it saves bandwidth. The archive is written next
 * to its final name and renamed, so a reader never sees half a file.
 *
 * ZIP64 (APPNOTE 6.3.x, 4.3.14-4.5.3): an hour of 6 WAV stems passes 4 GiB.
 * An entry whose size reaches srv_zip64_threshold gets a ZIP64 extra field
 * with its sizes in the local header (its size is known from stat() before
 * it is copied); an entry whose offset or size reaches it gets one in the
 * central directory; a directory that starts or ends past it gets the ZIP64
 * end records. The 32-bit fields then hold 0xFFFFFFFF, as readers expect.
 * Small archives stay plain zip. Tests lower the threshold to exercise the
 * ZIP64 paths with small files.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "server.h"

uint64_t srv_zip64_threshold = 0xFFFFFFFFu;

static void le16(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8);
}
static void le32(unsigned char *p, uint32_t v) { le16(p, v & 0xffff), le16(p + 2, v >> 16); }
static void le64(unsigned char *p, uint64_t v) {
    le32(p, (uint32_t)v), le32(p + 4, (uint32_t)(v >> 32));
}

typedef struct entry {
    uint32_t crc;
    uint64_t size, offset;
} entry;

/* Copies src (expected: `want` bytes) into the archive, computing its CRC-32. */
static int copy_entry(FILE *out, FILE *in, uint64_t want, entry *e) {
    unsigned char b[65536];
    uLong crc = crc32(0, NULL, 0);
    uint64_t size = 0;
    size_t k;
    while ((k = fread(b, 1, sizeof b, in)) > 0) {
        crc = crc32(crc, b, (uInt)k);
        size += k;
        if (fwrite(b, 1, k, out) != k) return -1;
    }
    if (ferror(in) || size != want) return -1; /* changed under us */
    e->crc = (uint32_t)crc;
    e->size = size;
    return 0;
}

static uint32_t cap32(uint64_t v) { return v >= srv_zip64_threshold ? 0xFFFFFFFFu : (uint32_t)v; }

/* One entry: local header (with a ZIP64 extra when its size needs one),
 * name, data. */
static int write_entry(FILE *out, const char *file, const char *name, entry *e) {
    FILE *in = fopen(file, "rb");
    struct stat st;
    if (!in) return -1;
    if (fstat(fileno(in), &st) < 0) {
        fclose(in);
        return -1;
    }
    off_t off = ftello(out);
    uint64_t size = (uint64_t)st.st_size;
    int z64 = size >= srv_zip64_threshold;
    size_t nl = strlen(name);
    unsigned char h[30 + 20];
    memset(h, 0, sizeof h);
    le32(h, 0x04034b50);
    le16(h + 4, z64 ? 45 : 20); /* version needed */
    le16(h + 8, 0);             /* stored */
    le16(h + 12, 0x21);         /* DOS date 1980-01-01: no meaningful mtime */
    le16(h + 26, (uint32_t)nl);
    le16(h + 28, z64 ? 20 : 0);
    int rc = off < 0 || nl > 0xFFFF || fwrite(h, 1, 30, out) != 30 ||
                     fwrite(name, 1, nl, out) != nl || (z64 && fwrite(h + 30, 1, 20, out) != 20) ||
                     copy_entry(out, in, size, e) < 0
                 ? -1
                 : 0;
    fclose(in);
    if (rc < 0) return -1;
    e->offset = (uint64_t)off;
    /* The CRC and sizes are known now: patch them in. */
    off_t end = ftello(out);
    le32(h + 14, e->crc);
    le32(h + 18, cap32(e->size));
    le32(h + 22, cap32(e->size));
    if (z64) {
        le16(h + 30, 0x0001);
        le16(h + 32, 16);
        le64(h + 34, e->size);
        le64(h + 42, e->size);
    }
    if (end < 0 || fseeko(out, off, SEEK_SET) < 0 || fwrite(h, 1, 30, out) != 30 ||
        (z64 &&
         (fseeko(out, off + 30 + (off_t)nl, SEEK_SET) < 0 || fwrite(h + 30, 1, 20, out) != 20)) ||
        fseeko(out, end, SEEK_SET) < 0)
        return -1;
    return 0;
}

/* Central directory record of one entry. */
static int write_central(FILE *out, const char *name, const entry *e) {
    size_t nl = strlen(name);
    unsigned char h[46], x[4 + 24];
    size_t xl = 4;
    if (e->size >= srv_zip64_threshold) le64(x + xl, e->size), le64(x + xl + 8, e->size), xl += 16;
    if (e->offset >= srv_zip64_threshold) le64(x + xl, e->offset), xl += 8;
    if (xl == 4) xl = 0;
    le16(x, 0x0001);
    le16(x + 2, (uint32_t)(xl ? xl - 4 : 0));
    memset(h, 0, sizeof h);
    le32(h, 0x02014b50);
    le16(h + 4, xl ? 45 : 20); /* made by: MS-DOS, spec version */
    le16(h + 6, xl ? 45 : 20);
    le16(h + 14, 0x21);
    le32(h + 16, e->crc);
    le32(h + 20, cap32(e->size));
    le32(h + 24, cap32(e->size));
    le16(h + 28, (uint32_t)nl);
    le16(h + 30, (uint32_t)xl);
    le32(h + 42, cap32(e->offset));
    return fwrite(h, 1, 46, out) == 46 && fwrite(name, 1, nl, out) == nl &&
                   fwrite(x, 1, xl, out) == xl
               ? 0
               : -1;
}

/* End of central directory, with the ZIP64 record and locator first when
 * the directory's offset, size or count needs them. */
static int write_end(FILE *out, uint64_t n, uint64_t cd, uint64_t cd_end) {
    uint64_t cd_size = cd_end - cd;
    int z64 = n >= 0xFFFF || cd >= srv_zip64_threshold || cd_size >= srv_zip64_threshold ||
              cd_end >= srv_zip64_threshold;
    unsigned char h[56 + 20 + 22];
    size_t k = 0;
    memset(h, 0, sizeof h);
    if (z64) {
        le32(h, 0x06064b50);
        le64(h + 4, 44); /* size of the rest of this record */
        le16(h + 12, 45);
        le16(h + 14, 45);
        le64(h + 24, n);
        le64(h + 32, n);
        le64(h + 40, cd_size);
        le64(h + 48, cd);
        le32(h + 56, 0x07064b50);
        le64(h + 64, cd_end); /* where the ZIP64 record starts */
        le32(h + 72, 1);
        k = 76;
    }
    le32(h + k, 0x06054b50);
    le16(h + k + 8, z64 ? 0xFFFF : (uint32_t)n);
    le16(h + k + 10, z64 ? 0xFFFF : (uint32_t)n);
    le32(h + k + 12, z64 ? 0xFFFFFFFFu : (uint32_t)cd_size);
    le32(h + k + 16, z64 ? 0xFFFFFFFFu : (uint32_t)cd);
    k += 22;
    return fwrite(h, 1, k, out) == k ? 0 : -1;
}

int srv_zip_write(const char *out_path, char *const *files, char *const *names, int n) {
    char *tmp = NULL;
    char rnd[17];
    if (srv_random_hex(rnd, 8) < 0 || asprintf(&tmp, "%s.%s.part", out_path, rnd) < 0) return -1;
    FILE *out = fopen(tmp, "wbx");
    entry *ents = calloc((size_t)n + 1, sizeof *ents);
    int rc = out && ents ? 0 : -1;
    for (int i = 0; rc == 0 && i < n; i++) rc = write_entry(out, files[i], names[i], &ents[i]);
    off_t cd = rc == 0 ? ftello(out) : -1;
    for (int i = 0; rc == 0 && i < n; i++) rc = write_central(out, names[i], &ents[i]);
    off_t cd_end = rc == 0 ? ftello(out) : -1;
    if (rc == 0 &&
        (cd < 0 || cd_end < 0 || write_end(out, (uint64_t)n, (uint64_t)cd, (uint64_t)cd_end) < 0))
        rc = -1;
    if (out && fclose(out) != 0) rc = -1;
    if (rc == 0 && rename(tmp, out_path) < 0) rc = -1;
    if (rc != 0) unlink(tmp);
    free(tmp);
    free(ents);
    return rc;
}
