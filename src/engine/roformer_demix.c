/*
 * roformer_demix.c - MSST's chunked whole-track inference (see
 * roformer_demix.h).
 */
#include "roformer_demix.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

dmx_status dmx__rf_plan_make(const dmx__rf_config *c, int64_t len, dmx__rf_plan *p) {
    memset(p, 0, sizeof *p);
    if (len < 1) return dmx__fail(DMX_ERR_BAD_INPUT, "roformer demix: empty input");
    p->len = len;
    p->chunk = c->chunk_size;
    p->step = c->chunk_size / c->num_overlap;
    p->fade = c->chunk_size / 10;
    p->border = p->chunk - p->step;
    if (p->step < 1) return dmx__fail(DMX_ERR_MODEL, "roformer demix: chunk_size / num_overlap is 0");
    p->padded = len > 2 * p->border && p->border > 0;
    p->plen = len + (p->padded ? 2 * p->border : 0);
    p->n_chunks = (p->plen + p->step - 1) / p->step;
    return DMX_OK;
}

/* torch.linspace(a, b, n) in float32: the first half counts up from a, the
 * second half down from b. */
static float linspace_at(float a, float b, int64_t n, int64_t i) {
    if (n == 1) return a;
    float step = (b - a) / (float)(n - 1);
    int64_t half = n / 2;
    return i < half ? a + step * (float)i : b - step * (float)(n - 1 - i);
}

void dmx__rf_plan_window(const dmx__rf_plan *p, int64_t k, float *w) {
    const int64_t C = p->chunk, fade = p->fade;
    for (int64_t i = 0; i < C; i++) w[i] = 1.0f;
    for (int64_t i = 0; i < fade; i++) w[C - fade + i] = linspace_at(1.0f, 0.0f, fade, i);
    for (int64_t i = 0; i < fade; i++) w[i] = linspace_at(0.0f, 1.0f, fade, i);
    int64_t start = k * p->step;
    if (start == 0) {
        for (int64_t i = 0; i < fade; i++) w[i] = 1.0f;          /* first chunk: no fade-in */
    } else if (start + p->step >= p->plen) {
        for (int64_t i = 0; i < fade; i++) w[C - fade + i] = 1.0f; /* last chunk: no fade-out */
    }
}

static int64_t reflect(int64_t i, int64_t n) {
    if (n == 1) return 0;
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

dmx_status dmx__rf_demix(const dmx__roformer *n, const float *mix, int64_t len, float *out) {
    const dmx__rf_config *c = dmx__roformer_config(n);
    const int A = c->stereo ? 2 : 1, S = c->num_stems;
    dmx__rf_plan p;
    dmx_status st = dmx__rf_plan_make(c, len, &p);
    if (st != DMX_OK) return st;
    if (p.chunk > INT32_MAX / 2) return dmx__fail(DMX_ERR_MODEL, "roformer demix: chunk_size is too large");
    const int64_t C = p.chunk, P = p.plen, B = p.padded ? p.border : 0;
    float *chunk = malloc(sizeof(float) * (size_t)A * C);
    float *y = malloc(sizeof(float) * (size_t)S * A * C);
    float *w = malloc(sizeof(float) * (size_t)C);
    float *res = dmx__big_calloc(sizeof(float) * (size_t)S * A * P);
    float *cnt = dmx__big_calloc(sizeof(float) * (size_t)P);
    dmx__arena ar;
    dmx__arena_init(&ar);
    if (!chunk || !y || !w || !res || !cnt) {
        st = dmx__fail(DMX_ERR_NOMEM, "roformer demix: out of memory");
        goto done;
    }
    for (int64_t k = 0; k < p.n_chunks; k++) {
        int64_t start = k * p.step;
        int64_t L = P - start < C ? P - start : C;
        for (int a = 0; a < A; a++) {
            const float *x = mix + (size_t)a * len;
            float *d = chunk + (size_t)a * C;
            for (int64_t i = 0; i < L; i++) d[i] = x[reflect(start + i - B, len)];
            for (int64_t i = L; i < C; i++) d[i] = L > C / 2 ? d[reflect(i, L)] : 0.0f;
        }
        st = dmx__roformer_forward(n, &ar, chunk, (int)C, y, NULL, NULL);
        if (st != DMX_OK) goto done;
        dmx__rf_plan_window(&p, k, w);
        for (int s = 0; s < S; s++)
            for (int a = 0; a < A; a++) {
                const float *ys = y + ((size_t)s * A + a) * C;
                float *r = res + ((size_t)s * A + a) * P + start;
                for (int64_t i = 0; i < L; i++) r[i] += ys[i] * w[i];
            }
        for (int64_t i = 0; i < L; i++) cnt[start + i] += w[i];
        dmx__arena_fit(&ar);
    }
    for (int s = 0; s < S; s++)
        for (int a = 0; a < A; a++) {
            const float *r = res + ((size_t)s * A + a) * P + B;
            float *o = out + ((size_t)s * A + a) * len;
            for (int64_t i = 0; i < len; i++) o[i] = cnt[B + i] != 0.0f ? r[i] / cnt[B + i] : 0.0f;
        }
done:
    dmx__arena_free(&ar);
    free(chunk);
    free(y);
    free(w);
    dmx__big_free(res);
    dmx__big_free(cnt);
    return st;
}
