/*
 * hdemucs.c - Hybrid Demucs v3 (see hdemucs.h), after upstream's hdemucs.py.
 *
 * Layout (batch 1): frequency branch (C, F, T), F frequency bins, T STFT
 * frames; time branch and the merged deepest layers (C, T) = (C, 1, T).
 * Every layer is a 2D convolution over (C, H, W) with H = frequency and
 * W = time. Activations live on the caller's arena, each layer allocating
 * its output before its scratch so the scratch can be released.
 *
 * Build order: the kwargs give every layer's arguments exactly as
 * HDemucs.__init__ derives them (largs), then `walk` binds the tensors in
 * named_parameters() order: encoder, decoder, tencoder, tdecoder, freq_emb;
 * per HEncLayer conv, norm1, rewrite, norm2, dconv; per HDecLayer conv_tr,
 * norm2, rewrite, norm1, dconv. A DiffQ state is first dequantized with the
 * parameter list a collecting walk produces.
 */
#include "hdemucs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bind.h"
#include "dconv.h"
#include "error.h"
#include "hybrid.h"
#include "ops.h"
#include "stft.h"
#include "wiener.h"

#define MAX_DEPTH 8
#define MAX_BANDS 4 /* MultiWrap: up to 3 split ratios */

/* The arguments upstream passes to HEncLayer / HDecLayer. */
typedef struct largs {
    int enc, chin, chout, kernel, stride, freq, pad, norm, norm_groups, rewrite, context;
    int context_freq, dconv, empty, last, lstm, attn;
} largs;

/* HEncLayer (enc = 1) or HDecLayer. */
typedef struct hlayer {
    largs a;
    int pad;    /* kernel/4 when padded (0 for MultiWrap decoder bands) */
    dmx__conv conv; /* conv or conv_tr */
    dmx__norm norm1, norm2;
    int has_rewrite;
    dmx__conv rewrite;
    int has_dconv;
    dmx__dconvx dconv;
} hlayer;

/* One entry of upstream's encoder/decoder ModuleList: a layer, or a
 * MultiWrap of n_bands copies. */
typedef struct hstage {
    int n_bands;              /* 1: plain layer */
    double ratios[MAX_BANDS]; /* split ratios, the last one 1 */
    int last;                 /* decoder: the outermost (no GELU) */
    hlayer band[MAX_BANDS];
} hstage;

typedef struct hdemucs {
    dmx__net_desc desc;
    int S, A;
    int nfft, hop, depth, cac, hybrid_old, wiener_iters, wiener_residual;
    int dconv_depth, dconv_lstm, dconv_attn;
    double dconv_comp, dconv_init;
    hstage enc[MAX_DEPTH], dec[MAX_DEPTH]; /* dec in execution order (decoder.0 deepest) */
    hlayer tenc[MAX_DEPTH], tdec[MAX_DEPTH];
    int n_tenc;
    const float *freq_emb; /* (rows, dim) */
    int freq_emb_rows, freq_emb_dim;
    float freq_emb_scale, emb_scale;
    dmx__stft *stft;
    dmx__ckpt *ck;
} hdemucs;

/* ---------------------------------------------------------------- building */

static dmx__conv_geom geom(int cin, int cout, int kh, int kw, int sh, int sw, int ph, int pw) {
    dmx__conv_geom g = {cin, cout, kh, kw, sh, sw, ph, pw, 1, 1};
    return g;
}

static void bind_conv(dmx__binder *b, dmx__conv *c, const dmx__conv_geom *g, int transposed, int conv2d,
                      const char *prefix, const char *what) {
    c->g = *g;
    int64_t a = transposed ? g->cin : g->cout, bb = transposed ? g->cout : g->cin;
    int64_t s4[4] = {a, bb, g->kh, g->kw}, s3[3] = {a, bb, g->kw};
    if (conv2d)
        c->w = dmx__bind(b, 4, s4, "%s.%s.weight", prefix, what);
    else
        c->w = dmx__bind(b, 3, s3, "%s.%s.weight", prefix, what);
    int64_t s1[1] = {g->cout};
    c->b = dmx__bind(b, 1, s1, "%s.%s.bias", prefix, what);
}

static void bind_norm(dmx__binder *b, dmx__norm *n, int groups, int ch, const char *prefix,
                      const char *what) {
    n->groups = groups;
    if (!groups) return;
    int64_t s1[1] = {ch};
    n->w = dmx__bind(b, 1, s1, "%s.%s.weight", prefix, what);
    n->b = dmx__bind(b, 1, s1, "%s.%s.bias", prefix, what);
}

static void bind_dconv(const hdemucs *m, dmx__binder *b, hlayer *L, int channels,
                       const char *prefix) {
    dmx__dconvx_opts o = dmx__dconvx_opts_default();
    o.depth = m->dconv_depth;
    o.compress = m->dconv_comp;
    o.init = m->dconv_init;
    o.lstm = L->a.lstm;
    o.attn = L->a.attn;
    o.gelu = 1;
    char p[160];
    snprintf(p, sizeof p, "%s.dconv", prefix);
    L->has_dconv = 1;
    dmx__dconvx_bind_b(b, p, channels, &o, &L->dconv);
}

/* band: MultiWrap copy (encoder: conv without padding; decoder: no crop). */
static void bind_layer(const hdemucs *m, dmx__binder *b, hlayer *L, const largs *a, int band,
                       const char *prefix) {
    L->a = *a;
    int pad = a->pad ? a->kernel / 4 : 0;
    int groups = a->norm ? a->norm_groups : 0;
    L->pad = (band && !a->enc) ? 0 : pad;
    int k = 1 + 2 * a->context;
    if (a->enc) {
        int cp = band ? 0 : pad;
        dmx__conv_geom g = a->freq ? geom(a->chin, a->chout, a->kernel, 1, a->stride, 1, cp, 0)
                                   : geom(a->chin, a->chout, 1, a->kernel, 1, a->stride, 0, cp);
        bind_conv(b, &L->conv, &g, 0, a->freq, prefix, "conv");
        if (a->empty) return;
        bind_norm(b, &L->norm1, groups, a->chout, prefix, "norm1");
        if (a->rewrite) {
            dmx__conv_geom gr =
                a->freq ? geom(a->chout, 2 * a->chout, k, k, 1, 1, a->context, a->context)
                        : geom(a->chout, 2 * a->chout, 1, k, 1, 1, 0, a->context);
            L->has_rewrite = 1;
            bind_conv(b, &L->rewrite, &gr, 0, a->freq, prefix, "rewrite");
            bind_norm(b, &L->norm2, groups, 2 * a->chout, prefix, "norm2");
        }
        if (a->dconv) bind_dconv(m, b, L, a->chout, prefix);
        return;
    }
    dmx__conv_geom g = a->freq ? geom(a->chin, a->chout, a->kernel, 1, a->stride, 1, 0, 0)
                               : geom(a->chin, a->chout, 1, a->kernel, 1, a->stride, 0, 0);
    bind_conv(b, &L->conv, &g, 1, a->freq, prefix, "conv_tr");
    bind_norm(b, &L->norm2, groups, a->chout, prefix, "norm2");
    if (a->empty) return;
    if (a->rewrite) {
        dmx__conv_geom gr;
        if (!a->freq)
            gr = geom(a->chin, 2 * a->chin, 1, k, 1, 1, 0, a->context);
        else if (a->context_freq)
            gr = geom(a->chin, 2 * a->chin, k, k, 1, 1, a->context, a->context);
        else
            gr = geom(a->chin, 2 * a->chin, 1, k, 1, 1, 0, a->context);
        L->has_rewrite = 1;
        bind_conv(b, &L->rewrite, &gr, 0, a->freq, prefix, "rewrite");
        bind_norm(b, &L->norm1, groups, 2 * a->chin, prefix, "norm1");
    }
    if (a->dconv) bind_dconv(m, b, L, a->chin, prefix);
}

static void bind_stage(const hdemucs *m, dmx__binder *b, hstage *st, const char *list, int idx) {
    char prefix[96];
    for (int k = 0; k < st->n_bands; k++) {
        if (st->n_bands > 1)
            snprintf(prefix, sizeof prefix, "%s.%d.layers.%d", list, idx, k);
        else
            snprintf(prefix, sizeof prefix, "%s.%d", list, idx);
        bind_layer(m, b, &st->band[k], &st->band[k].a, st->n_bands > 1, prefix);
    }
}

/* Binds (or collects) every parameter in named_parameters() order. */
static void walk(hdemucs *m, dmx__binder *b) {
    char prefix[96];
    for (int i = 0; i < m->depth; i++) bind_stage(m, b, &m->enc[i], "encoder", i);
    for (int i = 0; i < m->depth; i++) bind_stage(m, b, &m->dec[i], "decoder", i);
    for (int i = 0; i < m->n_tenc; i++) {
        snprintf(prefix, sizeof prefix, "tencoder.%d", i);
        bind_layer(m, b, &m->tenc[i], &m->tenc[i].a, 0, prefix);
    }
    for (int i = 0; i < m->n_tenc; i++) {
        snprintf(prefix, sizeof prefix, "tdecoder.%d", i);
        bind_layer(m, b, &m->tdec[i], &m->tdec[i].a, 0, prefix);
    }
    if (m->freq_emb_rows) {
        int64_t s2[2] = {m->freq_emb_rows, m->freq_emb_dim};
        m->freq_emb = dmx__bind(b, 2, s2, "freq_emb.embedding.weight");
    }
}

typedef struct kw {
    dmx__ckpt *ck;
    dmx_status st;
} kw;

static int64_t kw_int(kw *k, const char *key, int64_t def) {
    int64_t v;
    if (k->st != DMX_OK || dmx__ckpt_kw_is_none(k->ck, key)) return def;
    dmx_status s = dmx__ckpt_kw_int(k->ck, key, &v);
    if (s == DMX_OK) return v;
    if (s != DMX_ERR_NOT_FOUND) k->st = s;
    return def;
}

static double kw_num(kw *k, const char *key, double def) {
    double v;
    if (k->st != DMX_OK || dmx__ckpt_kw_is_none(k->ck, key)) return def;
    dmx_status s = dmx__ckpt_kw_num(k->ck, key, &v);
    if (s == DMX_OK) return v;
    if (s != DMX_ERR_NOT_FOUND) k->st = s;
    return def;
}

static int kw_bool(kw *k, const char *key, int def) {
    int v;
    if (k->st != DMX_OK || dmx__ckpt_kw_is_none(k->ck, key)) return def;
    dmx_status s = dmx__ckpt_kw_bool(k->ck, key, &v);
    if (s == DMX_OK) return v;
    if (s != DMX_ERR_NOT_FOUND) k->st = s;
    return def;
}

static void hd_free(void *p) {
    hdemucs *m = p;
    if (!m) return;
    dmx__stft_free(m->stft);
    dmx__ckpt_free(m->ck);
    free(m);
}

/* The kwargs every HDemucs __init__ accepts; others are refused. */
static const char *const known_kwargs[] = {"sources",         "audio_channels",
                                           "channels",        "channels_time",
                                           "growth",          "nfft",
                                           "wiener_iters",    "end_iters",
                                           "wiener_residual", "cac",
                                           "depth",           "rewrite",
                                           "hybrid",          "hybrid_old",
                                           "multi_freqs",     "multi_freqs_depth",
                                           "freq_emb",        "emb_scale",
                                           "emb_smooth",      "kernel_size",
                                           "time_stride",     "stride",
                                           "context",         "context_enc",
                                           "norm_starts",     "norm_groups",
                                           "dconv_mode",      "dconv_depth",
                                           "dconv_comp",      "dconv_attn",
                                           "dconv_lstm",      "dconv_init",
                                           "rescale",         "samplerate",
                                           "segment",         NULL};

static dmx_status hd_build(dmx__ckpt *ck, void **out) {
    *out = NULL;
    hdemucs *m = calloc(1, sizeof *m);
    if (!m) {
        dmx__ckpt_free(ck);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory building the HDemucs model");
    }
    m->ck = ck;
    kw k = {ck, DMX_OK};
    dmx_status st = DMX_OK;
    dmx__net_desc *d = &m->desc;
    d->klass = dmx__ckpt_klass(ck);

    for (size_t i = 0; i < dmx__ckpt_kw_count(ck); i++) {
        const char *key = dmx__ckpt_kw_key_at(ck, i);
        int ok = 0;
        for (int j = 0; known_kwargs[j] && !ok; j++) ok = !strcmp(key, known_kwargs[j]);
        if (!ok) {
            st = dmx__fail(DMX_ERR_UNSUPPORTED,
                           "HDemucs checkpoint kwarg '%s' is unknown to upstream's HDemucs", key);
            goto fail;
        }
    }
    size_t ns = 0;
    st = dmx__ckpt_kw_strlist(ck, "sources", d->sources, DMX__MAX_SOURCES, &ns);
    if (st != DMX_OK) {
        if (st == DMX_ERR_NOT_FOUND)
            st = dmx__fail(DMX_ERR_MODEL, "checkpoint kwargs lack 'sources'");
        goto fail;
    }
    if (ns == 0 || ns > DMX__MAX_SOURCES) {
        st =
            dmx__fail(DMX_ERR_MODEL, "checkpoint kwarg 'sources' has %zu entries (1..%d supported)",
                      ns, DMX__MAX_SOURCES);
        goto fail;
    }
    m->S = d->n_sources = (int)ns;
    m->A = d->audio_channels = (int)kw_int(&k, "audio_channels", 2);
    int channels = (int)kw_int(&k, "channels", 48);
    int channels_time = (int)kw_int(&k, "channels_time", 0);
    double growth = kw_num(&k, "growth", 2);
    m->nfft = (int)kw_int(&k, "nfft", 4096);
    m->wiener_iters = (int)kw_int(&k, "wiener_iters", 0);
    int end_iters = (int)kw_int(&k, "end_iters", 0);
    m->wiener_residual = kw_bool(&k, "wiener_residual", 0);
    m->cac = kw_bool(&k, "cac", 1);
    m->depth = (int)kw_int(&k, "depth", 6);
    int rewrite = kw_bool(&k, "rewrite", 1);
    int hybrid = kw_bool(&k, "hybrid", 1);
    m->hybrid_old = kw_bool(&k, "hybrid_old", 0);
    int multi_freqs_depth = (int)kw_int(&k, "multi_freqs_depth", 2);
    double freq_emb = kw_num(&k, "freq_emb", 0.2);
    double emb_scale = kw_num(&k, "emb_scale", 10);
    int kernel_size = (int)kw_int(&k, "kernel_size", 8);
    int time_stride = (int)kw_int(&k, "time_stride", 2);
    int stride = (int)kw_int(&k, "stride", 4);
    int context = (int)kw_int(&k, "context", 1);
    int context_enc = (int)kw_int(&k, "context_enc", 0);
    int norm_starts = (int)kw_int(&k, "norm_starts", 4);
    int norm_groups = (int)kw_int(&k, "norm_groups", 4);
    int dconv_mode = (int)kw_int(&k, "dconv_mode", 1);
    m->dconv_depth = (int)kw_int(&k, "dconv_depth", 2);
    m->dconv_comp = kw_num(&k, "dconv_comp", 4);
    m->dconv_attn = (int)kw_int(&k, "dconv_attn", 4);
    m->dconv_lstm = (int)kw_int(&k, "dconv_lstm", 4);
    m->dconv_init = kw_num(&k, "dconv_init", 1e-4);
    d->samplerate = (int)kw_int(&k, "samplerate", 44100);
    double segment = kw_num(&k, "segment", 4 * 10);
    int64_t seg_num = 0, seg_den = 0; /* exact for an int or Fraction, den 0 for a float */
    if (k.st == DMX_OK && dmx__ckpt_kw_has(ck, "segment") &&
        dmx__ckpt_kw_fraction(ck, "segment", &seg_num, &seg_den) != DMX_OK) {
        seg_num = seg_den = 0;
        dmx__clear_error();
    } else if (!dmx__ckpt_kw_has(ck, "segment")) {
        seg_num = 40; /* upstream's default 4 * 10 */
        seg_den = 1;
    }
    double mf[MAX_BANDS];
    size_t nmf = 0;
    if (k.st == DMX_OK && dmx__ckpt_kw_has(ck, "multi_freqs") &&
        !dmx__ckpt_kw_is_none(ck, "multi_freqs")) {
        k.st = dmx__ckpt_kw_numlist(ck, "multi_freqs", mf, MAX_BANDS - 1, &nmf);
        if (k.st == DMX_OK && nmf > MAX_BANDS - 1) {
            st = dmx__fail(DMX_ERR_UNSUPPORTED,
                           "checkpoint kwarg 'multi_freqs': %zu bands (at most %d supported)",
                           nmf + 1, MAX_BANDS);
            goto fail;
        }
    }
    if ((st = k.st) != DMX_OK) goto fail;
    if (!hybrid) {
        st = dmx__fail(
            DMX_ERR_UNSUPPORTED,
            "checkpoint kwarg 'hybrid': spectrogram-only HDemucs (hybrid=False) is not supported");
        goto fail;
    }
    if (m->wiener_iters != end_iters) {
        st = dmx__fail(
            DMX_ERR_MODEL,
            "checkpoint kwargs: a hybrid HDemucs needs wiener_iters == end_iters (%d, %d)",
            m->wiener_iters, end_iters);
        goto fail;
    }
    if (m->depth < 1 || m->depth > MAX_DEPTH || channels < 1 || growth <= 0 || kernel_size < 4 ||
        stride < 1 || time_stride < 1 || m->nfft < 16 || (m->nfft & (m->nfft - 1)) != 0 ||
        m->A < 1 || m->A > 8 || (m->wiener_iters > 0 && !m->cac && m->A > 2) ||
        m->dconv_depth < -DMX__DCONV_MAX_DEPTH || m->dconv_depth > DMX__DCONV_MAX_DEPTH ||
        m->dconv_comp <= 0 || d->samplerate < 1000 || d->samplerate > 384000 || !(segment > 0) ||
        segment > 3600 || context < 0 || context_enc < 0 || norm_groups < 1 || channels_time < 0) {
        st = dmx__fail(DMX_ERR_MODEL,
                       "checkpoint kwargs describe an invalid or unsupported HDemucs geometry");
        goto fail;
    }
    for (size_t i = 0; i < nmf; i++)
        if (!(mf[i] > 0 && mf[i] < 1)) {
            st = dmx__fail(DMX_ERR_MODEL,
                           "checkpoint kwarg 'multi_freqs' holds %g (ratios must be in (0, 1))",
                           mf[i]);
            goto fail;
        }
    m->hop = m->nfft / 4;
    d->segment = segment;
    d->seg_num = seg_num;
    d->seg_den = seg_den;
    d->training_length = dmx__segment_length(d->seg_num, d->seg_den, segment, d->samplerate);
    if (d->training_length < 1) {
        st =
            dmx__fail(DMX_ERR_MODEL, "checkpoint kwarg 'segment' (%g s) gives no samples", segment);
        goto fail;
    }

    /* --- layer arguments, exactly as HDemucs.__init__ --- */
    const int S = m->S, A = m->A;
    int chin = A, chin_z = m->cac ? 2 * A : A;
    int chout = channels_time ? channels_time : channels, chout_z = channels;
    int freqs = m->nfft / 2;
    largs tdec_args[MAX_DEPTH];
    for (int index = 0; index < m->depth; index++) {
        int lstm = index >= m->dconv_lstm, attn = index >= m->dconv_attn,
            norm = index >= norm_starts;
        const dmx__hybrid_level lv = dmx__hybrid_level_at(freqs, kernel_size, stride, time_stride);
        const int freq = lv.freq, stri = lv.stride, ker = lv.kernel, pad = lv.pad,
                  last_freq = lv.last_freq;
        int multi = nmf > 0 && index < multi_freqs_depth;
        if (last_freq) dmx__hybrid_merge_channels(&chout, &chout_z);
        largs ea = {1,    chin_z,      chout_z, ker,         stri, freq,           pad,
                    norm, norm_groups, rewrite, context_enc, 1,    dconv_mode & 1, 0,
                    0,    lstm,        attn};
        hstage *es = &m->enc[index];
        es->n_bands = multi ? (int)nmf + 1 : 1;
        if (freq) {
            largs ta = {
                1,       chin,        chout, kernel_size,    stride,    0, 1,    norm, norm_groups,
                rewrite, context_enc, 1,     dconv_mode & 1, last_freq, 0, lstm, attn};
            m->tenc[index].a = ta;
            m->n_tenc = index + 1;
        }
        if (index == 0) {
            chin = A * S;
            chin_z = m->cac ? 2 * chin : chin;
        }
        largs da = {0,          chout_z,     chin_z,  ker,     stri,          freq,           pad,
                    norm,       norm_groups, rewrite, context, multi ? 0 : 1, dconv_mode & 2, 0,
                    index == 0, lstm,        attn};
        hstage *ds = &m->dec[m->depth - 1 - index];
        ds->n_bands = es->n_bands;
        ds->last = index == 0;
        if (multi && (norm || !freq || !pad)) {
            st = dmx__fail(DMX_ERR_MODEL,
                           "checkpoint kwargs: MultiWrap layer %d must be an unnormalised, padded "
                           "frequency layer",
                           index);
            goto fail;
        }
        for (int bnd = 0; bnd < es->n_bands; bnd++) {
            es->ratios[bnd] = ds->ratios[bnd] = bnd < (int)nmf && multi ? mf[bnd] : 1.0;
            es->band[bnd].a = ea;
            ds->band[bnd].a = da;
            if (multi) ds->band[bnd].a.last = 1; /* MultiWrap runs its bands as last layers */
        }
        if (freq) {
            largs tda = {0,       chout, chin,           kernel_size, stride,
                         0,       1,     norm,           norm_groups, rewrite,
                         context, 1,     dconv_mode & 2, last_freq,   index == 0,
                         lstm,    attn};
            tdec_args[index] = tda;
        }
        chin = chout;
        chin_z = chout_z;
        chout = (int)(growth * chout);
        chout_z = (int)(growth * chout_z);
        if (freq) freqs = freqs <= kernel_size ? 1 : freqs / stride;
        if (index == 0 && freq_emb != 0.0) {
            m->freq_emb_rows = freqs;
            m->freq_emb_dim = chin_z;
            m->freq_emb_scale = (float)freq_emb;
            m->emb_scale = (float)emb_scale;
        }
    }
    for (int i = 0; i < m->n_tenc; i++) m->tdec[m->n_tenc - 1 - i].a = tdec_args[i];
    /* A time branch that never merges (nfft too small for depth) has nothing to
     * inject into, as upstream's forward would fail. */
    if (m->n_tenc < 1 || !m->tenc[m->n_tenc - 1].a.empty) {
        st = dmx__fail(DMX_ERR_MODEL,
                       "checkpoint kwargs: the time branch never merges into the frequency branch "
                       "(nfft %d, depth %d)",
                       m->nfft, m->depth);
        goto fail;
    }

    /* --- tensors: a DiffQ state first gets its names from a collecting walk --- */
    dmx__binder b;
    if (dmx__ckpt_is_quantized(ck)) {
        dmx__param_list pl = {0};
        if ((st = dmx__binder_init(&b, ck, &pl)) == DMX_OK) {
            walk(m, &b);
            st = b.st;
        }
        dmx__binder_done(&b);
        if (st == DMX_OK) st = dmx__ckpt_dequantize(ck, &pl);
        dmx__param_list_free(&pl);
        if (st != DMX_OK) goto fail;
    }
    if ((st = dmx__binder_init(&b, ck, NULL)) == DMX_OK) {
        walk(m, &b);
        st = b.st;
        if (st == DMX_OK) st = dmx__bind_check_unused(&b, "HDemucs");
        d->n_params = b.n_params;
    }
    dmx__binder_done(&b);
    if (st != DMX_OK) goto fail;
    m->stft = dmx__stft_new(m->nfft);
    if (!m->stft) {
        st = dmx__fail(DMX_ERR_NOMEM, "cannot create FFT plans for nfft=%d", m->nfft);
        goto fail;
    }
    d->use_train_segment = 0;
    d->fixed_segment = 0;
    d->rand_draws_per_forward = 0;
    *out = m;
    return DMX_OK;
fail:
    hd_free(m);
    return st;
}

static void hd_describe(const void *net, dmx__net_desc *d) { *d = ((const hdemucs *)net)->desc; }

/* HDemucs has no valid_length: apply_model runs each chunk at its own length. */
static int64_t hd_valid_length(const void *net, int64_t length) {
    (void)net;
    return length;
}

/* ----------------------------------------------------------------- forward */

#define NOMEM() dmx__fail(DMX_ERR_NOMEM, "out of memory in the HDemucs forward pass")
#define TAP(name, p, c, h, w)                     \
    do {                                          \
        if (tap) tap(tap_user, name, p, c, h, w); \
    } while (0)

typedef struct ctx {
    const hdemucs *m;
    dmx__arena *ar;
    dmx__tap_fn tap;
    void *tap_user;
    dmx_status st; /* set by a layer that fails for another reason than memory */
} ctx;

/* DConv on y (C, H, W) in place: each frequency row its own sequence (upstream
 * folds F into the batch), gathered into a (C, W) buffer one row at a time. */
static int dconv_apply(ctx *cx, const hlayer *L, float *y, int C, int H, int W,
                       const char *tapname) {
    char name[64];
    dmx__tap_fn tap = cx->tap;
    void *tap_user = cx->tap_user;
    if (tapname) {
        snprintf(name, sizeof name, "%s_dconv_in", tapname);
        TAP(name, y, C, H, W);
    }
    if (H == 1) {
        if (dmx__dconvx_forward(&L->dconv, cx->ar, y, 1, C, W) != DMX_OK) return -1;
    } else {
        dmx__arena_mark mk = dmx__arena_save(cx->ar);
        float *t = dmx__arena_floats(cx->ar, (size_t)C * W);
        if (!t) return -1;
        for (int f = 0; f < H; f++) {
            for (int c = 0; c < C; c++)
                memcpy(t + (size_t)c * W, y + ((size_t)c * H + f) * W, sizeof(float) * W);
            if (dmx__dconvx_forward(&L->dconv, cx->ar, t, 1, C, W) != DMX_OK) return -1;
            for (int c = 0; c < C; c++)
                memcpy(y + ((size_t)c * H + f) * W, t + (size_t)c * W, sizeof(float) * W);
        }
        dmx__arena_restore(cx->ar, mk);
    }
    if (tapname) {
        snprintf(name, sizeof name, "%s_dconv_out", tapname);
        TAP(name, y, C, H, W);
    }
    return 0;
}

/* HEncLayer.forward: x (chin, H, W), inject (chout, Wo) or NULL. Returns the
 * output (chout, *Ho, *Wo) from the arena, or NULL when out of memory. */
static float *enc_layer(ctx *cx, const hlayer *L, const float *x, int H, int W, const float *inject,
                        int *Ho, int *Wo, const char *tapname) {
    const largs *a = &L->a;
    const dmx__conv_geom *g = &L->conv.g;
    dmx__arena *ar = cx->ar;
    int Wp = W;
    if (!a->freq && W % a->stride) Wp = W + a->stride - W % a->stride;
    int ho = dmx__conv_out(H, g->kh, g->sh, g->ph, 1),
        wo = dmx__conv_out(Wp, g->kw, g->sw, g->pw, 1);
    size_t plane = (size_t)ho * wo;
    float *y = dmx__arena_floats(ar, (size_t)a->chout * plane);
    if (!y) return NULL;
    *Ho = ho;
    *Wo = wo;
    dmx__arena_mark mk = dmx__arena_save(ar);
    const float *xin = dmx__pad_cols(ar, x, a->chin * H, W, Wp);
    if (!xin) return NULL;
    float *c = (a->empty || !L->has_rewrite) ? y : dmx__arena_floats(ar, (size_t)a->chout * plane);
    if (!c || dmx__enc_conv(ar, &L->conv, &L->norm1, xin, H, Wp, inject, a->empty, c)) return NULL;
    if (a->empty) {
        dmx__arena_restore(ar, mk);
        return y;
    }
    if (L->has_dconv && dconv_apply(cx, L, c, a->chout, ho, wo, tapname)) return NULL;
    if (L->has_rewrite && dmx__rewrite_glu(ar, &L->rewrite, &L->norm2, c, ho, wo, y)) return NULL;
    dmx__arena_restore(ar, mk);
    return y;
}

/* HDecLayer.forward: x (chin, H, W) gets the skip added in place (skip NULL
 * for empty layers). Returns z (chout, *Ho, *Wo); *pre, when asked for,
 * receives the transposed convolution's input (chin, H, W) (arena memory
 * that outlives the call; it may be the skip's buffer, which the rewrite
 * overwrites). `length`: time layers' output length. */
static float *dec_layer(ctx *cx, const hlayer *L, float *x, int H, int W, const float *skip,
                        int length, int *Ho, int *Wo, float **pre) {
    const largs *a = &L->a;
    const dmx__conv_geom *g = &L->conv.g;
    dmx__arena *ar = cx->ar;
    const size_t plane = (size_t)H * W;
    int hf, wf, ho, wo;
    size_t zsize = dmx__tr_shape(g, a->freq, L->pad, length, a->chout, H, W, &hf, &wf, &ho, &wo);
    float *z = dmx__arena_floats(ar, zsize);
    float *y = x;
    if (!z) return NULL;
    /* the rewrite's output goes over the skip, dead once added */
    if (!a->empty && L->has_rewrite &&
        !(y = skip ? (float *)skip : dmx__arena_floats(ar, (size_t)a->chin * plane)))
        return NULL;
    dmx__arena_mark mk = dmx__arena_save(ar);
    if (!a->empty) {
        dmx__add(x, skip, (size_t)a->chin * plane);
        if (L->has_rewrite && dmx__rewrite_glu(ar, &L->rewrite, &L->norm1, x, H, W, y)) return NULL;
        if (L->has_dconv && dconv_apply(cx, L, y, a->chin, H, W, NULL)) return NULL;
    }
    if (dmx__dec_conv_tr(ar, &L->conv, &L->norm2, a->freq, L->pad, a->last, y, H, W, hf, wf, ho,
                         wo, z))
        return NULL;
    dmx__arena_restore(ar, mk);
    *Ho = ho;
    *Wo = wo;
    if (pre) *pre = y;
    return z;
}

static int py_round(double v) { return (int)nearbyint(v); } /* half to even, as Python's round */

/* MultiWrap band limits for the encoder: [start[k], limit[k]) of the input. */
static void enc_bands(const hstage *s, int Fr, int *start, int *limit) {
    int st = 0;
    for (int k = 0; k < s->n_bands; k++) {
        const hlayer *L = &s->band[k];
        int K = L->a.kernel, str = L->a.stride, pad = K / 4, lim;
        if (s->ratios[k] == 1.0) {
            lim = Fr;
        } else {
            lim = py_round(Fr * s->ratios[k]);
            int le = lim - st;
            if (st == 0) le += pad;
            int frames = py_round((double)(le - K) / str + 1);
            lim = st + (frames - 1) * str + K;
            if (st == 0) lim -= pad;
        }
        start[k] = st;
        limit[k] = lim;
        st = lim - K + str;
    }
}

/* One encoder stage (layer or MultiWrap) on x (chin, F, T). */
static float *enc_stage(ctx *cx, const hstage *s, const float *x, int F, int T, const float *inject,
                        int *Ho, int *Wo, const char *tapname) {
    if (s->n_bands == 1) return enc_layer(cx, &s->band[0], x, F, T, inject, Ho, Wo, tapname);
    dmx__arena *ar = cx->ar;
    int start[MAX_BANDS], limit[MAX_BANDS], hob[MAX_BANDS], tot = 0;
    enc_bands(s, F, start, limit);
    const int chin = s->band[0].a.chin, chout = s->band[0].a.chout;
    for (int k = 0; k < s->n_bands; k++) {
        const hlayer *L = &s->band[k];
        int pad = L->a.kernel / 4;
        int hin = limit[k] - start[k] + (start[k] == 0 ? pad : 0) + (s->ratios[k] == 1.0 ? pad : 0);
        if (limit[k] - start[k] <= 0 || limit[k] > F || hin < L->a.kernel) {
            cx->st = dmx__fail(DMX_ERR_INVALID_ARG, "MultiWrap band %d [%d, %d) of %d bins", k,
                               start[k], limit[k], F);
            return NULL;
        }
        hob[k] = (hin - L->a.kernel) / L->a.stride + 1;
        tot += hob[k];
    }
    float *y = dmx__arena_floats(ar, (size_t)chout * tot * T);
    if (!y) return NULL;
    int row = 0;
    for (int k = 0; k < s->n_bands; k++) {
        const hlayer *L = &s->band[k];
        int pad = L->a.kernel / 4, lo = start[k] == 0 ? pad : 0, hi = s->ratios[k] == 1.0 ? pad : 0;
        int nb = limit[k] - start[k], hin = nb + lo + hi;
        dmx__arena_mark mk = dmx__arena_save(ar);
        float *xb = dmx__arena_zeros(ar, (size_t)chin * hin * T);
        if (!xb) return NULL;
        for (int c = 0; c < chin; c++)
            memcpy(xb + ((size_t)c * hin + lo) * T, x + ((size_t)c * F + start[k]) * T,
                   sizeof(float) * (size_t)nb * T);
        int h, w;
        float *ob = enc_layer(cx, L, xb, hin, T, inject, &h, &w, NULL);
        if (!ob) return NULL;
        for (int c = 0; c < chout; c++)
            memcpy(y + ((size_t)c * tot + row) * T, ob + (size_t)c * h * w,
                   sizeof(float) * (size_t)h * w);
        row += h;
        dmx__arena_restore(ar, mk);
    }
    *Ho = tot;
    *Wo = T;
    return y;
}

/* One decoder stage on x (chin, F, T) (modified) with its skip. */
static float *dec_stage(ctx *cx, const hstage *s, float *x, int F, int T, const float *skip,
                        int length, int *Ho, int *Wo, float **pre) {
    if (s->n_bands == 1) return dec_layer(cx, &s->band[0], x, F, T, skip, length, Ho, Wo, pre);
    dmx__arena *ar = cx->ar;
    if (pre) *pre = NULL;
    const int chin = s->band[0].a.chin, chout = s->band[0].a.chout;
    int start[MAX_BANDS], limit[MAX_BANDS], rmax = 0, st = 0;
    for (int k = 0; k < s->n_bands; k++) {
        const hlayer *L = &s->band[k];
        start[k] = st;
        limit[k] = s->ratios[k] == 1.0 ? F : py_round(F * s->ratios[k]);
        if (limit[k] <= start[k] || limit[k] > F) {
            cx->st = dmx__fail(DMX_ERR_INVALID_ARG, "MultiWrap band %d [%d, %d) of %d bins", k,
                               start[k], limit[k], F);
            return NULL;
        }
        rmax += (limit[k] - start[k] - 1) * L->a.stride + L->a.kernel;
        st = limit[k];
    }
    float *y = dmx__arena_floats(ar, (size_t)chout * rmax * T);
    if (!y) return NULL;
    int rows = 0;
    for (int k = 0; k < s->n_bands; k++) {
        const hlayer *L = &s->band[k];
        const int str = L->a.stride, nb = limit[k] - start[k];
        dmx__arena_mark mk = dmx__arena_save(ar);
        float *xb = dmx__arena_floats(ar, (size_t)chin * nb * T);
        float *sb = dmx__arena_floats(ar, (size_t)chin * nb * T);
        if (!xb || !sb) return NULL;
        for (int c = 0; c < chin; c++) {
            memcpy(xb + (size_t)c * nb * T, x + ((size_t)c * F + start[k]) * T,
                   sizeof(float) * (size_t)nb * T);
            memcpy(sb + (size_t)c * nb * T, skip + ((size_t)c * F + start[k]) * T,
                   sizeof(float) * (size_t)nb * T);
        }
        int h, w;
        float *ob = dec_layer(cx, L, xb, nb, T, sb, 0, &h, &w, NULL);
        if (!ob) return NULL;
        int off = 0, end = h;
        if (k > 0) {
            for (int c = 0; c < chout; c++)
                for (int r = 0; r < str; r++) {
                    float *dst = y + ((size_t)c * rmax + rows - str + r) * T;
                    const float *src = ob + ((size_t)c * h + r) * T;
                    float bias = L->conv.b[c];
                    for (int t = 0; t < T; t++) dst[t] += src[t] - bias;
                }
            off = str;
        }
        if (s->ratios[k] == 1.0) end -= str / 2;
        if (start[k] == 0) off += str / 2;
        for (int c = 0; c < chout; c++)
            memcpy(y + ((size_t)c * rmax + rows) * T, ob + ((size_t)c * h + off) * T,
                   sizeof(float) * (size_t)(end - off) * T);
        rows += end - off;
        dmx__arena_restore(ar, mk);
    }
    for (int c = 1; c < chout; c++) /* compact (chout, rmax, T) -> (chout, rows, T) */
        memmove(y + (size_t)c * rows * T, y + (size_t)c * rmax * T,
                sizeof(float) * (size_t)rows * T);
    if (!s->last) dmx__gelu(y, (size_t)chout * rows * T);
    *Ho = rows;
    *Wo = T;
    return y;
}

static dmx_status hd_forward(const void *net, dmx__arena *ar, const float *mix, int len, float *out,
                             dmx__tap_fn tap, void *tap_user) {
    const hdemucs *m = net;
    const int A = m->A, S = m->S, nb = m->nfft / 2;
    if (len < 1) return dmx__fail(DMX_ERR_INVALID_ARG, "HDemucs forward on %d samples", len);
    ctx cx = {m, ar, tap, tap_user, DMX_OK};
    dmx__arena_mark top = dmx__arena_save(ar);
    dmx_status st = DMX_OK;
    char name[48];
    const int le = dmx__spec_frames(m->stft, len);
    const int nz = m->cac ? 2 : 1;

    /* complex-as-channels normalises the spectrogram in place; a mask
     * model keeps it for the Wiener filter at the end */
    float *z = dmx__arena_floats(ar, (size_t)A * 2 * nb * le);
    float *x = m->cac ? z : dmx__arena_floats(ar, (size_t)A * nz * nb * le);
    float *xt = dmx__arena_floats(ar, (size_t)A * len);
    if (!z || !x || !xt || dmx__spec_ex(m->stft, ar, mix, A, len, m->hybrid_old, z)) goto nomem;
    TAP("spec", z, 2 * A, nb, le);
    size_t nx = (size_t)A * nz * nb * le, plane = (size_t)nb * le;
    if (!m->cac) dmx__wiener_magnitude(z, A, plane, x);
    float mean, std, meant, stdt;
    dmx__mean_std(x, nx, &mean, &std);
    for (size_t i = 0; i < nx; i++) x[i] = (x[i] - mean) / (1e-5f + std);
    dmx__mean_std(mix, (size_t)A * len, &meant, &stdt);
    for (size_t i = 0; i < (size_t)A * len; i++) xt[i] = (mix[i] - meant) / (1e-5f + stdt);

    float *saved[MAX_DEPTH], *saved_t[MAX_DEPTH];
    int lengths[MAX_DEPTH], lengths_t[MAX_DEPTH];
    int n_saved = 0, n_saved_t = 0, n_len_t = 0;
    int F = nb, T = le, Tt = len;
    dmx__arena_mark emark[MAX_DEPTH]; /* before encoder level idx's allocations */
    for (int idx = 0; idx < m->depth; idx++) {
        emark[idx] = dmx__arena_save(ar);
        lengths[idx] = T;
        const float *inject = NULL;
        if (idx < m->n_tenc) {
            const hlayer *tl = &m->tenc[idx];
            lengths_t[n_len_t++] = Tt;
            int h1, w1;
            if (!(xt = enc_layer(&cx, tl, xt, 1, Tt, NULL, &h1, &w1, NULL))) goto nomem;
            Tt = w1;
            snprintf(name, sizeof name, "tencoder%d", idx);
            TAP(name, xt, tl->a.chout, 1, Tt);
            if (!tl->a.empty)
                saved_t[n_saved_t++] = xt;
            else
                inject = xt;
        }
        const hstage *es = &m->enc[idx];
        if (inject &&
            (Tt != T || es->band[0].a.chout != m->tenc[idx].a.chout || !es->band[0].a.freq)) {
            st = dmx__fail(DMX_ERR_INVALID_ARG,
                           "the time branch (%d steps) cannot merge into %d frames", Tt, T);
            goto done;
        }
        snprintf(name, sizeof name, "encoder%d", idx);
        int h2, w2;
        if (!(x = enc_stage(&cx, es, x, F, T, inject, &h2, &w2, name))) goto fail;
        F = h2;
        T = w2;
        TAP(name, x, es->band[0].a.chout, F, T);
        if (idx == 0 && m->freq_emb) {
            if (F != m->freq_emb_rows) {
                st = dmx__fail(DMX_ERR_INVALID_ARG, "frequency embedding of %d rows for %d bins",
                               m->freq_emb_rows, F);
                goto done;
            }
            for (int c = 0; c < es->band[0].a.chout; c++)
                for (int f = 0; f < F; f++) {
                    float e = m->freq_emb_scale *
                              (m->freq_emb[(size_t)f * m->freq_emb_dim + c] * m->emb_scale);
                    float *row = x + ((size_t)c * F + f) * T;
                    for (int t = 0; t < T; t++) row[t] += e;
                }
        }
        saved[n_saved++] = x;
    }

    /* the decoders start from zeros: the signal goes through the skips */
    int C = m->enc[m->depth - 1].band[0].a.chout;
    if (!(x = dmx__arena_zeros(ar, (size_t)C * F * T))) goto nomem;
    int offset = m->depth - m->n_tenc;
    for (int idx = 0; idx < m->depth; idx++) {
        const hstage *ds = &m->dec[idx];
        float *skip = saved[--n_saved];
        float *pre = NULL;
        int h, w;
        float *nx3 = dec_stage(&cx, ds, x, F, T, skip, lengths[n_saved], &h, &w, &pre);
        if (!nx3) goto fail;
        snprintf(name, sizeof name, "decoder%d", idx);
        TAP(name, nx3, ds->band[0].a.chout, h, w);
        if (idx >= offset) {
            const hlayer *tl = &m->tdec[idx - offset];
            int length_t = lengths_t[--n_len_t], h4, w4;
            float *nt;
            if (tl->a.empty) {
                if (!pre || F != 1) {
                    st = dmx__fail(DMX_ERR_INVALID_ARG,
                                   "the branches merge at %d frequency bins, not 1", F);
                    goto done;
                }
                nt = dec_layer(&cx, tl, pre, 1, T, NULL, length_t, &h4, &w4, NULL);
            } else {
                nt = dec_layer(&cx, tl, xt, 1, Tt, saved_t[--n_saved_t], length_t, &h4, &w4, NULL);
            }
            if (!nt) goto fail;
            xt = nt;
            Tt = w4;
            snprintf(name, sizeof name, "tdecoder%d", idx - offset);
            TAP(name, xt, tl->a.chout, 1, Tt);
        }
        x = nx3;
        F = h;
        T = w;
        /* Level L = depth-1-idx is decoded: its skips and everything above
         * them are dead but x and xt (allocated in that order, xt only when
         * this level has a time layer), which move down to emark[L]. Skipped
         * when the arena moved to another block (moves must go down). */
        {
            const int L = m->depth - 1 - idx;
            const int moved_t = idx >= offset;
            size_t nxs = (size_t)ds->band[0].a.chout * F * T,
                   nts = moved_t ? (size_t)m->tdec[idx - offset].a.chout * Tt : 0;
            dmx__arena_mark keep = dmx__arena_save(ar);
            dmx__arena_restore(ar, emark[L]);
            float *nx = dmx__arena_floats(ar, nxs);
            float *nt = nx && moved_t ? dmx__arena_floats(ar, nts) : NULL;
            int ok = nx && (!moved_t || nt) && ar->cur == keep.cur && nx <= x &&
                     (!moved_t || (x < xt && nt <= xt));
            if (ok) {
                memmove(nx, x, sizeof(float) * nxs);
                x = nx;
                if (moved_t) {
                    memmove(nt, xt, sizeof(float) * nts);
                    xt = nt;
                }
            } else {
                dmx__arena_restore(ar, keep);
            }
        }
    }
    if (F != nb || T != le || Tt != len) {
        st =
            dmx__fail(DMX_ERR_INVALID_ARG, "decoder output (%d, %d) / %d for a (%d, %d) / %d input",
                      F, T, Tt, nb, le, len);
        goto done;
    }
    /* de-normalise, mask / complex-as-channels, back to waveforms */
    {
        size_t n = (size_t)S * A * nz * plane;
        for (size_t i = 0; i < n; i++) x[i] = x[i] * std + mean;
        float *zout = x;
        if (!m->cac) {
            if (!(zout = dmx__arena_floats(ar, (size_t)S * A * 2 * plane))) goto nomem;
            if ((st = dmx__wiener(ar, x, z, S, A, nb, le, m->wiener_iters, m->wiener_residual,
                                  zout)) != DMX_OK)
                goto done;
        }
        TAP("mask_out", zout, S * A * 2, nb, le);
        if (dmx__ispec_ex(m->stft, ar, zout, S * A, le, len, m->hybrid_old, out)) goto nomem;
        for (size_t i = 0; i < (size_t)S * A * len; i++) out[i] = (xt[i] * stdt + meant) + out[i];
    }
    goto done;
fail:
    /* a NULL from a layer: out of memory unless it set its own error */
    if (cx.st != DMX_OK) {
        st = cx.st;
        goto done;
    }
nomem:
    st = NOMEM();
done:
    dmx__arena_restore(ar, top);
    return st;
}

const dmx__net_vt dmx__hdemucs_vt = {
    "hdemucs", hd_build, hd_free, hd_describe, hd_valid_length, hd_forward,
};
