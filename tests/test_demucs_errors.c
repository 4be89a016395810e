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

#include "ckpt.h"
#include "demix/demix.h"
#include "net.h"
#include "testutil.h"

static unsigned char *orig;
static size_t orig_len;

/* The kwarg `key` (pickled as BINUNICODE + BINPUT) with its 1- or 2-byte
 * value `from` replaced by `to`. */
static void expect(const char *key, const char *from, const char *to, size_t vn, const char *phrase) {
    unsigned char *b = tu_memdup(orig, orig_len);
    char pat[64];
    size_t kl = strlen(key);
    pat[0] = 'X';
    for (int i = 0; i < 4; i++) pat[1 + i] = (char)(kl >> (8 * i)); /* little-endian length */
    memcpy(pat + 5, key, kl);
    unsigned char *k = tu_memfind(b, orig_len, pat, kl + 5);
    REQUIRE(k);
    unsigned char *v = k + 5 + kl + 2; /* after 'q' + memo byte */
    REQUIRE(k[5 + kl] == 'q' && !memcmp(v, from, vn));
    memcpy(v, to, vn);
    tu_zip_fix_pkl_crc(b, orig_len);
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
