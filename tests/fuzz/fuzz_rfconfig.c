/*
 * fuzz_rfconfig.c - fuzz target for MSST model configs: the YAML tree
 * (src/engine/yamltree.c on libyaml) and the RoFormer config reader
 * (src/engine/roformer_config.c). Arbitrary text, not NUL-terminated, must
 * parse or fail with a status, never crash; a config that reads also gets
 * its band layout built (roformer_bands.c).
 *
 * Built as fuzz_rfconfig (libFuzzer, clang) and replay_rfconfig (any
 * compiler) by tests/fuzz.cmake; seeds in tests/fuzz/corpus/rfconfig.
 */
#include <stddef.h>
#include <stdint.h>

#include "roformer.h"
#include "roformer_config.h"
#include "yamltree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dmx__ynode *root = NULL;
    if (dmx__yaml_parse((const char *)data, size, "fuzz", &root) != DMX_OK) return 0;
    dmx__rf_config c;
    if (dmx__rf_config_read(root, "fuzz", &c) == DMX_OK && c.n_fft <= 8192 && c.n_bands <= 256) {
        dmx__rf_bands b;
        if (dmx__rf_bands_make(&c, &b) == DMX_OK) dmx__rf_bands_free(&b);
    }
    dmx__yaml_free(root);
    return 0;
}
