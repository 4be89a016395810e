/*
 * arena.c - see arena.h.
 */
#include "arena.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define ARENA_ALIGN 64
/* Blocks are 2 MiB aligned and advised for transparent huge pages: a forward
 * pass touches hundreds of MB, and 4 KiB page faults (very slow on
 * virtual machines) would cost more than some layers. */
#define HUGE_PAGE ((size_t)2 << 20)
#define MIN_BLOCK ((size_t)64 << 20)

void *dmx__big_alloc(size_t bytes) {
    size_t total = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (total == 0) total = HUGE_PAGE;
    void *p = NULL;
    if (posix_memalign(&p, HUGE_PAGE, total) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, total, MADV_HUGEPAGE);
#endif
    return p;
}

void *dmx__big_calloc(size_t bytes) {
    void *p = dmx__big_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void dmx__big_free(void *p) { free(p); }

void dmx__arena_init(dmx__arena *a) { memset(a, 0, sizeof *a); }

void dmx__arena_free(dmx__arena *a) {
    for (int i = 0; i < a->n_blocks; i++) dmx__big_free(a->blocks[i].data);
    free(a->blocks);
    memset(a, 0, sizeof *a);
}

size_t dmx__arena_reserved(const dmx__arena *a) {
    size_t t = 0;
    for (int i = 0; i < a->n_blocks; i++) t += a->blocks[i].size;
    return t;
}

float *dmx__arena_floats(dmx__arena *a, size_t n) {
    size_t bytes = (n * sizeof(float) + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (bytes == 0) bytes = ARENA_ALIGN;
    /* move on to the next (empty) block while the current one is too full */
    while (a->cur < a->n_blocks && a->blocks[a->cur].size - a->blocks[a->cur].used < bytes) {
        if (a->cur + 1 >= a->n_blocks) break;
        a->cur++;
    }
    dmx__arena_block *b = a->cur < a->n_blocks ? &a->blocks[a->cur] : NULL;
    if (!b || b->size - b->used < bytes) {
        if (a->n_blocks == a->cap_blocks) {
            int nc = a->cap_blocks ? 2 * a->cap_blocks : 8;
            dmx__arena_block *nb = realloc(a->blocks, sizeof *nb * nc);
            if (!nb) return NULL;
            a->blocks = nb;
            a->cap_blocks = nc;
        }
        size_t sz = bytes > MIN_BLOCK ? bytes : MIN_BLOCK;
        unsigned char *d = dmx__big_alloc(sz);
        if (!d) return NULL;
        sz = (sz + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        a->blocks[a->n_blocks] = (dmx__arena_block){d, sz, 0};
        a->cur = a->n_blocks++;
        b = &a->blocks[a->cur];
    }
    float *p = (float *)(b->data + b->used);
    b->used += bytes;
    a->in_use += bytes;
    if (a->in_use > a->high_water) a->high_water = a->in_use;
    return p;
}

float *dmx__arena_zeros(dmx__arena *a, size_t n) {
    float *p = dmx__arena_floats(a, n);
    if (p) memset(p, 0, n * sizeof(float));
    return p;
}

dmx__arena_mark dmx__arena_save(const dmx__arena *a) {
    dmx__arena_mark m = {a->cur, a->n_blocks ? a->blocks[a->cur].used : 0, a->in_use};
    return m;
}

void dmx__arena_restore(dmx__arena *a, dmx__arena_mark m) {
    for (int i = m.cur + 1; i <= a->cur && i < a->n_blocks; i++) a->blocks[i].used = 0;
    a->cur = m.cur;
    if (a->n_blocks) a->blocks[m.cur].used = m.used;
    a->in_use = m.in_use;
}
