/*
 * fuzz_bagyaml.c - fuzz target for the bag-of-models YAML parser
 * (src/engine/bagyaml.c, dmx__bag_yaml_parse): arbitrary text, not
 * NUL-terminated, must parse or fail with a status, never crash.
 *
 * Built as fuzz_bagyaml (libFuzzer, clang) and replay_bagyaml (any compiler)
 * by tests/fuzz.cmake; seeds in tests/fuzz/corpus/bagyaml.
 */
#include <stddef.h>
#include <stdint.h>

#include "bagyaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dmx__bag_spec *spec = NULL;
    if (dmx__bag_yaml_parse((const char *)data, size, &spec) != DMX_OK) return 0;
    /* What the bag loader reads afterwards. */
    volatile double sink = spec->has_segment ? spec->segment : 0;
    for (size_t i = 0; i < spec->n_models; i++) sink += (double)spec->models[i][0];
    for (size_t i = 0; spec->weights && i < spec->weight_rows * spec->weight_cols; i++)
        sink += spec->weights[i];
    (void)sink;
    dmx__bag_spec_free(spec);
    return 0;
}
