/*
 * test_model_errors.c - checkpoints that load as pickles but do not describe
 * a network demix can build: each gives its own status and a message naming
 * the tensor or field. The fixtures are patched in memory: a same-length edit
 * of data.pkl, then the CRC-32 in the local header, data descriptor and
 * central directory is recomputed so only the model builder can object.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "demix/demix.h"
#include "testutil.h"

static unsigned char *orig;
static size_t orig_len;

static uint32_t rd32(const unsigned char *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }
static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Recomputes the CRC of every entry whose name ends with "data.pkl". */
static void fix_pkl_crc(unsigned char *b, size_t len) {
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

/* Copy of the fixture with `from` replaced by `to` (same length) once, at the
 * first occurrence at or after the first occurrence of `after` (if given). */
static unsigned char *patched(const void *from, const void *to, size_t n, const char *after) {
    unsigned char *b = malloc(orig_len);
    memcpy(b, orig, orig_len);
    size_t start = 0;
    if (after) {
        unsigned char *a = memmem(b, orig_len, after, strlen(after));
        REQUIRE(a);
        start = (size_t)(a - b);
    }
    unsigned char *hit = memmem(b + start, orig_len - start, from, n);
    REQUIRE(hit);
    memcpy(hit, to, n);
    fix_pkl_crc(b, orig_len);
    return b;
}

static void expect(unsigned char *buf, dmx_status want, const char *phrase, const char *what) {
    char path[] = "/tmp/demix_test_model_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, buf, orig_len) == (ssize_t)orig_len);
    close(fd);
    dmx_model *m = (dmx_model *)1;
    dmx_status st = dmx_model_load(path, &m);
    printf("%-22s -> %s: %s\n", what, dmx_status_name(st), dmx_last_error());
    CHECK_MSG(st == want, "%s: got %s, want %s", what, dmx_status_name(st), dmx_status_name(want));
    CHECK_MSG(m == NULL, "%s: model not NULL on failure", what);
    CHECK_MSG(strstr(dmx_last_error(), phrase) != NULL, "%s: message lacks '%s'", what, phrase);
    unlink(path);
    free(buf);
}

int main(void) {
    orig = read_file(golden_path("models/tiny4s.th"), &orig_len);
    REQUIRE(orig);

    /* a state key renamed: the architecture's tensor is missing, and the
     * renamed one is unexpected — the missing one is reported first */
    expect(patched("encoder.1.conv.bias", "encoder.1.conv.biaz", 19, NULL), DMX_ERR_MODEL,
           "missing tensor 'encoder.1.conv.bias'", "missing tensor");
    /* size tuple (16,) of encoder.1.conv.bias changed to (15,): a view that
     * fits the storage but not the architecture */
    expect(patched("K\x10\x85", "K\x0f\x85", 3, "encoder.1.conv.bias"), DMX_ERR_MODEL,
           "tensor 'encoder.1.conv.bias' has shape (15,) but the architecture expects (16,)",
           "wrong shape");
    /* another class than HTDemucs */
    expect(patched("demucs.htdemucs\nHTDemucs", "demucs.htdemucs\nHTDemucZ", 24, NULL), DMX_ERR_UNSUPPORTED,
           "HTDemucZ", "unknown class");
    /* kwargs that describe another architecture: bottom_channels 96 -> 128 */
    expect(patched("bottom_channelsq'K`", "bottom_channelsq'K\x80", 19, NULL), DMX_ERR_MODEL,
           "tensor 'channel_upsampler.weight' has shape (96, 64, 1) but the architecture expects (128, 64, 1)",
           "kwargs mismatch");
    /* t_layer_scale=False: the checkpoint's gamma tensors are left over */
    expect(patched("t_layer_scaleq7\x88", "t_layer_scaleq7\x89", 16, NULL), DMX_ERR_MODEL,
           "unexpected tensor 'crosstransformer.layers.0.gamma_1.scale'", "unexpected tensor");
    /* cac=False (an amplitude model): the input layer takes magnitudes, one
     * channel per audio channel, so these complex-as-channels tensors misfit */
    expect(patched("cacq\x13\x88", "cacq\x13\x89", 6, NULL), DMX_ERR_MODEL,
           "tensor 'encoder.0.conv.weight' has shape", "cac=False");
    /* and the unpatched bytes, through the same path, load fine */
    {
        char path[] = "/tmp/demix_test_model_XXXXXX";
        int fd = mkstemp(path);
        REQUIRE(fd >= 0 && write(fd, orig, orig_len) == (ssize_t)orig_len);
        close(fd);
        dmx_model *m = NULL;
        CHECK(dmx_model_load(path, &m) == DMX_OK && m);
        dmx_model_free(m);
        unlink(path);
    }
    free(orig);
    return dmx_test_done("test_model_errors");
}
