/*
 * pyrandom.c - see pyrandom.h. MT19937 (Matsumoto & Nishimura) seeded with
 * init_by_array over the 32-bit words of the seed, as CPython does.
 */
#include "pyrandom.h"

#define N 624
#define M 397

static void init_genrand(dmx__pyrandom *r, uint32_t s) {
    r->mt[0] = s;
    for (int i = 1; i < N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->index = N;
}

static void init_by_array(dmx__pyrandom *r, const uint32_t *key, int klen) {
    init_genrand(r, 19650218u);
    int i = 1, j = 0;
    for (int k = (N > klen ? N : klen); k; k--) {
        r->mt[i] =
            (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++;
        j++;
        if (i >= N) {
            r->mt[0] = r->mt[N - 1];
            i = 1;
        }
        if (j >= klen) j = 0;
    }
    for (int k = N - 1; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= N) {
            r->mt[0] = r->mt[N - 1];
            i = 1;
        }
    }
    r->mt[0] = 0x80000000u;
    r->index = N;
}

void dmx__pyrandom_seed(dmx__pyrandom *r, uint64_t seed) {
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    init_by_array(r, key, key[1] ? 2 : 1);
}

uint32_t dmx__pyrandom_u32(dmx__pyrandom *r) {
    static const uint32_t mag01[2] = {0u, 0x9908b0dfu};
    if (r->index >= N) {
        int kk;
        uint32_t y;
        for (kk = 0; kk < N - M; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + M] ^ (y >> 1) ^ mag01[y & 1u];
        }
        for (; kk < N - 1; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + (M - N)] ^ (y >> 1) ^ mag01[y & 1u];
        }
        y = (r->mt[N - 1] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
        r->mt[N - 1] = r->mt[M - 1] ^ (y >> 1) ^ mag01[y & 1u];
        r->index = 0;
    }
    uint32_t y = r->mt[r->index++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

int64_t dmx__pyrandom_randint(dmx__pyrandom *r, int64_t lo, int64_t hi) {
    uint64_t n = (uint64_t)(hi - lo) + 1; /* randbelow(n) */
    int k = 0;
    while (k < 64 && (n >> k)) k++; /* n.bit_length() */
    uint32_t v;
    do { v = dmx__pyrandom_u32(r) >> (32 - k); } while (v >= n);
    return lo + v;
}
