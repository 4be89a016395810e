/*
 * zip.h - internal: a validating, read-only view of a zip archive held in
 * memory, just enough for torch.save files (stored entries, ZIP64).
 *
 * The archive is parsed from its End-Of-Central-Directory record, the central
 * directory and every local header; each offset and size is checked against
 * the buffer, the local headers (and data descriptors) are cross-checked with
 * the central directory, and every entry's CRC-32 is verified, so a damaged
 * file fails here with DMX_ERR_CORRUPT instead of surfacing later as garbage.
 * Compressed or encrypted entries and multi-disk archives are
 * DMX_ERR_UNSUPPORTED. The buffer is borrowed: it must outlive the dmx__zip.
 */
#ifndef DMX_ENGINE_ZIP_H
#define DMX_ENGINE_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "demix/status.h"

typedef struct dmx__zip_entry {
    char *name;        /* NUL-terminated entry name (names holding NUL are rejected) */
    uint64_t data_off; /* offset of the entry's bytes in the buffer */
    uint64_t size;     /* stored size == uncompressed size */
    uint32_t crc;      /* CRC-32 from the central directory (verified) */
} dmx__zip_entry;

typedef struct dmx__zip {
    const unsigned char *buf; /* borrowed */
    size_t len;
    dmx__zip_entry *entries; /* central-directory order */
    size_t n;
    dmx__zip_entry **by_name; /* entries sorted by name, for lookups */
} dmx__zip;

/* Parses and validates the archive in buf[0..len). `what` names the file in
 * messages. On failure *z is left empty (dmx__zip_close is still safe). */
dmx_status dmx__zip_open(dmx__zip *z, const void *buf, size_t len, const char *what);

/* Entry by exact name, or NULL. */
const dmx__zip_entry *dmx__zip_find(const dmx__zip *z, const char *name);

/* Pointer to an entry's bytes inside the borrowed buffer. */
static inline const unsigned char *dmx__zip_data(const dmx__zip *z, const dmx__zip_entry *e) {
    return z->buf + e->data_off;
}

void dmx__zip_close(dmx__zip *z);

#endif
