/*
 * arena.c - see arena.h.
 */
#include "arena.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64
#define HDR_SIZE ((sizeof(dmx__arena_block) + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN)

static unsigned char *block_data(dmx__arena_block *b) { return (unsigned char *)b + HDR_SIZE; }

void dmx__arena_init(dmx__arena *a) { memset(a, 0, sizeof *a); }

void dmx__arena_free(dmx__arena *a) {
    dmx__arena_block *b = a->head;
    while (b) {
        dmx__arena_block *n = b->next;
        free(b);
        b = n;
    }
    memset(a, 0, sizeof *a);
}

static dmx__arena_block *new_block(size_t size) {
    dmx__arena_block *b = aligned_alloc(ARENA_ALIGN, HDR_SIZE + size);
    if (!b) return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

float *dmx__arena_floats(dmx__arena *a, size_t n) {
    size_t bytes = (n * sizeof(float) + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (bytes == 0) bytes = ARENA_ALIGN;
    dmx__arena_block *b = a->head;
    if (!b || b->size - b->used < bytes) {
        size_t sz = bytes > ((size_t)32 << 20) ? bytes : ((size_t)32 << 20);
        dmx__arena_block *nb = new_block(sz);
        if (!nb) return NULL;
        nb->next = a->head;
        a->head = nb;
        b = nb;
    }
    float *p = (float *)(block_data(b) + b->used);
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
    dmx__arena_mark m = {a->head, a->head ? a->head->used : 0, a->in_use};
    return m;
}

void dmx__arena_restore(dmx__arena *a, dmx__arena_mark m) {
    /* Blocks added after the mark are emptied but kept (they are reused by the
     * next allocations or merged by compact). */
    for (dmx__arena_block *b = a->head; b && b != m.block; b = b->next) b->used = 0;
    if (m.block) m.block->used = m.used;
    /* Move empty newer blocks behind the marked one so allocation continues
     * from the marked block first. */
    while (a->head && a->head != m.block && a->head->used == 0 && m.block) {
        dmx__arena_block *b = a->head;
        a->head = b->next;
        /* append after m.block */
        b->next = m.block->next;
        m.block->next = b;
        /* keep m.block at head; the spare block is used when m.block fills */
    }
    a->in_use = m.in_use;
}

int dmx__arena_compact(dmx__arena *a) {
    size_t total = 0, nblocks = 0;
    for (dmx__arena_block *b = a->head; b; b = b->next) {
        total += b->size;
        nblocks++;
    }
    if (nblocks <= 1 && total >= a->high_water) {
        if (a->head) a->head->used = 0;
        a->in_use = 0;
        return 0;
    }
    size_t hw = a->high_water + 64 * ARENA_ALIGN;
    dmx__arena_free(a);
    a->high_water = hw;
    a->head = new_block(hw);
    return a->head ? 0 : -1;
}
