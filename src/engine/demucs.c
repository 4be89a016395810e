/*
 * demucs.c - upstream's time-domain Demucs (demucs.demucs.Demucs, the v2/v3
 * waveform model used in the mdx bags and repro_mdx_a) as a dmx__net_vt.
 *
 * Build: the hyper-parameters come from the checkpoint kwargs with
 * upstream's __init__ defaults; the parameters are walked in upstream's
 * named_parameters() order, once to collect them (which names a DiffQ state,
 * see ckpt.h) and once to bind them.
 *
 * Forward on one chunk mix (audio_channels, len):
 *   normalize (mono mean / unbiased std, (x - mean) / (1e-5 + std)) when set;
 *   zero pad to valid_length(len) (floor(delta/2) on the left); x2 up with
 *   julius; encoders: Conv1d(K, S) -> GroupNorm(norm_groups) from norm_starts
 *   -> GELU/ReLU -> DConv -> [rewrite 1x1 conv -> norm -> GLU/ReLU]; the
 *   optional BLSTM; decoders: x + centre_trim(skip) -> [rewrite conv
 *   (2 context + 1) -> norm -> GLU/ReLU] -> [DConv] -> ConvTranspose1d(K, S)
 *   -> norm -> GELU/ReLU (not after the outermost); /2 down with julius;
 *   x * std + mean; centre trim to len.
 * Activations are (C, T) on the caller's arena; skips are kept until used,
 * and after each decoder the arena is compacted down to its output.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bind.h"
#include "dconv.h"
#include "error.h"
#include "lstm.h"
#include "net.h"
#include "ops.h"
#include "resample.h"

#define MAX_DEPTH 10
#define NOMEM()   dmx__fail(DMX_ERR_NOMEM, "out of memory in the Demucs forward pass")

typedef struct dlayer {
    int chin, chout;              /* encoder: chin -> chout; decoder: chout (=encoder's) -> out */
    int norm_groups;              /* 0: Identity */
    const float *conv_w, *conv_b; /* enc (ch, chin, K); dec conv_tr (ch, out, K) */
    const float *norm_w, *norm_b;
    int has_dconv;
    dmx__dconvx dconv;
    int has_rewrite;
    const float *rw_w, *rw_b; /* (ch_scale * ch, ch, 1 or 2 context + 1) */
    const float *rwn_w, *rwn_b;
    int act; /* decoder: GELU/ReLU after the conv_tr (index > 0) */
} dlayer;

typedef struct demucs {
    int n_sources;
    const char *sources[DMX__MAX_SOURCES];
    int audio_channels, samplerate, channels, depth;
    int kernel, stride, context, gelu, glu, normalize, resample, lstm_layers;
    int64_t seg_num, seg_den;
    double segment;
    dlayer enc[MAX_DEPTH], dec[MAX_DEPTH]; /* dec in execution order (deepest first) */
    int has_lstm;
    dmx__blstm lstm;
    int64_t n_params;
    dmx__ckpt *ck;
} demucs;

/* ------------------------------------------------------------- building */

static int64_t kw_int(demucs *m, dmx_status *st, const char *key, int64_t def) {
    int64_t v;
    if (*st != DMX_OK) return def;
    dmx_status s = dmx__ckpt_kw_int(m->ck, key, &v);
    if (s == DMX_OK) return v;
    if (s == DMX_ERR_NOT_FOUND) return def;
    *st = s;
    return def;
}

static double kw_num(demucs *m, dmx_status *st, const char *key, double def) {
    double v;
    if (*st != DMX_OK) return def;
    dmx_status s = dmx__ckpt_kw_num(m->ck, key, &v);
    if (s == DMX_OK) return v;
    if (s == DMX_ERR_NOT_FOUND) return def;
    *st = s;
    return def;
}

static int kw_bool(demucs *m, dmx_status *st, const char *key, int def) {
    int v;
    if (*st != DMX_OK) return def;
    dmx_status s = dmx__ckpt_kw_bool(m->ck, key, &v);
    if (s == DMX_OK) return v;
    if (s == DMX_ERR_NOT_FOUND) return def;
    *st = s;
    return def;
}

typedef struct hparams {
    double growth;
    int rewrite, norm_starts, norm_groups, dconv_mode, dconv_depth, dconv_attn, dconv_lstm;
    double dconv_comp, dconv_init;
} hparams;

/* One walk over the architecture in named_parameters() order. */
static void walk(demucs *m, const hparams *hp, dmx__binder *b) {
    const int K = m->kernel, chs = m->glu ? 2 : 1;
    int in_ch = m->audio_channels, ch = m->channels;
    char name[160];
    /* encoders */
    for (int i = 0; i < m->depth; i++) {
        dlayer *L = &m->enc[i];
        memset(L, 0, sizeof *L);
        L->chin = in_ch;
        L->chout = ch;
        L->norm_groups = i >= hp->norm_starts ? hp->norm_groups : 0;
        snprintf(name, sizeof name, "encoder.%d.0.weight", i);
        L->conv_w = dmx__bind3(b, ch, in_ch, K, name);
        snprintf(name, sizeof name, "encoder.%d.0.bias", i);
        L->conv_b = dmx__bind1(b, ch, name);
        if (L->norm_groups) {
            snprintf(name, sizeof name, "encoder.%d.1.weight", i);
            L->norm_w = dmx__bind1(b, ch, name);
            snprintf(name, sizeof name, "encoder.%d.1.bias", i);
            L->norm_b = dmx__bind1(b, ch, name);
        }
        int idx = 3;
        dmx__dconvx_opts o = dmx__dconvx_opts_default();
        o.depth = hp->dconv_depth;
        o.compress = hp->dconv_comp;
        o.init = hp->dconv_init;
        o.attn = i >= hp->dconv_attn;
        o.lstm = i >= hp->dconv_lstm;
        if (hp->dconv_mode & 1) {
            L->has_dconv = 1;
            snprintf(name, sizeof name, "encoder.%d.%d", i, idx++);
            dmx__dconvx_bind_b(b, name, ch, &o, &L->dconv);
        }
        if (hp->rewrite) {
            L->has_rewrite = 1;
            snprintf(name, sizeof name, "encoder.%d.%d.weight", i, idx);
            L->rw_w = dmx__bind3(b, chs * ch, ch, 1, name);
            snprintf(name, sizeof name, "encoder.%d.%d.bias", i, idx);
            L->rw_b = dmx__bind1(b, chs * ch, name);
            if (L->norm_groups) {
                snprintf(name, sizeof name, "encoder.%d.%d.weight", i, idx + 1);
                L->rwn_w = dmx__bind1(b, chs * ch, name);
                snprintf(name, sizeof name, "encoder.%d.%d.bias", i, idx + 1);
                L->rwn_b = dmx__bind1(b, chs * ch, name);
            }
        }
        in_ch = ch;
        ch = (int)(hp->growth * ch);
    }
    /* decoders, in list order: decoder.0 is the deepest */
    for (int j = 0; j < m->depth; j++) {
        int i = m->depth - 1 - j; /* the encoder index it mirrors */
        const dlayer *E = &m->enc[i];
        dlayer *L = &m->dec[j];
        memset(L, 0, sizeof *L);
        int c = E->chout, out = i > 0 ? E->chin : m->n_sources * m->audio_channels;
        L->chin = c;
        L->chout = out;
        L->norm_groups = E->norm_groups;
        L->act = i > 0;
        int idx = 0;
        if (hp->rewrite) {
            L->has_rewrite = 1;
            snprintf(name, sizeof name, "decoder.%d.0.weight", j);
            L->rw_w = dmx__bind3(b, chs * c, c, 2 * m->context + 1, name);
            snprintf(name, sizeof name, "decoder.%d.0.bias", j);
            L->rw_b = dmx__bind1(b, chs * c, name);
            if (L->norm_groups) {
                snprintf(name, sizeof name, "decoder.%d.1.weight", j);
                L->rwn_w = dmx__bind1(b, chs * c, name);
                snprintf(name, sizeof name, "decoder.%d.1.bias", j);
                L->rwn_b = dmx__bind1(b, chs * c, name);
            }
            idx = 3;
        }
        if (hp->dconv_mode & 2) {
            dmx__dconvx_opts o = dmx__dconvx_opts_default();
            o.depth = hp->dconv_depth;
            o.compress = hp->dconv_comp;
            o.init = hp->dconv_init;
            o.attn = i >= hp->dconv_attn;
            o.lstm = i >= hp->dconv_lstm;
            L->has_dconv = 1;
            snprintf(name, sizeof name, "decoder.%d.%d", j, idx++);
            dmx__dconvx_bind_b(b, name, c, &o, &L->dconv);
        }
        snprintf(name, sizeof name, "decoder.%d.%d.weight", j, idx);
        L->conv_w = dmx__bind3(b, c, out, m->kernel, name);
        snprintf(name, sizeof name, "decoder.%d.%d.bias", j, idx);
        L->conv_b = dmx__bind1(b, out, name);
        if (i > 0 && L->norm_groups) {
            snprintf(name, sizeof name, "decoder.%d.%d.weight", j, idx + 1);
            L->norm_w = dmx__bind1(b, out, name);
            snprintf(name, sizeof name, "decoder.%d.%d.bias", j, idx + 1);
            L->norm_b = dmx__bind1(b, out, name);
        }
    }
    if (m->lstm_layers) {
        m->has_lstm = 1;
        dmx__blstm_bind(b, &m->lstm, "lstm", in_ch, m->lstm_layers, 0, 0);
    }
}

static void demucs_free(void *p) {
    demucs *m = p;
    if (!m) return;
    dmx__ckpt_free(m->ck);
    free(m);
}

static dmx_status demucs_build(dmx__ckpt *ck, void **out) {
    *out = NULL;
    demucs *m = calloc(1, sizeof *m);
    if (!m) {
        dmx__ckpt_free(ck);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory building Demucs");
    }
    m->ck = ck;
    dmx_status st = DMX_OK;
    size_t ns = 0;
    st = dmx__ckpt_kw_strlist(ck, "sources", m->sources, DMX__MAX_SOURCES, &ns);
    if (st == DMX_ERR_NOT_FOUND)
        st = dmx__fail(DMX_ERR_MODEL, "Demucs checkpoint without 'sources'");
    if (st == DMX_OK && (ns < 1 || ns > DMX__MAX_SOURCES))
        st = dmx__fail(DMX_ERR_MODEL, "Demucs checkpoint with %zu sources (1..%d supported)", ns,
                       DMX__MAX_SOURCES);
    m->n_sources = (int)ns;
    hparams hp;
    m->audio_channels = (int)kw_int(m, &st, "audio_channels", 2);
    m->channels = (int)kw_int(m, &st, "channels", 64);
    hp.growth = kw_num(m, &st, "growth", 2.0);
    m->depth = (int)kw_int(m, &st, "depth", 6);
    hp.rewrite = kw_bool(m, &st, "rewrite", 1);
    m->lstm_layers = (int)kw_int(m, &st, "lstm_layers", 0);
    m->kernel = (int)kw_int(m, &st, "kernel_size", 8);
    m->stride = (int)kw_int(m, &st, "stride", 4);
    m->context = (int)kw_int(m, &st, "context", 1);
    m->gelu = kw_bool(m, &st, "gelu", 1);
    m->glu = kw_bool(m, &st, "glu", 1);
    hp.norm_starts = (int)kw_int(m, &st, "norm_starts", 4);
    hp.norm_groups = (int)kw_int(m, &st, "norm_groups", 4);
    hp.dconv_mode = (int)kw_int(m, &st, "dconv_mode", 1);
    hp.dconv_depth = (int)kw_int(m, &st, "dconv_depth", 2);
    hp.dconv_comp = kw_num(m, &st, "dconv_comp", 4);
    hp.dconv_attn = (int)kw_int(m, &st, "dconv_attn", 4);
    hp.dconv_lstm = (int)kw_int(m, &st, "dconv_lstm", 4);
    hp.dconv_init = kw_num(m, &st, "dconv_init", 1e-4);
    m->normalize = kw_bool(m, &st, "normalize", 1);
    m->resample = kw_bool(m, &st, "resample", 1);
    m->samplerate = (int)kw_int(m, &st, "samplerate", 44100);
    /* segment: int, float or Fraction (upstream's default 4 * 10) */
    m->segment = kw_num(m, &st, "segment", 40);
    m->seg_num = 0;
    m->seg_den = 0;
    if (st == DMX_OK) {
        /* exact for an int or a Fraction, a float stays a float (den 0) */
        if (!dmx__ckpt_kw_has(ck, "segment")) {
            m->seg_num = 40;
            m->seg_den = 1;
        } else if (dmx__ckpt_kw_fraction(ck, "segment", &m->seg_num, &m->seg_den) != DMX_OK) {
            m->seg_num = m->seg_den = 0;
            dmx__clear_error();
        }
        if (dmx__segment_length(m->seg_num, m->seg_den, m->segment, m->samplerate) < 1)
            st = dmx__fail(DMX_ERR_MODEL, "Demucs kwarg 'segment' (%g s) gives no usable length",
                           m->segment);
    }
    if (st == DMX_OK &&
        (m->audio_channels < 1 || m->audio_channels > 8 || m->channels < 1 || m->depth < 1 ||
         m->depth > MAX_DEPTH || m->kernel < 1 || m->kernel > 1024 || m->stride < 1 ||
         m->stride > 1024 || m->context < 0 || m->context > 1024 ||
         !(hp.growth > 0 && hp.growth <= 64) || m->channels > 65536 || hp.norm_groups < 1 ||
         hp.dconv_mode < 0 || hp.dconv_mode > 3 || hp.dconv_depth > DMX__DCONV_MAX_DEPTH ||
         hp.dconv_depth < -DMX__DCONV_MAX_DEPTH || m->lstm_layers < 0 ||
         m->lstm_layers > DMX__LSTM_MAX_LAYERS || m->samplerate < 1000 || m->samplerate > 384000 ||
         !(m->segment > 0) || m->segment > 3600))
        st =
            dmx__fail(DMX_ERR_MODEL,
                      "Demucs kwargs out of the supported range (depth %d, channels %d, kernel %d, "
                      "stride %d, lstm_layers %d)",
                      m->depth, m->channels, m->kernel, m->stride, m->lstm_layers);
    if (st == DMX_OK) {
        /* GroupNorm needs its groups to divide the channels */
        double chd = m->channels;
        for (int i = 0; i < m->depth && st == DMX_OK; i++, chd = (double)(int)(hp.growth * chd)) {
            int ch = chd <= 65536 ? (int)chd : -1;
            if (ch < 1 || (i >= hp.norm_starts && ch % hp.norm_groups))
                st = dmx__fail(DMX_ERR_MODEL,
                               "Demucs layer %d: %.0f channels (1..65536; norm_groups %d)", i, chd,
                               hp.norm_groups);
        }
    }
    if (st == DMX_OK && dmx__ckpt_is_quantized(ck)) {
        dmx__param_list pl = {0};
        dmx__binder b;
        st = dmx__binder_init(&b, ck, &pl);
        if (st == DMX_OK) {
            walk(m, &hp, &b);
            st = b.st;
        }
        dmx__binder_done(&b);
        if (st == DMX_OK) st = dmx__ckpt_dequantize(ck, &pl);
        dmx__param_list_free(&pl);
    }
    if (st == DMX_OK) {
        dmx__binder b;
        st = dmx__binder_init(&b, ck, NULL);
        if (st == DMX_OK) {
            walk(m, &hp, &b);
            st = dmx__bind_check_unused(&b, "Demucs");
        }
        m->n_params = b.n_params;
        dmx__binder_done(&b);
    }
    if (st != DMX_OK) {
        demucs_free(m);
        return st;
    }
    *out = m;
    return DMX_OK;
}

/* upstream's math.ceil(a / b) for b > 0 */
static int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

static int64_t demucs_valid_length(const void *p, int64_t length) {
    const demucs *m = p;
    if (m->resample) length *= 2;
    for (int i = 0; i < m->depth; i++) {
        length = ceil_div(length - m->kernel, m->stride) + 1;
        if (length < 1) length = 1;
    }
    for (int i = 0; i < m->depth; i++) length = (length - 1) * m->stride + m->kernel;
    if (m->resample) length = (length + 1) / 2;
    return length;
}

static void demucs_describe(const void *p, dmx__net_desc *d) {
    const demucs *m = p;
    memset(d, 0, sizeof *d);
    d->klass = "Demucs";
    d->n_sources = m->n_sources;
    for (int i = 0; i < m->n_sources; i++) d->sources[i] = m->sources[i];
    d->audio_channels = m->audio_channels;
    d->samplerate = m->samplerate;
    d->seg_num = m->seg_num;
    d->seg_den = m->seg_den;
    d->segment = m->segment;
    d->training_length = dmx__segment_length(m->seg_num, m->seg_den, m->segment, m->samplerate);
    d->use_train_segment = 0;
    d->fixed_segment = 0;
    d->rand_draws_per_forward = 0;
    d->n_params = m->n_params;
}

/* ------------------------------------------------------------- forward */

static void act_fn(int gelu, float *x, size_t n) {
    if (gelu)
        dmx__gelu(x, n);
    else
        dmx__relu(x, n);
}

/* y (C, T) = GLU or ReLU of norm(conv(x)) for the rewrite convolutions
 * (y must not overlap x). */
static int rewrite(const demucs *m, const dlayer *L, dmx__arena *ar, const float *x, int C, int T,
                   int k, int pad, float *y) {
    const int co = (m->glu ? 2 : 1) * C;
    dmx__conv_geom g = {C, co, 1, k, 1, 1, 0, pad, 1, 1};
    /* without a norm the GLU is fused in column blocks (no 2C x T buffer) */
    if (m->glu && !L->norm_groups && x != y)
        return dmx__conv2d_glu(ar, &g, x, 1, T, L->rw_w, L->rw_b, y);
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *r = dmx__arena_floats(ar, (size_t)co * T);
    if (!r || dmx__conv2d(ar, &g, x, 1, T, L->rw_w, L->rw_b, r)) return -1;
    if (L->norm_groups) dmx__group_norm(r, co, 1, T, L->norm_groups, L->rwn_w, L->rwn_b, 1e-5f);
    if (m->glu)
        dmx__glu(r, y, co, (size_t)T);
    else {
        memcpy(y, r, (size_t)co * T * sizeof *y);
        dmx__relu(y, (size_t)co * T);
    }
    dmx__arena_restore(ar, mk);
    return 0;
}

/* Releases the arena down to `mark` and moves the live tensor `y` (n
 * floats, allocated above the mark) to the bottom of the freed space, so
 * dead activations between them stop counting toward the high-water mark.
 * The new block lies at or before y in allocation order: memmove. */
static float *compact(dmx__arena *ar, dmx__arena_mark mark, float *y, size_t n) {
    dmx__arena_restore(ar, mark);
    float *z = dmx__arena_floats(ar, n);
    DMX_ASSERT(z); /* the space was just in use */
    if (z != y) memmove(z, y, n * sizeof *z);
    return z;
}

static dmx_status demucs_forward(const void *p, dmx__arena *ar, const float *mix, int len,
                                 float *out, dmx__tap_fn tap, void *tap_user) {
    const demucs *m = p;
    const int AC = m->audio_channels, S = m->n_sources;
    char nm[64];
    if (len < 1) return dmx__fail(DMX_ERR_INVALID_ARG, "Demucs forward on %d samples", len);
    dmx__arena_mark mk0 = dmx__arena_save(ar);
    /* normalisation statistics of the mono mix */
    float mean = 0.0f, stdv = 1.0f;
    if (m->normalize) {
        double s = 0;
        for (int t = 0; t < len; t++) {
            float mono = 0.0f;
            for (int c = 0; c < AC; c++) mono += mix[(size_t)c * len + t];
            s += mono / AC;
        }
        double mu = s / len, v = 0;
        for (int t = 0; t < len; t++) {
            float mono = 0.0f;
            for (int c = 0; c < AC; c++) mono += mix[(size_t)c * len + t];
            double d = (double)(mono / AC) - mu;
            v += d * d;
        }
        mean = (float)mu;
        stdv = len > 1 ? (float)sqrt(v / (len - 1)) : NAN;
    }
    const int64_t vl = demucs_valid_length(m, len);
    if (vl > (1 << 28))
        return dmx__fail(DMX_ERR_INVALID_ARG, "Demucs forward on %d samples is too long", len);
    const int V = (int)vl, delta = V - len, left = delta / 2;
    float *xp = dmx__arena_zeros(ar, (size_t)AC * V);
    if (!xp) return NOMEM();
    for (int c = 0; c < AC; c++)
        for (int t = 0; t < len; t++) {
            float v = mix[(size_t)c * len + t];
            xp[(size_t)c * V + left + t] = m->normalize ? (v - mean) / (1e-5f + stdv) : v;
        }
    float *x = xp;
    int T = V;
    if (m->resample) {
        float *xr = dmx__arena_floats(ar, (size_t)AC * 2 * V);
        if (!xr) return NOMEM();
        dmx_status s = dmx__resample_frac(ar, xp, AC, V, 1, 2, 24, 0.945, xr);
        if (s != DMX_OK) return s;
        x = xr;
        T = 2 * V;
    }
    if (tap) tap(tap_user, "encoder0_in", x, AC, 1, T);
    /* encoders; every output stays on the arena as the skip */
    float *skip[MAX_DEPTH];
    int skipT[MAX_DEPTH];
    dmx__arena_mark below[MAX_DEPTH]; /* the arena just below skip[i] */
    for (int i = 0; i < m->depth; i++) {
        const dlayer *L = &m->enc[i];
        int To = T >= m->kernel ? (T - m->kernel) / m->stride + 1 : 0;
        if (To < 1)
            return dmx__fail(DMX_ERR_INVALID_ARG, "Demucs encoder %d: input of %d steps", i, T);
        below[i] = dmx__arena_save(ar);
        float *y = dmx__arena_floats(ar, (size_t)L->chout * To);
        if (!y) return NOMEM();
        dmx__conv_geom g = {L->chin, L->chout, 1, m->kernel, 1, m->stride, 0, 0, 1, 1};
        if (dmx__conv2d(ar, &g, x, 1, T, L->conv_w, L->conv_b, y)) return NOMEM();
        if (L->norm_groups)
            dmx__group_norm(y, L->chout, 1, To, L->norm_groups, L->norm_w, L->norm_b, 1e-5f);
        act_fn(m->gelu, y, (size_t)L->chout * To);
        snprintf(nm, sizeof nm, "encoder%d", i);
        dmx_status s;
        if (L->has_dconv && (s = dmx__dconvx_forward_tap(&L->dconv, ar, y, 1, L->chout, To, tap,
                                                         tap_user, nm)) != DMX_OK)
            return s;
        if (L->has_rewrite) {
            float *z = dmx__arena_floats(ar, (size_t)L->chout * To);
            if (!z || rewrite(m, L, ar, y, L->chout, To, 1, 0, z)) return NOMEM();
            y = compact(ar, below[i], z, (size_t)L->chout * To);
        }
        if (tap) tap(tap_user, nm, y, L->chout, 1, To);
        skip[i] = y;
        skipT[i] = To;
        x = y;
        T = To;
    }
    if (m->has_lstm) {
        /* on a copy: the encoder output is still the deepest skip */
        float *xl = dmx__arena_floats(ar, (size_t)m->enc[m->depth - 1].chout * T);
        if (!xl) return NOMEM();
        memcpy(xl, x, (size_t)m->enc[m->depth - 1].chout * T * sizeof *xl);
        x = xl;
        dmx_status s = dmx__blstm_forward(&m->lstm, ar, x, T);
        if (s != DMX_OK) return s;
    }
    /* decoders */
    for (int j = 0; j < m->depth; j++) {
        int i = m->depth - 1 - j;
        const dlayer *L = &m->dec[j];
        const int C = L->chin;
        /* x += centre_trim(skip, x) */
        int d = skipT[i] - T;
        if (d < 0)
            return dmx__fail(DMX_ERR_INTERNAL, "Demucs decoder %d: skip shorter than its input", j);
        const float *sk = skip[i] + d / 2;
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T; t++) x[(size_t)c * T + t] += sk[(size_t)c * skipT[i] + t];
        if (L->has_rewrite) {
            float *z = dmx__arena_floats(ar, (size_t)C * T);
            if (!z || rewrite(m, L, ar, x, C, T, 2 * m->context + 1, m->context, z)) return NOMEM();
            x = z;
        }
        snprintf(nm, sizeof nm, "decoder%d", j);
        dmx_status s;
        if (L->has_dconv &&
            (s = dmx__dconvx_forward_tap(&L->dconv, ar, x, 1, C, T, tap, tap_user, nm)) != DMX_OK)
            return s;
        int To = (T - 1) * m->stride + m->kernel;
        float *y = dmx__arena_floats(ar, (size_t)L->chout * To);
        if (!y) return NOMEM();
        dmx__conv_geom g = {C, L->chout, 1, m->kernel, 1, m->stride, 0, 0, 1, 1};
        if (dmx__conv_tr2d(ar, &g, x, 1, T, L->conv_w, L->conv_b, y)) return NOMEM();
        if (L->act) {
            if (L->norm_groups)
                dmx__group_norm(y, L->chout, 1, To, L->norm_groups, L->norm_w, L->norm_b, 1e-5f);
            act_fn(m->gelu, y, (size_t)L->chout * To);
        }
        if (tap) tap(tap_user, nm, y, L->chout, 1, To);
        /* everything from skip[i] up is dead but y */
        x = compact(ar, below[i], y, (size_t)L->chout * To);
        T = To;
    }
    const int R = S * AC;
    if (m->resample) {
        int To = (int)dmx__resample_frac_len(T, 2, 1);
        float *y = dmx__arena_floats(ar, (size_t)R * To);
        if (!y) return NOMEM();
        dmx_status s = dmx__resample_frac(ar, x, R, T, 2, 1, 24, 0.945, y);
        if (s != DMX_OK) return s;
        x = y;
        T = To;
    }
    int d = T - len;
    if (d < 0) return dmx__fail(DMX_ERR_INTERNAL, "Demucs output of %d samples for %d in", T, len);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < len; t++)
            out[(size_t)r * len + t] = x[(size_t)r * T + d / 2 + t] * stdv + mean;
    dmx__arena_restore(ar, mk0);
    return DMX_OK;
}

const dmx__net_vt dmx__demucs_vt = {
    "demucs", demucs_build, demucs_free, demucs_describe, demucs_valid_length, demucs_forward,
};
