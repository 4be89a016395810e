/*
 * localstate.c - LocalState attention (see localstate.h).
 */
#include "localstate.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "ops.h"

#define NOMEM() dmx__fail(DMX_ERR_NOMEM, "out of memory in a LocalState attention")
#define QBLOCK  256

static void bind_1x1(dmx__binder *b, const float **w, const float **bias, const char *prefix,
                     const char *what, int cout, int cin) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s.weight", prefix, what);
    *w = dmx__bind3(b, cout, cin, 1, name);
    snprintf(name, sizeof name, "%s.%s.bias", prefix, what);
    *bias = dmx__bind1(b, cout, name);
}

void dmx__localstate_bind(dmx__binder *b, dmx__localstate *m, const char *prefix, int channels,
                          int heads, int ndecay) {
    memset(m, 0, sizeof *m);
    m->channels = channels;
    m->heads = heads;
    m->ndecay = ndecay;
    if (heads < 1 || channels % heads) {
        if (b->st == DMX_OK)
            b->st = dmx__fail(DMX_ERR_MODEL, "%s: %d channels do not split into %d heads", prefix,
                              channels, heads);
        return;
    }
    /* registration order of upstream's __init__ */
    bind_1x1(b, &m->content_w, &m->content_b, prefix, "content", channels, channels);
    bind_1x1(b, &m->query_w, &m->query_b, prefix, "query", channels, channels);
    bind_1x1(b, &m->key_w, &m->key_b, prefix, "key", channels, channels);
    if (ndecay)
        bind_1x1(b, &m->decay_w, &m->decay_b, prefix, "query_decay", heads * ndecay, channels);
    bind_1x1(b, &m->proj_w, &m->proj_b, prefix, "proj", channels, channels);
}

/* y (cout, T) = w (cout, cin) x (cin, T) + b */
static void conv1x1(const float *w, const float *b, int cout, int cin, const float *x, int T,
                    float *y) {
    dmx__sgemm_rowbias(0, 0, cout, T, cin, w, cin, x, T, b, y, T);
}

dmx_status dmx__localstate_forward(const dmx__localstate *m, dmx__arena *ar, float *x, int T) {
    const int C = m->channels, NH = m->heads, D = C / NH, ND = m->ndecay;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *q = dmx__arena_floats(ar, (size_t)C * T);
    float *k = dmx__arena_floats(ar, (size_t)C * T);
    float *v = dmx__arena_floats(ar, (size_t)C * T);
    float *res = dmx__arena_floats(ar, (size_t)C * T);
    float *dq = ND ? dmx__arena_floats(ar, (size_t)NH * ND * T) : NULL;
    float *coef = dmx__arena_floats(ar, (size_t)T);
    int qb = T < QBLOCK ? T : QBLOCK;
    float *w = dmx__arena_floats(ar, (size_t)qb * T); /* (queries, keys) */
    if (!q || !k || !v || !res || (ND && !dq) || !coef || !w) return NOMEM();
    conv1x1(m->query_w, m->query_b, C, C, x, T, q);
    conv1x1(m->key_w, m->key_b, C, C, x, T, k);
    conv1x1(m->content_w, m->content_b, C, C, x, T, v);
    if (ND) {
        conv1x1(m->decay_w, m->decay_b, NH * ND, C, x, T, dq);
        for (size_t i = 0; i < (size_t)NH * ND * T; i++)
            dq[i] = 1.0f / (1.0f + expf(-dq[i])) / 2.0f;
    }
    const float inv_sqrt_d = 1.0f / sqrtf((float)D);
    const float inv_sqrt_nd = ND ? 1.0f / sqrtf((float)ND) : 0.0f;
    for (int h = 0; h < NH; h++) {
        const float *qh = q + (size_t)h * D * T, *kh = k + (size_t)h * D * T,
                    *vh = v + (size_t)h * D * T;
        /* per query s: the decay slope sum_f (f+1)/sqrt(ndecay) * dq[f, s] */
        for (int s = 0; s < T; s++) {
            float a = 0.0f;
            for (int f = 0; f < ND; f++)
                a += (float)(f + 1) * inv_sqrt_nd * dq[((size_t)h * ND + f) * T + s];
            coef[s] = a;
        }
        for (int s0 = 0; s0 < T; s0 += qb) {
            int ns = T - s0 < qb ? T - s0 : qb;
            /* w[s, t] = sum_c q[c, s0 + s] k[c, t] */
            dmx__sgemm(1, 0, ns, T, D, 1.0f, qh + s0, T, kh, T, 0.0f, w, T);
            for (int s = 0; s < ns; s++) {
                float *row = w + (size_t)s * T;
                int sq = s0 + s;
                float cs = coef[sq];
                float mx = -INFINITY;
                for (int t = 0; t < T; t++) {
                    float val = row[t] * inv_sqrt_d - cs * fabsf((float)(t - sq));
                    if (t == sq) val = -100.0f;
                    row[t] = val;
                    if (val > mx) mx = val;
                }
                float sum = 0.0f;
                for (int t = 0; t < T; t++) {
                    row[t] = expf(row[t] - mx);
                    sum += row[t];
                }
                float inv = 1.0f / sum;
                for (int t = 0; t < T; t++) row[t] *= inv;
            }
            /* res[c, s0 + s] = sum_t v[c, t] w[s, t] */
            dmx__sgemm(0, 1, D, ns, T, 1.0f, vh, T, w, T, 0.0f, res + (size_t)h * D * T + s0, T);
        }
    }
    /* x += proj(res) */
    dmx__sgemm(0, 0, C, T, C, 1.0f, m->proj_w, C, res, T, 1.0f, x, T);
    dmx__add_bias(x, m->proj_b, C, (size_t)T);
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}
