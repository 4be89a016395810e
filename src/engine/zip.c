/*
 * zip.c - validating reader for the zip container of torch.save files.
 *
 * Everything here reads from an untrusted buffer, so every field is treated as
 * hostile: offsets and sizes are range-checked with overflow-safe arithmetic
 * before any byte is touched, and redundant copies of metadata (ZIP64 record
 * vs. classic record, local header and data descriptor vs. central directory)
 * are compared so that a flipped byte is reported where it sits rather than
 * producing a wrong-but-plausible archive. The CRC-32 of every entry is
 * checked last, on two threads for archives of 16 MB and more (on one,
 * 15 % of a cold load of the 55 MB full-size fixture), reported in entry
 * order.
 */
#include "zip.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "error.h"

#define SIG_LOCAL      0x04034b50u
#define SIG_CENTRAL    0x02014b50u
#define SIG_EOCD       0x06054b50u
#define SIG_EOCD64     0x06064b50u
#define SIG_LOC64      0x07064b50u
#define SIG_DESCRIPTOR 0x08074b50u

#define EOCD_SIZE    22u
#define LOC64_SIZE   20u
#define EOCD64_MIN   56u
#define CENTRAL_SIZE 46u
#define LOCAL_SIZE   30u

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const unsigned char *p) {
    return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32);
}

/* a + b <= limit, without overflow. */
static int fits(uint64_t a, uint64_t b, uint64_t limit) { return a <= limit && b <= limit - a; }

static uint32_t crc_of(const unsigned char *p, uint64_t n) {
    /* zlib's crc32 takes a uInt length: feed large entries in chunks. */
    uLong c = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)c;
}

/* The entries' CRCs, got[i] for entries [lo, hi) (a thread's share). */
typedef struct crc_share {
    const unsigned char *b;
    const dmx__zip_entry *e;
    size_t lo, hi;
    uint32_t *got;
} crc_share;

static void *crc_run(void *arg) {
    const crc_share *c = arg;
    for (size_t i = c->lo; i < c->hi; i++) c->got[i] = crc_of(c->b + c->e[i].data_off, c->e[i].size);
    return NULL;
}

/* Archives from this many bytes of entries have their CRCs computed on two
 * threads (on one they were 15 % of a cold model load, which runs alone
 * before the first segment); smaller ones are not worth a thread. */
#define CRC_SPLIT ((uint64_t)16 << 20)

/* got[i] = the CRC-32 of entry i, i < n: the entries split by bytes into
 * two shares, the second on a thread of its own when it can be had. */
static void crc_all(const unsigned char *b, const dmx__zip_entry *e, size_t n, uint32_t *got) {
    uint64_t total = 0, acc = 0;
    for (size_t i = 0; i < n; i++) total += e[i].size;
    size_t m = n;
    if (total >= CRC_SPLIT)
        for (m = 0; m < n && acc < total / 2; m++) acc += e[m].size;
    crc_share first = {b, e, 0, m, got}, second = {b, e, m, n, got};
    pthread_t t;
    const int threaded = m < n && pthread_create(&t, NULL, crc_run, &second) == 0;
    crc_run(&first);
    if (threaded)
        pthread_join(t, NULL);
    else
        crc_run(&second);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const dmx__zip_entry *const *)a)->name,
                  (*(const dmx__zip_entry *const *)b)->name);
}

typedef struct span {
    uint64_t start, end; /* [local header, end of data/descriptor) */
    size_t idx;
} span;
static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Locates the EOCD record: the last signature whose comment ends exactly at
 * the end of the buffer (a signature inside a comment or inside stored data
 * does not satisfy that). */
static int find_eocd(const unsigned char *b, size_t len, size_t *pos) {
    if (len < EOCD_SIZE) return 0;
    size_t hi = len - EOCD_SIZE;
    size_t lo = hi > 0xffffu ? hi - 0xffffu : 0;
    for (size_t p = hi + 1; p-- > lo;) {
        if (rd32(b + p) == SIG_EOCD && p + EOCD_SIZE + rd16(b + p + 20) == len) {
            *pos = p;
            return 1;
        }
    }
    return 0;
}

void dmx__zip_close(dmx__zip *z) {
    if (!z) return;
    if (z->entries) {
        for (size_t i = 0; i < z->n; i++) free(z->entries[i].name);
    }
    free(z->entries);
    free(z->by_name);
    memset(z, 0, sizeof *z);
}

/* Checks the data descriptor that follows an entry written with flag bit 3
 * (torch's writer sets it): optional signature, CRC, then 32- or 64-bit sizes.
 * Returns the descriptor's length, or 0 if none of the layouts agrees with the
 * central directory. */
static uint64_t check_descriptor(const unsigned char *b, uint64_t at, uint64_t limit, uint32_t crc,
                                 uint64_t size) {
    for (int sig = 1; sig >= 0; sig--) {
        for (int wide = 0; wide <= 1; wide++) {
            uint64_t n = (sig ? 4 : 0) + 4 + (wide ? 16 : 8);
            if (!fits(at, n, limit)) continue;
            const unsigned char *p = b + at;
            if (sig) {
                if (rd32(p) != SIG_DESCRIPTOR) continue;
                p += 4;
            }
            if (rd32(p) != crc) continue;
            uint64_t cs = wide ? rd64(p + 4) : rd32(p + 4);
            uint64_t us = wide ? rd64(p + 12) : rd32(p + 8);
            if (cs == size && us == size) return n;
        }
    }
    return 0;
}

dmx_status dmx__zip_open(dmx__zip *z, const void *buf, size_t len, const char *what) {
    memset(z, 0, sizeof *z);
    const unsigned char *b = buf;
    if (!what) what = "archive";

    if (len == 0) return dmx__fail(DMX_ERR_CORRUPT, "%s: file is empty", what);
    /* A pre-1.6 torch.save file is a bare pickle stream starting with the
     * magic number as a LONG1 (\x80\x02\x8a\x0a...). */
    if (len >= 3 && b[0] == 0x80 && b[1] == 0x02 && b[2] == 0x8a)
        return dmx__fail(DMX_ERR_UNSUPPORTED,
                         "%s: legacy (pre-zip, torch < 1.6) torch.save format is not supported",
                         what);
    if (len < EOCD_SIZE)
        return dmx__fail(DMX_ERR_CORRUPT, "%s: file too small to be a zip archive (%zu bytes)",
                         what, len);

    size_t eocd;
    if (!find_eocd(b, len, &eocd))
        return dmx__fail(
            DMX_ERR_CORRUPT,
            "%s: end of central directory record not found (not a zip archive, or truncated)",
            what);
    const unsigned char *e = b + eocd;
    uint64_t disk = rd16(e + 4), cd_disk = rd16(e + 6);
    uint64_t n_disk = rd16(e + 8), n_total = rd16(e + 10);
    uint64_t cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    uint64_t cd_limit = eocd; /* the directory must end before the records that describe it */

    int has_loc64 = eocd >= LOC64_SIZE && rd32(b + eocd - LOC64_SIZE) == SIG_LOC64;
    if (has_loc64) {
        const unsigned char *l = b + eocd - LOC64_SIZE;
        uint64_t z64 = rd64(l + 8);
        if (rd32(l + 4) != 0 || rd32(l + 16) != 1)
            return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                             what);
        if (!fits(z64, EOCD64_MIN, eocd - LOC64_SIZE))
            return dmx__fail(DMX_ERR_CORRUPT, "%s: ZIP64 end record offset %llu is out of range",
                             what, (unsigned long long)z64);
        const unsigned char *r = b + z64;
        if (rd32(r) != SIG_EOCD64)
            return dmx__fail(DMX_ERR_CORRUPT, "%s: bad ZIP64 end record signature at offset %llu",
                             what, (unsigned long long)z64);
        uint64_t rsize = rd64(r + 4);
        if (rsize < EOCD64_MIN - 12 || !fits(z64 + 12, rsize, eocd - LOC64_SIZE))
            return dmx__fail(DMX_ERR_CORRUPT, "%s: ZIP64 end record size %llu is out of range",
                             what, (unsigned long long)rsize);
        uint64_t d64 = rd32(r + 16), cdd64 = rd32(r + 20);
        uint64_t nd64 = rd64(r + 24), nt64 = rd64(r + 32);
        uint64_t cs64 = rd64(r + 40), co64 = rd64(r + 48);
        /* The classic fields hold either the same value or the ZIP64 marker;
         * anything else means one of the two copies was damaged. */
#define AGREE(classic, wide, sat, label)                                               \
    if ((classic) != (sat) && (classic) != (wide))                                     \
        return dmx__fail(                                                              \
            DMX_ERR_CORRUPT,                                                           \
            "%s: ZIP64 end record disagrees with the end of central directory record " \
            "(%s: %llu vs %llu)",                                                      \
            what, label, (unsigned long long)(wide), (unsigned long long)(classic));
        AGREE(disk, d64, 0xffffu, "disk number")
        AGREE(cd_disk, cdd64, 0xffffu, "directory disk")
        AGREE(n_disk, nd64, 0xffffu, "entries on disk")
        AGREE(n_total, nt64, 0xffffu, "entry count")
        AGREE(cd_size, cs64, 0xffffffffu, "directory size")
        AGREE(cd_off, co64, 0xffffffffu, "directory offset")
#undef AGREE
        disk = d64, cd_disk = cdd64, n_disk = nd64, n_total = nt64, cd_size = cs64, cd_off = co64;
        cd_limit = z64;
    } else if (n_disk == 0xffffu || n_total == 0xffffu || cd_size == 0xffffffffu ||
               cd_off == 0xffffffffu) {
        return dmx__fail(DMX_ERR_CORRUPT,
                         "%s: ZIP64 markers present but the ZIP64 locator is missing", what);
    }
    if (disk != 0 || cd_disk != 0 || n_disk != n_total)
        return dmx__fail(DMX_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                         what);
    if (!fits(cd_off, cd_size, cd_limit))
        return dmx__fail(DMX_ERR_CORRUPT,
                         "%s: central directory (offset %llu, size %llu) lies outside the file",
                         what, (unsigned long long)cd_off, (unsigned long long)cd_size);
    /* The directory ends where the end records begin. (Archives with bytes
     * prepended, such as self-extractors, would break this; torch never
     * writes those.) This also catches a damaged ZIP64 locator signature. */
    if (cd_off + cd_size != cd_limit)
        return dmx__fail(
            DMX_ERR_CORRUPT,
            "%s: central directory (offset %llu, size %llu) does not end where the end record "
            "begins (offset %llu)",
            what, (unsigned long long)cd_off, (unsigned long long)cd_size,
            (unsigned long long)cd_limit);
    if (n_total > cd_size / CENTRAL_SIZE)
        return dmx__fail(DMX_ERR_CORRUPT,
                         "%s: entry count %llu does not fit in a central directory of %llu bytes",
                         what, (unsigned long long)n_total, (unsigned long long)cd_size);

    z->buf = b;
    z->len = len;
    z->entries = calloc(n_total ? n_total : 1, sizeof *z->entries);
    span *spans = calloc(n_total ? n_total : 1, sizeof *spans);
    if (!z->entries || !spans) {
        free(spans);
        dmx__zip_close(z);
        return dmx__fail(DMX_ERR_NOMEM, "%s: out of memory for %llu zip entries", what,
                         (unsigned long long)n_total);
    }

    dmx_status st = DMX_OK;
    uint64_t p = cd_off;
    const uint64_t cd_end = cd_off + cd_size;
#define BAD(status, ...)                     \
    do {                                     \
        st = dmx__fail(status, __VA_ARGS__); \
        goto fail;                           \
    } while (0)
    for (uint64_t i = 0; i < n_total; i++) {
        if (!fits(p, CENTRAL_SIZE, cd_end))
            BAD(DMX_ERR_CORRUPT, "%s: central directory entry %llu runs past the directory end",
                what, (unsigned long long)i);
        const unsigned char *c = b + p;
        if (rd32(c) != SIG_CENTRAL)
            BAD(DMX_ERR_CORRUPT,
                "%s: bad central directory entry signature (entry %llu, offset %llu)", what,
                (unsigned long long)i, (unsigned long long)p);
        uint16_t need = rd16(c + 6), flags = rd16(c + 8), method = rd16(c + 10);
        uint16_t mtime = rd16(c + 12), mdate = rd16(c + 14);
        uint32_t crc = rd32(c + 16);
        uint64_t csize = rd32(c + 20), usize = rd32(c + 24);
        uint16_t nlen = rd16(c + 28), elen = rd16(c + 30), clen = rd16(c + 32);
        uint64_t dstart = rd16(c + 34), loff = rd32(c + 42);
        if (!fits(p + CENTRAL_SIZE, (uint64_t)nlen + elen + clen, cd_end))
            BAD(DMX_ERR_CORRUPT,
                "%s: central directory entry %llu: name/extra/comment lengths run past the "
                "directory end",
                what, (unsigned long long)i);
        const char *nm = (const char *)c + CENTRAL_SIZE;
        if (nlen == 0 || memchr(nm, 0, nlen))
            BAD(DMX_ERR_CORRUPT, "%s: central directory entry %llu has an empty or invalid name",
                what, (unsigned long long)i);
        char *name = malloc((size_t)nlen + 1);
        if (!name) BAD(DMX_ERR_NOMEM, "%s: out of memory", what);
        memcpy(name, nm, nlen);
        name[nlen] = '\0';
        z->entries[i].name = name;
        z->n = (size_t)i + 1;

        /* Extra fields: a sequence of (id, size, data); ZIP64 (id 1) carries the
         * 64-bit values of whichever classic fields hold the marker, in order. */
        int need_u = usize == 0xffffffffu, need_c = csize == 0xffffffffu;
        int need_o = loff == 0xffffffffu, need_d = dstart == 0xffffu;
        const unsigned char *x = c + CENTRAL_SIZE + nlen, *xend = x + elen;
        while (x < xend) {
            if (xend - x < 4)
                BAD(DMX_ERR_CORRUPT, "%s: entry '%s': malformed extra field", what, name);
            uint16_t id = rd16(x), sz = rd16(x + 2);
            if (sz > xend - x - 4)
                BAD(DMX_ERR_CORRUPT, "%s: entry '%s': extra field runs past its end", what, name);
            if (id == 1) {
                const unsigned char *q = x + 4, *qend = q + sz;
#define TAKE64(flag, dst)                                                                    \
    if (flag) {                                                                              \
        if (qend - q < 8)                                                                    \
            BAD(DMX_ERR_CORRUPT, "%s: entry '%s': ZIP64 extra field too short", what, name); \
        dst = rd64(q);                                                                       \
        q += 8;                                                                              \
        flag = 0;                                                                            \
    }
                TAKE64(need_u, usize)
                TAKE64(need_c, csize)
                TAKE64(need_o, loff)
#undef TAKE64
                if (need_d) {
                    if (qend - q < 4)
                        BAD(DMX_ERR_CORRUPT, "%s: entry '%s': ZIP64 extra field too short", what,
                            name);
                    dstart = rd32(q);
                    need_d = 0;
                }
            }
            x += 4 + (size_t)sz;
        }
        if (need_u || need_c || need_o || need_d)
            BAD(DMX_ERR_CORRUPT, "%s: entry '%s': ZIP64 marker without a ZIP64 extra field", what,
                name);
        if (dstart != 0)
            BAD(DMX_ERR_UNSUPPORTED,
                "%s: entry '%s' starts on disk %llu (multi-disk archives are not supported)", what,
                name, (unsigned long long)dstart);

        /* Local header: must lie before the central directory and repeat the
         * central directory's name, flags, method, version and time stamp. */
        if (!fits(loff, LOCAL_SIZE, cd_off))
            BAD(DMX_ERR_CORRUPT, "%s: entry '%s': local header offset %llu is out of range", what,
                name, (unsigned long long)loff);
        const unsigned char *h = b + loff;
        if (rd32(h) != SIG_LOCAL)
            BAD(DMX_ERR_CORRUPT, "%s: entry '%s': bad local header signature at offset %llu", what,
                name, (unsigned long long)loff);
        uint16_t lnlen = rd16(h + 26), lelen = rd16(h + 28);
        if (!fits(loff + LOCAL_SIZE, (uint64_t)lnlen + lelen, cd_off))
            BAD(DMX_ERR_CORRUPT, "%s: entry '%s': local header runs into the central directory",
                what, name);
        {
            /* Local extra fields must tile their area exactly (torch uses one
             * to pad data to 64 bytes); their content is not used. */
            const unsigned char *lx = h + LOCAL_SIZE + lnlen, *lxend = lx + lelen;
            while (lx < lxend) {
                if (lxend - lx < 4 || rd16(lx + 2) > lxend - lx - 4)
                    BAD(DMX_ERR_CORRUPT, "%s: entry '%s': malformed local extra field", what, name);
                lx += 4 + (size_t)rd16(lx + 2);
            }
        }
        if (lnlen != nlen || memcmp(h + LOCAL_SIZE, name, nlen) != 0)
            BAD(DMX_ERR_CORRUPT, "%s: entry '%s': local header names a different entry", what,
                name);
        if (rd16(h + 4) != need || rd16(h + 6) != flags || rd16(h + 8) != method ||
            rd16(h + 10) != mtime || rd16(h + 12) != mdate)
            BAD(DMX_ERR_CORRUPT,
                "%s: entry '%s': local header disagrees with the central directory "
                "(version/flags/method/time)",
                what, name);
        if (flags & 0x41u) BAD(DMX_ERR_UNSUPPORTED, "%s: entry '%s' is encrypted", what, name);
        if (method != 0)
            BAD(DMX_ERR_UNSUPPORTED,
                "%s: entry '%s' is compressed (method %u); only stored entries are supported", what,
                name, (unsigned)method);
        if (csize != usize)
            BAD(DMX_ERR_CORRUPT, "%s: entry '%s' is stored but its sizes differ (%llu vs %llu)",
                what, name, (unsigned long long)csize, (unsigned long long)usize);
        uint64_t doff = loff + LOCAL_SIZE + lnlen + lelen;
        if (!fits(doff, usize, cd_off))
            BAD(DMX_ERR_CORRUPT, "%s: entry '%s': data (offset %llu, %llu bytes) runs past the end",
                what, name, (unsigned long long)doff, (unsigned long long)usize);
        uint64_t end = doff + usize;
        {
            /* With a data descriptor (bit 3) the local CRC/sizes are normally
             * zero, but some writers fill them in; either way they may not
             * contradict the central directory. */
            uint32_t lcrc = rd32(h + 14);
            uint64_t lc = rd32(h + 18), lu = rd32(h + 22);
            int desc = (flags & 0x08u) != 0;
            if (!((lcrc == crc || (desc && lcrc == 0)) &&
                  (lc == csize || lc == 0xffffffffu || (desc && lc == 0)) &&
                  (lu == usize || lu == 0xffffffffu || (desc && lu == 0))))
                BAD(DMX_ERR_CORRUPT,
                    "%s: entry '%s': local header CRC/sizes disagree with the central directory",
                    what, name);
        }
        if (flags & 0x08u) {
            uint64_t dl = check_descriptor(b, end, cd_off, crc, usize);
            if (!dl)
                BAD(DMX_ERR_CORRUPT,
                    "%s: entry '%s': data descriptor disagrees with the central directory", what,
                    name);
            end += dl;
        }
        z->entries[i].data_off = doff;
        z->entries[i].size = usize;
        z->entries[i].crc = crc;
        spans[i].start = loff;
        spans[i].end = end;
        spans[i].idx = (size_t)i;
        p += CENTRAL_SIZE + (uint64_t)nlen + elen + clen;
    }
    if (p != cd_end)
        BAD(DMX_ERR_CORRUPT, "%s: central directory size mismatch (%llu bytes used of %llu)", what,
            (unsigned long long)(p - cd_off), (unsigned long long)cd_size);

    /* Entries must not overlap (a damaged offset pointing into another entry). */
    qsort(spans, z->n, sizeof *spans, cmp_span);
    for (size_t i = 1; i < z->n; i++) {
        if (spans[i].start < spans[i - 1].end)
            BAD(DMX_ERR_CORRUPT, "%s: entries '%s' and '%s' overlap", what,
                z->entries[spans[i - 1].idx].name, z->entries[spans[i].idx].name);
    }

    z->by_name = malloc((z->n ? z->n : 1) * sizeof *z->by_name);
    if (!z->by_name) BAD(DMX_ERR_NOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < z->n; i++) z->by_name[i] = &z->entries[i];
    qsort(z->by_name, z->n, sizeof *z->by_name, cmp_name);
    for (size_t i = 1; i < z->n; i++) {
        if (strcmp(z->by_name[i]->name, z->by_name[i - 1]->name) == 0)
            BAD(DMX_ERR_CORRUPT, "%s: duplicate entry '%s'", what, z->by_name[i]->name);
    }

    /* CRC last, once the layout is known to be sane: it is the only pass
     * that touches every data byte. Checked in entry order, so the first
     * damaged entry is the one named, however the work was shared. */
    uint32_t *got = malloc((z->n ? z->n : 1) * sizeof *got);
    if (!got) BAD(DMX_ERR_NOMEM, "%s: out of memory", what);
    crc_all(b, z->entries, z->n, got);
    for (size_t i = 0; i < z->n; i++) {
        const dmx__zip_entry *en = &z->entries[i];
        if (got[i] != en->crc) {
            const uint32_t g = got[i];
            free(got);
            BAD(DMX_ERR_CORRUPT, "%s: CRC-32 mismatch in entry '%s' (stored %08x, computed %08x)",
                what, en->name, (unsigned)en->crc, (unsigned)g);
        }
    }
    free(got);
    free(spans);
    return DMX_OK;
#undef BAD
fail:
    free(spans);
    dmx__zip_close(z);
    return st;
}

const dmx__zip_entry *dmx__zip_find(const dmx__zip *z, const char *name) {
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const dmx__zip_entry *e = z->by_name[mid];
        int c = strcmp(e->name, name);
        if (c == 0) return e;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
