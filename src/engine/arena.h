/*
 * arena.h - internal: a per-session bump allocator for activations.
 *
 * A forward pass allocates its tensors from the arena and releases them in
 * stack order (mark/release). The first pass may grow the arena in extra
 * blocks; dmx__arena_compact() then replaces them with one block of the
 * high-water size, so every later pass of the same shape runs without malloc.
 * Blocks never move, so pointers stay valid until released.
 */
#ifndef DMX_ENGINE_ARENA_H
#define DMX_ENGINE_ARENA_H

#include <stddef.h>

typedef struct dmx__arena_block {
    struct dmx__arena_block *next;
    size_t size, used;
    /* data follows, 64-byte aligned */
} dmx__arena_block;

typedef struct dmx__arena {
    dmx__arena_block *head; /* current (most recent) block first */
    size_t in_use;          /* bytes handed out now (including alignment) */
    size_t high_water;      /* most bytes ever in use */
} dmx__arena;

typedef struct dmx__arena_mark {
    dmx__arena_block *block;
    size_t used, in_use;
} dmx__arena_mark;

void dmx__arena_init(dmx__arena *a);
void dmx__arena_free(dmx__arena *a);
/* Returns 64-byte aligned uninitialised memory for n floats, or NULL. */
float *dmx__arena_floats(dmx__arena *a, size_t n);
/* Same, zero-filled. */
float *dmx__arena_zeros(dmx__arena *a, size_t n);
dmx__arena_mark dmx__arena_save(const dmx__arena *a);
void dmx__arena_restore(dmx__arena *a, dmx__arena_mark m);
/* Call only when nothing is in use: keeps one block of the high-water size. */
int dmx__arena_compact(dmx__arena *a);

#endif
