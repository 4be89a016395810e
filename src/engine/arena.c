/*
 * arena.c - see arena.h.
 */
#include "arena.h"

#include <stdint.h>
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

/* Arena blocks are mapped directly. The first one reserves far more address
 * space than a forward pass needs (MAP_NORESERVE: untouched pages cost
 * nothing), so a pass stays in one contiguous block and the resident memory
 * is exactly its high-water mark; several smaller blocks would each keep
 * their own touched tail. */
#define FIRST_RESERVE ((size_t)1 << 30)

static unsigned char *block_map(size_t bytes, dmx__arena_block *b) {
    size_t len = bytes + HUGE_PAGE; /* slack to align to a huge page */
    void *p =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return NULL;
    uintptr_t a = ((uintptr_t)p + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
#ifdef MADV_HUGEPAGE
    madvise((void *)a, bytes, MADV_HUGEPAGE);
#endif
    *b = (dmx__arena_block){(unsigned char *)a, bytes, 0, p, len};
    return b->data;
}

static void block_unmap(dmx__arena_block *b) {
    if (b->map) munmap(b->map, b->map_len);
}

void dmx__arena_init(dmx__arena *a) { memset(a, 0, sizeof *a); }

void dmx__arena_free(dmx__arena *a) {
    for (int i = 0; i < a->n_blocks; i++) block_unmap(&a->blocks[i]);
    free(a->blocks);
    memset(a, 0, sizeof *a);
}

int dmx__arena_fit(dmx__arena *a) {
    if (a->in_use != 0 || a->n_blocks < 2) return 0;
    size_t sz = (a->high_water + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    /* unmap first so the old and new blocks never coexist at the peak */
    for (int i = 0; i < a->n_blocks; i++) block_unmap(&a->blocks[i]);
    a->n_blocks = block_map(sz, &a->blocks[0]) ? 1 : 0;
    a->cur = 0;
    return a->n_blocks ? 0 : -1;
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
        sz = (sz + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        /* the first block tries a large reservation, then what is needed */
        if (!(a->n_blocks == 0 && sz < FIRST_RESERVE && block_map(FIRST_RESERVE, &a->blocks[0])) &&
            !block_map(sz, &a->blocks[a->n_blocks]))
            return NULL;
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
