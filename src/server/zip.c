/*
 * zip.c - a minimal zip writer for GET /jobs/{id}/zip and wait=true with
 * Accept: application/zip. Entries are stored, not deflated: encoded audio
 * barely compresses and WAV stems are large enough that deflating them
 * would cost more CPU than it saves bandwidth. Sizes above 4 GiB (which
 * would need ZIP64) are refused. The archive is written next to its final
 * name and renamed, so a reader never sees half a file.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "server.h"

static void le16(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8); }
static void le32(unsigned char *p, uint32_t v) { le16(p, v & 0xffff), le16(p + 2, v >> 16); }

typedef struct entry {
    uint32_t crc, size, offset;
} entry;

/* Copies src into the archive, computing its CRC-32. */
static int copy_entry(FILE *out, const char *src, entry *e) {
    FILE *in = fopen(src, "rb");
    if (!in) return -1;
    unsigned char b[65536];
    uLong crc = crc32(0, NULL, 0);
    uint64_t size = 0;
    size_t k;
    int rc = 0;
    while ((k = fread(b, 1, sizeof b, in)) > 0) {
        crc = crc32(crc, b, (uInt)k);
        size += k;
        if (size > 0xffffffffu || fwrite(b, 1, k, out) != k) {
            rc = -1;
            break;
        }
    }
    if (ferror(in)) rc = -1;
    fclose(in);
    e->crc = (uint32_t)crc;
    e->size = (uint32_t)size;
    return rc;
}

int dmx_zip_write(const char *out_path, char *const *files, char *const *names, int n) {
    char *tmp = NULL;
    char rnd[17];
    if (dmx_random_hex(rnd, 8) < 0 || asprintf(&tmp, "%s.%s.part", out_path, rnd) < 0) return -1;
    FILE *out = fopen(tmp, "wbx");
    entry *ents = calloc((size_t)n + 1, sizeof *ents);
    int rc = out && ents ? 0 : -1;
    unsigned char h[46];
    /* Local headers carry the CRC and sizes, so they are written after the
     * data: seek back and patch (no data descriptors needed). */
    for (int i = 0; rc == 0 && i < n; i++) {
        long off = ftell(out);
        size_t nl = strlen(names[i]);
        if (off < 0 || off > 0x7fffffffL) {
            rc = -1;
            break;
        }
        ents[i].offset = (uint32_t)off;
        memset(h, 0, 30);
        if (fwrite(h, 1, 30, out) != 30 || fwrite(names[i], 1, nl, out) != nl ||
            copy_entry(out, files[i], &ents[i]) < 0) {
            rc = -1;
            break;
        }
        long end = ftell(out);
        le32(h, 0x04034b50);
        le16(h + 4, 20);       /* version needed */
        le16(h + 8, 0);        /* stored */
        le16(h + 12, 0x21);    /* DOS date 1980-01-01: no meaningful mtime */
        le32(h + 14, ents[i].crc);
        le32(h + 18, ents[i].size);
        le32(h + 22, ents[i].size);
        le16(h + 26, (uint32_t)nl);
        if (fseek(out, off, SEEK_SET) < 0 || fwrite(h, 1, 30, out) != 30 ||
            fseek(out, end, SEEK_SET) < 0)
            rc = -1;
    }
    long cd = rc == 0 ? ftell(out) : -1;
    for (int i = 0; rc == 0 && i < n; i++) {
        size_t nl = strlen(names[i]);
        memset(h, 0, 46);
        le32(h, 0x02014b50);
        le16(h + 4, 20);
        le16(h + 6, 20);
        le16(h + 14, 0x21);
        le32(h + 16, ents[i].crc);
        le32(h + 20, ents[i].size);
        le32(h + 24, ents[i].size);
        le16(h + 28, (uint32_t)nl);
        le32(h + 42, ents[i].offset);
        if (fwrite(h, 1, 46, out) != 46 || fwrite(names[i], 1, nl, out) != nl) rc = -1;
    }
    long cd_end = rc == 0 ? ftell(out) : -1;
    if (rc == 0 && (cd < 0 || cd_end < 0 || cd_end > 0x7fffffffL)) rc = -1;
    if (rc == 0) {
        memset(h, 0, 22);
        le32(h, 0x06054b50);
        le16(h + 8, (uint32_t)n);
        le16(h + 10, (uint32_t)n);
        le32(h + 12, (uint32_t)(cd_end - cd));
        le32(h + 16, (uint32_t)cd);
        if (fwrite(h, 1, 22, out) != 22) rc = -1;
    }
    if (out && fclose(out) != 0) rc = -1;
    if (rc == 0 && rename(tmp, out_path) < 0) rc = -1;
    if (rc != 0) unlink(tmp);
    free(tmp);
    free(ents);
    return rc;
}
