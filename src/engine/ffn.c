/*
 * ffn.c - a feed-forward block by row blocks (see ffn.h).
 */
#include "ffn.h"

#include "ops.h"
#include "team.h"

#define PARTS 8

typedef struct {
    const float *x, *w1, *w2, *p1, *p2;
    dmx__gemm_epi e1, e2;
    float *y, *scratch; /* scratch: rows x hid floats per part */
    int N, in, hid, out, rows, blocks, parts;
} job;

static void part(void *ctx, int p) {
    const job *j = ctx;
    float *h = j->scratch + (size_t)p * j->rows * j->hid;
    int lo, hi;
    dmx__team_share(j->blocks, j->parts, p, &lo, &hi);
    for (int b = lo; b < hi; b++) {
        const int r0 = b * j->rows, m = j->N - r0 < j->rows ? j->N - r0 : j->rows;
        dmx__gemm_packed(0, 1, m, j->hid, j->in, 1.0f, j->x + (size_t)r0 * j->in, j->in, NULL,
                         j->w1, j->in, j->p1, 0.0f, h, j->hid, &j->e1);
        dmx__gemm_packed(0, 1, m, j->out, j->hid, 1.0f, h, j->hid, NULL, j->w2, j->hid, j->p2,
                         0.0f, j->y + (size_t)r0 * j->out, j->out, &j->e2);
    }
}

int dmx__ffn(dmx__arena *ar, const float *x, int N, int in, const float *w1, const float *b1,
             int hid, dmx__act act, const float *w2, const float *b2, int out, float *y) {
    if (N < 1) return 0;
    dmx__arena_mark mk = dmx__arena_save(ar);
    const size_t n1 = dmx__gemm_pack_floats(DMX__GEMM_B, hid, in),
                 n2 = dmx__gemm_pack_floats(DMX__GEMM_B, out, hid);
    if (!n1 || !n2) { /* no own kernels: the two products, the hidden whole */
        float *h = dmx__arena_floats(ar, (size_t)N * hid);
        if (!h) {
            dmx__arena_restore(ar, mk);
            return -1;
        }
        dmx__linear_act(x, N, in, w1, b1, hid, h, act);
        dmx__linear(h, N, hid, w2, b2, out, y);
        dmx__arena_restore(ar, mk);
        return 0;
    }
    job j = {.x = x, .w1 = w1, .w2 = w2, .y = y, .N = N, .in = in, .hid = hid, .out = out};
    j.e1 = (dmx__gemm_epi){.col_bias = b1, .act = act};
    j.e2 = (dmx__gemm_epi){.col_bias = b2};
    j.rows = dmx__gemm_row_block(sizeof(float) * (size_t)hid);
    if (j.rows > N) j.rows = N;
    j.blocks = (N + j.rows - 1) / j.rows;
    j.parts = j.blocks < PARTS ? j.blocks : PARTS;
    float *p1 = dmx__arena_floats(ar, n1), *p2 = dmx__arena_floats(ar, n2);
    j.scratch = dmx__arena_floats(ar, (size_t)j.parts * j.rows * hid);
    if (!p1 || !p2 || !j.scratch) {
        dmx__arena_restore(ar, mk);
        return -1;
    }
    dmx__gemm_pack_into(DMX__GEMM_B, 1, hid, in, w1, in, p1);
    dmx__gemm_pack_into(DMX__GEMM_B, 1, out, hid, w2, hid, p2);
    j.p1 = p1, j.p2 = p2;
    const int prof = dmx__gemm_profiling();
    const double t0 = prof ? dmx__seconds_now() : 0;
    dmx__team_for(j.parts, part, &j);
    dmx__flops_add(2ull * (uint64_t)N * (uint64_t)hid * (uint64_t)(in + out));
    if (prof)
        dmx__gemm_profile_add(DMX__FFN_SHAPE, out, N, hid, in, 1, dmx__seconds_now() - t0);
    dmx__arena_restore(ar, mk);
    return 0;
}
