/*
 * fuzz_ckpt.c - fuzz target for the untrusted-input parsers behind model
 * loading: the zip reader + checkpoint loader (dmx__ckpt_load_mem) and the
 * pickle VM on its own (the zip CRCs would otherwise keep mutated pickles
 * out). Every input goes through both. The bag YAML parser has its own
 * target, fuzz_bagyaml.c.
 *
 * tests/fuzz.cmake builds it as fuzz_ckpt (libFuzzer, clang) and replay_ckpt
 * (any compiler); scripts/fuzz.sh runs it. Seed corpus: tests/fuzz/corpus/ckpt
 * (synth.th / synth.pkl are what test_ckpt writes with DEMIX_FUZZ_SEED_DIR,
 * as is diffq.th, a DiffQ-quantized state whose network build unpacks it).
 */
#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"
#include "net.h"
#include "pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dmx__ckpt *ck = NULL;
    if (dmx__ckpt_load_mem(data, size, "fuzz.th", &ck) == DMX_OK && dmx__ckpt_is_quantized(ck)) {
        /* a DiffQ state is named and unpacked by the network build */
        dmx__net *n = NULL;
        if (dmx__net_build(ck, &n) == DMX_OK) dmx__net_free(n); /* takes ck */
    } else if (ck) {
        /* touch what a model builder reads */
        for (size_t i = 0; i < dmx__ckpt_n_tensors(ck); i++) {
            const dmx__tensor *t = dmx__ckpt_tensor_at(ck, i);
            volatile float sink = t->numel ? t->data[t->numel - 1] : 0.0f;
            (void)sink;
            (void)dmx__ckpt_find(ck, t->name);
        }
        for (size_t i = 0; i < dmx__ckpt_kw_count(ck); i++) {
            const char *k = dmx__ckpt_kw_key_at(ck, i);
            double d, v[4];
            const char *s, *l[4];
            size_t n;
            (void)dmx__ckpt_kw_num(ck, k, &d);
            (void)dmx__ckpt_kw_str(ck, k, &s);
            (void)dmx__ckpt_kw_strlist(ck, k, l, 4, &n);
            (void)dmx__ckpt_kw_numlist(ck, k, v, 4, &n);
        }
        dmx__ckpt_free(ck);
    }
    dmx__pickle *pk = NULL;
    if (dmx__pickle_run(data, size, "fuzz.pkl", &pk) == DMX_OK) dmx__pickle_free(pk);
    return 0;
}
