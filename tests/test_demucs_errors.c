/*
 * test_demucs_errors.c - time-domain Demucs checkpoints whose kwargs do not
 * match their tensors: each build fails with DMX_ERR_MODEL naming the tensor
 * or option, and frees everything. mdx_demucs_a_tiny (zoo fixture) is
 * patched in memory: a same-length edit of one kwarg in data.pkl, then the
 * CRC-32 of that entry is recomputed (local header, descriptor, central
 * directory) so only the network builder can object.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ckpt.h"
#include "demix/demix.h"
#include "net.h"
#include "testutil.h"

static unsigned char *orig;
static size_t orig_len;

static uint32_t rd32(const unsigned char *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }
static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static unsigned char *find(unsigned char *b, size_t n, const void *needle, size_t nl) {
    for (size_t i = 0; i + nl <= n; i++)
        if (!memcmp(b + i, needle, nl)) return b + i;
    return NULL;
}

/* Recomputes the CRC of the data.pkl entry everywhere it is recorded. */
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
            if (rd16(b + lho + 6) & 8) { /* data descriptor after the data */
                unsigned char *dd = b + data + size;
                wr32(rd32(dd) == 0x08074b50 ? dd + 4 : dd, crc);
            }
        }
        p += 46 + nl + el + cl;
    }
}

/* The kwarg `key` (pickled as BINUNICODE + BINPUT) with its 1- or 2-byte
 * value `from` replaced by `to`. */
static void expect(const char *key, const char *from, const char *to, size_t vn, const char *phrase) {
    unsigned char *b = malloc(orig_len);
    memcpy(b, orig, orig_len);
    char pat[64];
    size_t kl = strlen(key);
    pat[0] = 'X';
    wr32((unsigned char *)pat + 1, (uint32_t)kl);
    memcpy(pat + 5, key, kl);
    unsigned char *k = find(b, orig_len, pat, kl + 5);
    REQUIRE(k);
    unsigned char *v = k + 5 + kl + 2; /* after 'q' + memo byte */
    REQUIRE(k[5 + kl] == 'q' && !memcmp(v, from, vn));
    memcpy(v, to, vn);
    fix_pkl_crc(b, orig_len);
    dmx__ckpt *ck = NULL;
    REQUIRE(dmx__ckpt_load_mem(b, orig_len, "patched", &ck) == DMX_OK);
    void *net = (void *)1;
    dmx_status st = dmx__demucs_vt.build(ck, &net);
    printf("%-12s -> %s: %s\n", key, dmx_status_name(st), dmx_last_error());
    CHECK_MSG(st == DMX_ERR_MODEL, "%s: got %s", key, dmx_status_name(st));
    CHECK_MSG(net == NULL, "%s: network not NULL on failure", key);
    CHECK_MSG(strstr(dmx_last_error(), phrase) != NULL, "%s: message lacks '%s'", key, phrase);
    free(b);
}

int main(void) {
    orig = read_file(golden_path("zoo/models/mdx_demucs_a_tiny.th"), &orig_len);
    REQUIRE(orig);
    /* unpatched: builds */
    dmx__ckpt *ck = NULL;
    REQUIRE(dmx__ckpt_load_mem(orig, orig_len, "mdx_demucs_a_tiny", &ck) == DMX_OK);
    void *net = NULL;
    CHECK(dmx__demucs_vt.build(ck, &net) == DMX_OK);
    dmx__net_desc d;
    dmx__demucs_vt.describe(net, &d);
    CHECK(d.n_sources == 4 && d.audio_channels == 2 && d.samplerate == 44100 && d.training_length == 44 * 44100);
    CHECK(d.n_params == 357290); /* the fixture's manifest: every tensor bound */
    /* upstream's rule: intermediates/mdx_demucs_a_tiny/encoder0_in has 2 x 133802 steps for 132300 in */
    CHECK(dmx__demucs_vt.valid_length(net, 132300) == 133802);
    CHECK(dmx__demucs_vt.valid_length(net, 1) == 4778); /* ceil of a negative ratio, then one step at the bottom */
    dmx__demucs_vt.free(net);

    expect("rewrite", "\x89", "\x88", 1, "missing tensor 'encoder.0.4.weight'");
    expect("dconv_mode", "K\x01", "K\x02", 2, "missing tensor 'decoder.0.0.layers.0.0.weight'");
    expect("channels", "K\x04", "K\x05", 2, "tensor 'encoder.0.0.weight' has shape (4, 2, 8) but the architecture expects (5, 2, 8)");
    expect("lstm_layers", "K\x00", "K\x01", 2, "missing tensor 'lstm.lstm.weight_ih_l0'");
    expect("depth", "K\x06", "K\x05", 2, "decoder.0.0.weight");
    expect("norm_groups", "K\x04", "K\x03", 2, "norm_groups 3");
    expect("dconv_lstm", "K\x04", "K\x05", 2, "missing tensor 'encoder.4.3.layers.0.3.content.weight'");
    expect("dconv_depth", "K\x02", "K\x01", 2, "unexpected tensor 'encoder.0.3.layers.1.0.weight'");
    free(orig);
    return dmx_test_done("test_demucs_errors");
}
