/*
 * lstm.c - bidirectional LSTM and upstream's chunked BLSTM (see lstm.h).
 *
 * The input projection of all sequences is one GEMM per direction; the
 * recurrence then adds W_hh h_{t-1} step by step, one GEMM per step for the
 * whole batch (upstream's windows are the batch: a GEMV per window and step
 * read W_hh from memory once per window, 9x the traffic of a 40 s segment).
 */
#include "lstm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "ops.h"

#define NOMEM() dmx__fail(DMX_ERR_NOMEM, "out of memory in an LSTM")

void dmx__blstm_bind(dmx__binder *b, dmx__blstm *m, const char *prefix, int dim, int layers,
                     int max_steps, int skip) {
    memset(m, 0, sizeof *m);
    DMX_ASSERT(layers >= 1 && layers <= DMX__LSTM_MAX_LAYERS);
    m->dim = dim;
    m->max_steps = max_steps;
    m->skip = skip;
    dmx__lstm *l = &m->lstm;
    l->layers = layers;
    l->input = dim;
    l->hidden = dim;
    const int64_t H4 = 4 * (int64_t)dim;
    char name[256];
    for (int k = 0; k < layers; k++) {
        int64_t in = k ? 2 * (int64_t)dim : dim;
        for (int d = 0; d < 2; d++) {
            const char *suf = d ? "_reverse" : "";
            snprintf(name, sizeof name, "%s.lstm.weight_ih_l%d%s", prefix, k, suf);
            l->w_ih[k][d] = dmx__bind2(b, H4, in, name);
            snprintf(name, sizeof name, "%s.lstm.weight_hh_l%d%s", prefix, k, suf);
            l->w_hh[k][d] = dmx__bind2(b, H4, dim, name);
            snprintf(name, sizeof name, "%s.lstm.bias_ih_l%d%s", prefix, k, suf);
            l->b_ih[k][d] = dmx__bind1(b, H4, name);
            snprintf(name, sizeof name, "%s.lstm.bias_hh_l%d%s", prefix, k, suf);
            l->b_hh[k][d] = dmx__bind1(b, H4, name);
        }
    }
    snprintf(name, sizeof name, "%s.linear.weight", prefix);
    m->lin_w = dmx__bind2(b, dim, 2 * (int64_t)dim, name);
    snprintf(name, sizeof name, "%s.linear.bias", prefix);
    m->lin_b = dmx__bind1(b, dim, name);
}

static inline float sigm(float v) { return 1.0f / (1.0f + expf(-v)); }

/* One direction of one layer over a batch of B sequences: gx (B, T, 4H)
 * holds W_ih x_t + b_ih + b_hh; writes h_t of sequence b into
 * y[(b * T + t) * ldy]. Each step adds W_hh h_{t-1} for the whole batch as
 * one GEMM (B, H) x (H, 4H), so W_hh is read once per step, not once per
 * sequence. */
static void run_dir(const float *w_hh, float *gx, int B, int T, int H, int reverse, float *h,
                    float *c, float *y, int ldy) {
    const size_t ldg = (size_t)T * 4 * H;
    memset(h, 0, (size_t)B * H * sizeof *h);
    memset(c, 0, (size_t)B * H * sizeof *c);
    for (int s = 0; s < T; s++) {
        int t = reverse ? T - 1 - s : s;
        float *g0 = gx + (size_t)t * 4 * H;
        if (s > 0) dmx__sgemm(0, 1, B, 4 * H, H, 1.0f, h, H, w_hh, H, 1.0f, g0, (int)ldg);
        for (int b = 0; b < B; b++) {
            const float *g = g0 + (size_t)b * ldg;
            float *hb = h + (size_t)b * H, *cb = c + (size_t)b * H;
            for (int j = 0; j < H; j++) {
                float ig = sigm(g[j]), fg = sigm(g[H + j]), gg = tanhf(g[2 * H + j]),
                      og = sigm(g[3 * H + j]);
                cb[j] = fg * cb[j] + ig * gg;
                hb[j] = og * tanhf(cb[j]);
            }
            memcpy(y + ((size_t)b * T + t) * ldy, hb, (size_t)H * sizeof *hb);
        }
    }
}

dmx_status dmx__lstm_forward(const dmx__lstm *m, dmx__arena *ar, const float *x, int B, int T,
                             float *y) {
    const int H = m->hidden;
    const size_t rows = (size_t)B * T;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *gx = dmx__arena_floats(ar, rows * 4 * H);
    float *hc = dmx__arena_floats(ar, (size_t)2 * B * H);
    float *tmp = m->layers > 1 ? dmx__arena_floats(ar, rows * 2 * H) : NULL;
    if (!gx || !hc || (m->layers > 1 && !tmp)) return NOMEM();
    const float *in = x;
    int nin = m->input;
    for (int k = 0; k < m->layers; k++) {
        /* Alternate buffers so the last layer writes y. */
        float *out = ((m->layers - 1 - k) % 2 == 0) ? y : tmp;
        for (int d = 0; d < 2; d++) {
            for (size_t r = 0; r < rows; r++) {
                float *g = gx + r * 4 * H;
                for (int j = 0; j < 4 * H; j++) g[j] = m->b_ih[k][d][j] + m->b_hh[k][d][j];
            }
            dmx__sgemm(0, 1, (int)rows, 4 * H, nin, 1.0f, in, nin, m->w_ih[k][d], nin, 1.0f, gx,
                       4 * H);
            run_dir(m->w_hh[k][d], gx, B, T, H, d, hc, hc + (size_t)B * H, out + (size_t)d * H,
                    2 * H);
        }
        in = out;
        nin = 2 * H;
    }
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}

/* LSTM then Linear over B windows xt (B, T, dim) -> yt (B, T, dim). */
static dmx_status window(const dmx__blstm *m, dmx__arena *ar, const float *xt, int B, int T,
                         float *yt) {
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *h = dmx__arena_floats(ar, (size_t)B * T * 2 * m->dim);
    if (!h) return NOMEM();
    dmx_status s = dmx__lstm_forward(&m->lstm, ar, xt, B, T, h);
    if (s != DMX_OK) return s;
    dmx__linear(h, B * T, 2 * m->dim, m->lin_w, m->lin_b, m->dim, yt);
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}

dmx_status dmx__blstm_forward(const dmx__blstm *m, dmx__arena *ar, float *x, int T) {
    const int C = m->dim;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *yt = dmx__arena_floats(ar, (size_t)T * C); /* (T, C) result */
    if (!yt) return NOMEM();
    if (!m->max_steps || T <= m->max_steps) {
        float *xt = dmx__arena_floats(ar, (size_t)T * C);
        if (!xt) return NOMEM();
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T; t++) xt[(size_t)t * C + c] = x[(size_t)c * T + t];
        dmx_status s = window(m, ar, xt, 1, T, yt);
        if (s != DMX_OK) return s;
    } else {
        /* upstream's unfold: n frames of `width` every `stride`, zero
         * padded, run as one batch; the frames' centres are kept */
        const int width = m->max_steps, stride = width / 2, limit = stride / 2;
        const int nframes = (T + stride - 1) / stride;
        float *xt = dmx__arena_floats(ar, (size_t)nframes * width * C);
        float *ft = dmx__arena_floats(ar, (size_t)nframes * width * C);
        if (!xt || !ft) return NOMEM();
        for (int k = 0; k < nframes; k++)
            for (int t = 0; t < width; t++) {
                int64_t src = (int64_t)k * stride + t;
                float *row = xt + ((size_t)k * width + t) * C;
                for (int c = 0; c < C; c++) row[c] = src < T ? x[(size_t)c * T + src] : 0.0f;
            }
        dmx_status s = window(m, ar, xt, nframes, width, ft);
        if (s != DMX_OK) return s;
        int pos = 0; /* output steps written */
        for (int k = 0; k < nframes && pos < T; k++) {
            int a = k == 0 ? 0 : limit;
            int e = k == nframes - 1 ? width : width - limit;
            if (k == 0 && nframes == 1) e = width - limit;
            for (int t = a; t < e && pos < T; t++, pos++)
                memcpy(yt + (size_t)pos * C, ft + ((size_t)k * width + t) * C,
                       (size_t)C * sizeof *yt);
        }
    }
    for (int c = 0; c < C; c++)
        for (int t = 0; t < T; t++) {
            float v = yt[(size_t)t * C + c];
            x[(size_t)c * T + t] = m->skip ? x[(size_t)c * T + t] + v : v;
        }
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}
