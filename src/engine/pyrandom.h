/*
 * pyrandom.h - internal: Python's `random` module generator (MT19937 with
 * Python's integer seeding and randbelow), so that `--seed N` draws exactly
 * the shift offsets upstream draws after `random.seed(N)`.
 */
#ifndef DMX_ENGINE_PYRANDOM_H
#define DMX_ENGINE_PYRANDOM_H

#include <stdint.h>

typedef struct dmx__pyrandom {
    uint32_t mt[624];
    int index;
} dmx__pyrandom;

/* random.seed(seed) for a non-negative integer seed. */
void dmx__pyrandom_seed(dmx__pyrandom *r, uint64_t seed);
/* random.getrandbits(32) */
uint32_t dmx__pyrandom_u32(dmx__pyrandom *r);
/* random.randint(lo, hi), inclusive, hi - lo < 2^32. */
int64_t dmx__pyrandom_randint(dmx__pyrandom *r, int64_t lo, int64_t hi);

#endif
