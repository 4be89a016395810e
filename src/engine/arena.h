/*
 * arena.h - internal: a per-worker stack allocator for activations.
 *
 * A forward pass allocates its tensors from the arena and releases them in
 * stack order (save/restore). Memory comes in large blocks that are kept for
 * the arena's lifetime: the first pass grows the block list to its
 * high-water mark, and every later pass of the same shape replays the same
 * allocation sequence into the same, already faulted-in blocks, so the inner
 * loop never calls malloc or takes a page fault. Blocks never move, so
 * pointers stay valid until released.
 */
#ifndef DMX_ENGINE_ARENA_H
#define DMX_ENGINE_ARENA_H

#include <stddef.h>

typedef struct dmx__arena_block {
    unsigned char *data;
    size_t size, used;
} dmx__arena_block;

typedef struct dmx__arena {
    dmx__arena_block *blocks; /* (n_blocks), blocks after `cur` are empty */
    int n_blocks, cap_blocks, cur;
    size_t in_use;     /* bytes handed out now (including alignment) */
    size_t high_water; /* most bytes ever in use */
} dmx__arena;

typedef struct dmx__arena_mark {
    int cur;
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
/* On an empty arena holding several blocks, replaces them by one block of
 * the high-water size: the first pass grows block by block and leaves the
 * tail of each block unused, while a single block holds a replay of the same
 * allocation sequence with no waste. No-op otherwise. Returns 0, or -1 when
 * the new block could not be allocated (the arena is then left empty and
 * grows again on demand). */
int dmx__arena_fit(dmx__arena *a);
/* Total bytes reserved in blocks. */
size_t dmx__arena_reserved(const dmx__arena *a);

/* Large buffers outside arenas (whole-signal buffers): 64-byte aligned,
 * sized in whole 2 MiB units. Free with dmx__big_free. */
void *dmx__big_alloc(size_t bytes);
void *dmx__big_calloc(size_t bytes);
void dmx__big_free(void *p);

#endif
