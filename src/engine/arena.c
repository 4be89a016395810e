/*
 * arena.c - see arena.h.
 */
#include "arena.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define ARENA_ALIGN 64
/* Pages: the kernel's default, 4 KiB, not transparent huge pages. Each
 * worker's arena is touched for the first time during a song's first
 * segments, on the critical path. On the virtual machines this runs on
 * (free memory handed back to the host in large blocks,
 * page_reporting_order), a huge page is taken from such a large free block,
 * which the host must fault back in: whole runs spent 1.0-1.5 CPU-s in the
 * kernel zeroing fresh huge pages, against 0.3-0.4 s with 4 KiB pages, which
 * the guest takes from the small free fragments it still backs. Measured on
 * whole songs, alternated: a 30 s song 5 % faster on two threads, 2.5 % on
 * one; 3 min 1.3 %; one evaluation on warm memory unchanged (no TLB cost
 * showed). HUGE_PAGE stays only as the blocks' size unit. */
#define HUGE_PAGE ((size_t)2 << 20)
#define MIN_BLOCK ((size_t)64 << 20)

void *dmx__big_alloc(size_t bytes) {
    size_t total = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (total == 0) total = HUGE_PAGE;
    void *p = NULL;
    if (posix_memalign(&p, ARENA_ALIGN, total) != 0) return NULL;
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
    void *p =
        mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return NULL;
    *b = (dmx__arena_block){(unsigned char *)p, bytes, 0};
    return b->data;
}

static void block_unmap(dmx__arena_block *b) {
    if (b->data) munmap(b->data, b->size);
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
