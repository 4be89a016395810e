/*
 * test_dconv.c - the DConv building blocks against naive double-precision
 * loops written straight from upstream's definitions:
 *   - dmx__lstm_forward: a 2-layer bidirectional LSTM (PyTorch gate order);
 *   - dmx__blstm_forward: upstream's BLSTM, unchunked and chunked
 *     (max_steps windows, hop max_steps/2, centre stitching) with skip;
 *   - dmx__localstate_forward: LocalState attention with decay terms and a
 *     T larger than its query block;
 *   - dmx__resample_frac: julius' x2 up and /2 down (and 3/2) against the
 *     float64 formula.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dconv.h"
#include "gemm.h"
#include "localstate.h"
#include "lstm.h"
#include "resample.h"
#include "team.h"
#include "testutil.h"

static unsigned rng = 12345;
static float frand(void) {
    rng = rng * 1103515245u + 12345u;
    return ((rng >> 8) & 0xffff) / 32768.0f - 1.0f;
}
static float *rnd(size_t n, float scale) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}

static double max_rel(const float *a, const double *b, size_t n) {
    double m = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(b[i]) > r) r = fabs(b[i]);
        if (fabs(a[i] - b[i]) > m) m = fabs(a[i] - b[i]);
    }
    return r > 0 ? m / r : m;
}

static double sg(double v) { return 1.0 / (1.0 + exp(-v)); }

/* naive LSTM: x (T, in) -> y (T, 2H) */
static void naive_lstm(const dmx__lstm *m, const double *x, int T, double *y) {
    int H = m->hidden, nin = m->input;
    double *in = malloc(sizeof(double) * T * 2 * H), *out = malloc(sizeof(double) * T * 2 * H);
    memcpy(in, x, sizeof(double) * T * nin);
    for (int k = 0; k < m->layers; k++) {
        for (int d = 0; d < 2; d++) {
            double h[64] = {0}, c[64] = {0}, g[256];
            for (int s = 0; s < T; s++) {
                int t = d ? T - 1 - s : s;
                for (int r = 0; r < 4 * H; r++) {
                    double a = m->b_ih[k][d][r] + m->b_hh[k][d][r];
                    for (int i = 0; i < nin; i++) a += m->w_ih[k][d][r * nin + i] * in[t * nin + i];
                    for (int i = 0; i < H; i++) a += m->w_hh[k][d][r * H + i] * h[i];
                    g[r] = a;
                }
                for (int j = 0; j < H; j++) {
                    c[j] = sg(g[H + j]) * c[j] + sg(g[j]) * tanh(g[2 * H + j]);
                    h[j] = sg(g[3 * H + j]) * tanh(c[j]);
                    out[t * 2 * H + d * H + j] = h[j];
                }
            }
        }
        memcpy(in, out, sizeof(double) * T * 2 * H);
        nin = 2 * H;
    }
    memcpy(y, out, sizeof(double) * T * 2 * H);
    free(in);
    free(out);
}

/* naive BLSTM window: x (T, C) -> linear(lstm(x)) (T, C) */
static void naive_window(const dmx__blstm *m, const double *x, int T, double *y) {
    int C = m->dim;
    double *h = malloc(sizeof(double) * T * 2 * C);
    naive_lstm(&m->lstm, x, T, h);
    for (int t = 0; t < T; t++)
        for (int o = 0; o < C; o++) {
            double a = m->lin_b[o];
            for (int i = 0; i < 2 * C; i++) a += m->lin_w[o * 2 * C + i] * h[t * 2 * C + i];
            y[t * C + o] = a;
        }
    free(h);
}

static void test_blstm(int T, int max_steps) {
    const int C = 6;
    dmx__blstm m;
    memset(&m, 0, sizeof m);
    m.dim = C;
    m.max_steps = max_steps;
    m.skip = 1;
    m.lstm.layers = 2;
    m.lstm.input = m.lstm.hidden = C;
    for (int k = 0; k < 2; k++)
        for (int d = 0; d < 2; d++) {
            m.lstm.w_ih[k][d] = rnd((size_t)4 * C * (k ? 2 * C : C), 0.5f);
            m.lstm.w_hh[k][d] = rnd((size_t)4 * C * C, 0.5f);
            m.lstm.b_ih[k][d] = rnd((size_t)4 * C, 0.3f);
            m.lstm.b_hh[k][d] = rnd((size_t)4 * C, 0.3f);
        }
    m.lin_w = rnd((size_t)2 * C * C, 0.5f);
    m.lin_b = rnd(C, 0.2f);
    float *x = rnd((size_t)C * T, 1.0f);
    /* reference: upstream's framing in double */
    double *ref = calloc((size_t)C * T, sizeof(double));
    if (!max_steps || T <= max_steps) {
        double *xt = malloc(sizeof(double) * T * C), *yt = malloc(sizeof(double) * T * C);
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T; t++) xt[t * C + c] = x[c * T + t];
        naive_window(&m, xt, T, yt);
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T; t++) ref[c * T + t] = x[c * T + t] + yt[t * C + c];
        free(xt);
        free(yt);
    } else {
        int width = max_steps, stride = width / 2, limit = stride / 2;
        int nf = (T + stride - 1) / stride;
        double *xt = malloc(sizeof(double) * width * C), *yt = malloc(sizeof(double) * width * C);
        double *cat = malloc(sizeof(double) * (size_t)nf * width * C);
        int pos = 0;
        for (int k = 0; k < nf; k++) {
            for (int t = 0; t < width; t++)
                for (int c = 0; c < C; c++) xt[t * C + c] = k * stride + t < T ? x[c * T + k * stride + t] : 0;
            naive_window(&m, xt, width, yt);
            int a = k == 0 ? 0 : limit, e = k == nf - 1 ? width : width - limit;
            for (int t = a; t < e; t++, pos++) memcpy(cat + (size_t)pos * C, yt + t * C, sizeof(double) * C);
        }
        REQUIRE(pos >= T);
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T; t++) ref[c * T + t] = x[c * T + t] + cat[(size_t)t * C + c];
        free(xt);
        free(yt);
        free(cat);
    }
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__blstm_forward(&m, &ar, x, T) == DMX_OK);
    double r = max_rel(x, ref, (size_t)C * T);
    printf("BLSTM T=%d max_steps=%d: ratio %.2e\n", T, max_steps, r);
    CHECK_MSG(r < 1e-5, "BLSTM T=%d max_steps=%d ratio %.2e", T, max_steps, r);
    dmx__arena_free(&ar);
    for (int k = 0; k < 2; k++)
        for (int d = 0; d < 2; d++) {
            free((void *)m.lstm.w_ih[k][d]);
            free((void *)m.lstm.w_hh[k][d]);
            free((void *)m.lstm.b_ih[k][d]);
            free((void *)m.lstm.b_hh[k][d]);
        }
    free((void *)m.lin_w);
    free((void *)m.lin_b);
    free(x);
    free(ref);
}

static void test_localstate(int T) {
    const int C = 8, NH = 2, ND = 4, D = C / NH;
    dmx__localstate m = {C, NH, ND, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    m.content_w = rnd((size_t)C * C, 0.5f), m.content_b = rnd(C, 0.1f);
    m.query_w = rnd((size_t)C * C, 0.5f), m.query_b = rnd(C, 0.1f);
    m.key_w = rnd((size_t)C * C, 0.5f), m.key_b = rnd(C, 0.1f);
    m.decay_w = rnd((size_t)NH * ND * C, 0.5f), m.decay_b = rnd(NH * ND, 1.0f);
    m.proj_w = rnd((size_t)C * C, 0.5f), m.proj_b = rnd(C, 0.1f);
    float *x = rnd((size_t)C * T, 1.0f);
    double *q = malloc(sizeof(double) * C * T), *k = malloc(sizeof(double) * C * T),
           *v = malloc(sizeof(double) * C * T), *dq = malloc(sizeof(double) * NH * ND * T),
           *res = malloc(sizeof(double) * C * T), *ref = malloc(sizeof(double) * C * T),
           *dots = malloc(sizeof(double) * T * T);
    for (int o = 0; o < C; o++)
        for (int t = 0; t < T; t++) {
            double a = m.query_b[o], b = m.key_b[o], c = m.content_b[o];
            for (int i = 0; i < C; i++) {
                a += m.query_w[o * C + i] * x[i * T + t];
                b += m.key_w[o * C + i] * x[i * T + t];
                c += m.content_w[o * C + i] * x[i * T + t];
            }
            q[o * T + t] = a, k[o * T + t] = b, v[o * T + t] = c;
        }
    for (int o = 0; o < NH * ND; o++)
        for (int t = 0; t < T; t++) {
            double a = m.decay_b[o];
            for (int i = 0; i < C; i++) a += m.decay_w[o * C + i] * x[i * T + t];
            dq[o * T + t] = sg(a) / 2;
        }
    for (int h = 0; h < NH; h++) {
        for (int t = 0; t < T; t++) /* keys */
            for (int s = 0; s < T; s++) { /* queries */
                double a = 0;
                for (int c = 0; c < D; c++) a += k[(h * D + c) * T + t] * q[(h * D + c) * T + s];
                a /= sqrt(D);
                for (int f = 0; f < ND; f++) a += -(f + 1) * fabs((double)(t - s)) / sqrt(ND) * dq[(h * ND + f) * T + s];
                dots[t * T + s] = t == s ? -100 : a;
            }
        for (int s = 0; s < T; s++) {
            double mx = -1e300, sum = 0;
            for (int t = 0; t < T; t++) mx = fmax(mx, dots[t * T + s]);
            for (int t = 0; t < T; t++) sum += exp(dots[t * T + s] - mx);
            for (int c = 0; c < D; c++) {
                double a = 0;
                for (int t = 0; t < T; t++) a += exp(dots[t * T + s] - mx) / sum * v[(h * D + c) * T + t];
                res[(h * D + c) * T + s] = a;
            }
        }
    }
    for (int o = 0; o < C; o++)
        for (int t = 0; t < T; t++) {
            double a = m.proj_b[o];
            for (int i = 0; i < C; i++) a += m.proj_w[o * C + i] * res[i * T + t];
            ref[o * T + t] = x[o * T + t] + a;
        }
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__localstate_forward(&m, &ar, x, T) == DMX_OK);
    double r = max_rel(x, ref, (size_t)C * T);
    printf("LocalState T=%d: ratio %.2e\n", T, r);
    CHECK_MSG(r < 1e-5, "LocalState T=%d ratio %.2e", T, r);
    dmx__arena_free(&ar);
    free((void *)m.content_w), free((void *)m.content_b), free((void *)m.query_w), free((void *)m.query_b);
    free((void *)m.key_w), free((void *)m.key_b), free((void *)m.decay_w), free((void *)m.decay_b);
    free((void *)m.proj_w), free((void *)m.proj_b);
    free(x), free(q), free(k), free(v), free(dq), free(res), free(ref), free(dots);
}

/* julius' formula in float64 */
static void test_resample(int old_sr, int new_sr, int L) {
    float *x = rnd((size_t)2 * L, 1.0f);
    int64_t on = dmx__resample_frac_len(L, old_sr, new_sr);
    CHECK(on == (int64_t)new_sr * L / old_sr);
    float *y = malloc(sizeof(float) * 2 * on);
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__resample_frac(&ar, x, 2, L, old_sr, new_sr, 24, 0.945, y) == DMX_OK);
    double sr = (old_sr < new_sr ? old_sr : new_sr) * 0.945;
    int width = (int)ceil(24.0 * old_sr / sr), taps = 2 * width + old_sr;
    double *ref = malloc(sizeof(double) * 2 * on), *ker = malloc(sizeof(double) * taps);
    for (int o = 0; o < on; o++) {
        int i = o % new_sr, n = o / new_sr;
        double sum = 0;
        for (int j = 0; j < taps; j++) {
            double t = (-(double)i / new_sr + (double)(j - width) / old_sr) * sr;
            t = fmin(fmax(t, -24.0), 24.0) * M_PI;
            double w = cos(t / 24 / 2);
            ker[j] = (t == 0 ? 1.0 : sin(t) / t) * w * w;
            sum += ker[j];
        }
        for (int r = 0; r < 2; r++) {
            double a = 0;
            for (int j = 0; j < taps; j++) {
                long p = (long)n * old_sr + j - width;
                p = p < 0 ? 0 : p >= L ? L - 1 : p;
                a += ker[j] / sum * x[(size_t)r * L + p];
            }
            ref[(size_t)r * on + o] = a;
        }
    }
    double rr = max_rel(y, ref, (size_t)2 * on);
    printf("resample_frac %d -> %d, L=%d: ratio %.2e\n", old_sr, new_sr, L, rr);
    CHECK_MSG(rr < 1e-5, "resample %d -> %d ratio %.2e", old_sr, new_sr, rr);
    /* a constant stays constant (each phase kernel sums to 1, replicate padding) */
    for (int i = 0; i < L; i++) x[i] = x[L + i] = 0.25f;
    CHECK(dmx__resample_frac(&ar, x, 2, L, old_sr, new_sr, 24, 0.945, y) == DMX_OK);
    double dev = 0;
    for (int64_t i = 0; i < 2 * on; i++) dev = fmax(dev, fabs(y[i] - 0.25));
    CHECK_MSG(dev < 1e-6, "constant drifts by %.2e", dev);
    CHECK(dmx__resample_frac(&ar, x, 2, L, 0, 2, 24, 0.945, y) == DMX_ERR_INVALID_ARG);
    CHECK(dmx__resample_frac(&ar, x, 2, L, 97, 89, 24, 0.945, y) == DMX_ERR_INVALID_ARG);
    dmx__arena_free(&ar);
    free(x), free(y), free(ref), free(ker);
}

/* A whole DConv (no BLSTM / LocalState: those are checked above and in the
 * golden layer test) against a naive double loop; T = 70000 with 8
 * channels takes the column-blocked two-pass path for the 2C half. */
static void test_dconv(int T, int norm, int gelu, int depth) {
    const int C = 8, Hd = 2, K = 3;
    dmx__dconvx d;
    memset(&d, 0, sizeof d);
    d.channels = C, d.hidden = Hd, d.depth = depth < 0 ? -depth : depth, d.kernel = K, d.norm = norm, d.gelu = gelu;
    for (int i = 0; i < d.depth; i++) {
        dmx__dconvx_layer *L = &d.layers[i];
        L->dilation = depth > 0 ? 1 << i : 1;
        L->conv1_w = rnd((size_t)Hd * C * K, 0.5f), L->conv1_b = rnd(Hd, 0.1f);
        L->norm1_w = rnd(Hd, 1.0f), L->norm1_b = rnd(Hd, 0.2f);
        L->conv2_w = rnd((size_t)2 * C * Hd, 0.5f), L->conv2_b = rnd(2 * C, 0.1f);
        L->norm2_w = rnd(2 * C, 1.0f), L->norm2_b = rnd(2 * C, 0.2f);
        L->scale = rnd(C, 0.3f);
    }
    float *x = rnd((size_t)2 * C * T, 1.0f); /* B = 2 */
    double *ref = malloc(sizeof(double) * 2 * C * T), *h = malloc(sizeof(double) * Hd * T),
           *h2 = malloc(sizeof(double) * 2 * C * T);
    for (size_t i = 0; i < (size_t)2 * C * T; i++) ref[i] = x[i];
    for (int b = 0; b < 2; b++) {
        double *xb = ref + (size_t)b * C * T;
        for (int i = 0; i < d.depth; i++) {
            const dmx__dconvx_layer *L = &d.layers[i];
            int dil = L->dilation, pad = dil * (K / 2);
            for (int o = 0; o < Hd; o++)
                for (int t = 0; t < T; t++) {
                    double a = L->conv1_b[o];
                    for (int c = 0; c < C; c++)
                        for (int k = 0; k < K; k++) {
                            int p = t - pad + k * dil;
                            if (p >= 0 && p < T) a += L->conv1_w[(o * C + c) * K + k] * xb[(size_t)c * T + p];
                        }
                    h[(size_t)o * T + t] = a;
                }
            for (int pass = 0; pass < 2; pass++) {
                double *v = pass ? h2 : h;
                int ch = pass ? 2 * C : Hd;
                if (pass)
                    for (int o = 0; o < 2 * C; o++)
                        for (int t = 0; t < T; t++) {
                            double a = L->conv2_b[o];
                            for (int c = 0; c < Hd; c++) a += L->conv2_w[o * Hd + c] * h[(size_t)c * T + t];
                            h2[(size_t)o * T + t] = a;
                        }
                if (norm) {
                    double mu = 0, var = 0, n = (double)ch * T;
                    for (size_t q = 0; q < (size_t)ch * T; q++) mu += v[q];
                    mu /= n;
                    for (size_t q = 0; q < (size_t)ch * T; q++) var += (v[q] - mu) * (v[q] - mu);
                    var /= n;
                    const float *gw = pass ? L->norm2_w : L->norm1_w, *gb = pass ? L->norm2_b : L->norm1_b;
                    for (int c = 0; c < ch; c++)
                        for (int t = 0; t < T; t++)
                            v[(size_t)c * T + t] = (v[(size_t)c * T + t] - mu) / sqrt(var + 1e-5) * gw[c] + gb[c];
                }
                if (!pass)
                    for (size_t q = 0; q < (size_t)Hd * T; q++)
                        h[q] = gelu ? 0.5 * h[q] * (1 + erf(h[q] / sqrt(2.0))) : fmax(h[q], 0);
            }
            for (int c = 0; c < C; c++)
                for (int t = 0; t < T; t++)
                    xb[(size_t)c * T + t] += L->scale[c] * h2[(size_t)c * T + t] * sg(h2[(size_t)(C + c) * T + t]);
        }
    }
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__dconvx_forward(&d, &ar, x, 2, C, T) == DMX_OK);
    double r = max_rel(x, ref, (size_t)2 * C * T);
    printf("DConv T=%d norm=%d gelu=%d depth=%d: ratio %.2e\n", T, norm, gelu, depth, r);
    CHECK_MSG(r < 1e-5, "DConv T=%d ratio %.2e", T, r);
    dmx__arena_free(&ar);
    for (int i = 0; i < d.depth; i++) {
        dmx__dconvx_layer *L = &d.layers[i];
        free((void *)L->conv1_w), free((void *)L->conv1_b), free((void *)L->norm1_w), free((void *)L->norm1_b);
        free((void *)L->conv2_w), free((void *)L->conv2_b), free((void *)L->norm2_w), free((void *)L->norm2_b);
        free((void *)L->scale);
    }
    free(x), free(ref), free(h), free(h2);
}

/* dmx__dconv_glu_half's units shared by a team with helpers give the
 * bits the calling thread alone gives: blocks of whole rows (rows of T
 * within the scratch) and the column-blocked two passes (each unit's
 * sums added per row in unit order). */
typedef struct glu_case {
    int rows, T, C, hidden, norm;
    const float *h, *w, *b, *nw, *nb, *scale;
    float *y;
} glu_case;

static void glu_run(glu_case *g) {
    dmx__arena ar;
    dmx__arena_init(&ar);
    CHECK(dmx__dconv_glu_half(&ar, g->h, g->hidden, g->y, g->C, g->rows, g->T, g->w, g->b,
                              g->norm ? g->nw : NULL, g->norm ? g->nb : NULL, g->scale) == DMX_OK);
    CHECK(ar.in_use == 0);
    dmx__arena_free(&ar);
}

static void *glu_main(void *arg) {
    glu_run(arg);
    return NULL;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_glu_team(const char *name, int rows, int T, int C, int norm) {
    const int Hd = 3;
    const size_t n = (size_t)C * rows * T;
    float *h = rnd((size_t)Hd * rows * T, 1.0f), *w = rnd((size_t)2 * C * Hd, 0.5f);
    float *b = rnd((size_t)2 * C, 0.1f), *nw = rnd((size_t)2 * C, 1.0f), *nb = rnd((size_t)2 * C, 0.2f);
    float *sc = rnd((size_t)C, 0.3f), *y0 = rnd(n, 1.0f), *y1 = malloc(sizeof(float) * n);
    float *yin = malloc(sizeof(float) * n);
    REQUIRE(y1 && yin);
    memcpy(yin, y0, sizeof(float) * n);
    glu_case alone = {rows, T, C, Hd, norm, h, w, b, nw, nb, sc, y0}, team = alone;
    team.y = y1;
    glu_run(&alone);
    /* On a loaded machine the caller may finish every part before a helper
     * wakes: run again (each run checked) until a helper took a part. */
    const unsigned long long h0 = dmx__team_helped();
    const double t0 = now_s();
    int runs = 0;
    do {
        memcpy(y1, yin, sizeof(float) * n);
        dmx__team_run(1, 3, glu_main, &team, sizeof team);
        CHECK_MSG(!memcmp(y0, y1, sizeof(float) * n), "glu_half %s: a team's result differs",
                  name);
    } while (++runs < 50 && now_s() - t0 < 10 && dmx__team_helped() == h0);
    CHECK_MSG(dmx__team_helped() > h0, "glu_half %s: no part ran on a helper in %d runs", name,
              runs);
    printf("glu_half %s (rows %d, T %d, C %d, norm %d): a team's bits in %d run(s)\n", name, rows,
           T, C, norm, runs);
    free(h), free(w), free(b), free(nw), free(nb), free(sc), free(y0), free(y1), free(yin);
}

int main(void) {
    /* sizes from this CPU's L2, as glu_half's scratch (half of it) */
    const long budget = dmx__gemm_l2_bytes() / 2 / (long)sizeof(float);
    const int rb = (int)(budget / (2 * 48 * 336)); /* rows of 336 per block */
    const int tc = (int)(budget / (2 * 8)) + 4000; /* a row past one block */
    test_glu_team("row blocks", 5 * (rb > 0 ? rb : 1) + 1, 336, 48, 1); /* more than the parts */
    test_glu_team("column blocks", 1, 2 * tc, 8, 1); /* two passes */
    test_glu_team("long rows", 3, tc, 8, 1);
    test_glu_team("column blocks, no norm", 2, tc, 8, 0); /* one pass */
    test_dconv(300, 1, 1, 2);
    test_dconv(70000, 1, 1, 2);  /* blocked, two passes */
    test_dconv(70000, 0, 0, -2); /* blocked, one pass; no dilation, ReLU */
    test_blstm(37, 200);  /* shorter than max_steps: one pass */
    test_blstm(201, 200); /* just over: 3 windows, zero padded */
    test_blstm(517, 200); /* many windows */
    test_blstm(90, 40);   /* small windows, the last one partial */
    test_localstate(7);
    test_localstate(300); /* more queries than one block */
    test_resample(1, 2, 1000);
    test_resample(2, 1, 1001);
    test_resample(2, 3, 301);
    test_resample(1, 2, 5); /* shorter than the kernel: every tap clamps */
    return dmx_test_done("test_dconv");
}
