/*
 * test_model_errors.c - checkpoints that load as pickles but do not describe
 * a network demix can build: each gives its own status and a message naming
 * the tensor or field. The fixtures are patched in memory: a same-length edit
 * of data.pkl, then the CRC-32 in the local header, data descriptor and
 * central directory is recomputed so only the model builder can object.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "demix/demix.h"
#include "testutil.h"

static unsigned char *orig;
static size_t orig_len;

/* Copy of the fixture with `from` replaced by `to` (same length) once, at the
 * first occurrence at or after the first occurrence of `after` (if given). */
static unsigned char *patched(const void *from, const void *to, size_t n, const char *after) {
    unsigned char *b = tu_memdup(orig, orig_len);
    tu_patch(b, orig_len, from, to, n, after);
    tu_zip_fix_pkl_crc(b, orig_len);
    return b;
}

static void expect(unsigned char *buf, dmx_status want, const char *phrase, const char *what) {
    tu_expect_load_error(buf, orig_len, want, phrase, what);
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
    tu_expect_load_ok(orig, orig_len);
    free(orig);
    return dmx_test_done("test_model_errors");
}
