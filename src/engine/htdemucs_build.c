/*
 * htdemucs_build.c - HTDemucs (Demucs v4) from a checkpoint: every layer's
 * geometry derived from the constructor kwargs exactly as upstream's
 * HTDemucs.__init__, every state tensor bound and shape-checked; and the
 * family's entry in the engine's network table (dmx__htdemucs_vt, net.h).
 * The forward pass is in htdemucs_forward.c and transformer.c.
 */
#include "htdemucs.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "hybrid.h"

/* ---------------------------------------------------------------- building */

typedef struct builder {
    dmx__ckpt *ck;
    unsigned char *used; /* (n_tensors) */
    dmx_status st;
    int64_t n_params;
} builder;

static const char *fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = 0;
    o += snprintf(buf + o, cap - o, "(");
    for (int i = 0; i < ndim && o < cap; i++)
        o += snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, ndim == 1 ? ",)" : ")");
    return buf;
}

/* Binds tensor `name` and checks it has exactly the given shape (ndim values
 * follow). Records the first error in b->st. */
static const float *bind(builder *b, int ndim, const char *name, ...) {
    if (b->st != DMX_OK) return NULL;
    int64_t want[DMX__MAX_DIMS];
    va_list ap;
    va_start(ap, name);
    for (int i = 0; i < ndim; i++) want[i] = va_arg(ap, int64_t);
    va_end(ap);
    const dmx__tensor *t = dmx__ckpt_find(b->ck, name);
    char s1[128], s2[128];
    if (!t) {
        b->st = dmx__fail(DMX_ERR_MODEL,
                          "missing tensor '%s' (expected shape %s from the checkpoint's kwargs)",
                          name, fmt_shape(s1, sizeof s1, ndim, want));
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        b->st = dmx__fail(DMX_ERR_MODEL, "tensor '%s' has shape %s but the architecture expects %s",
                          name, fmt_shape(s1, sizeof s1, t->ndim, t->shape),
                          fmt_shape(s2, sizeof s2, ndim, want));
        return NULL;
    }
    size_t n = dmx__ckpt_n_tensors(b->ck);
    for (size_t i = 0; i < n; i++)
        if (dmx__ckpt_tensor_at(b->ck, i) == t) b->used[i] = 1;
    b->n_params += (int64_t)t->numel;
    return t->data;
}

#define I64(x) ((int64_t)(x))

static int64_t kw_int(builder *b, const char *key, int64_t def) {
    int64_t v;
    if (b->st != DMX_OK) return def;
    dmx_status s = dmx__ckpt_kw_int(b->ck, key, &v);
    if (s == DMX_OK) return v;
    if (s == DMX_ERR_NOT_FOUND) return def;
    if (dmx__ckpt_kw_is_none(b->ck, key)) return def;
    b->st = s;
    return def;
}

static double kw_num(builder *b, const char *key, double def) {
    double v;
    if (b->st != DMX_OK) return def;
    dmx_status s = dmx__ckpt_kw_num(b->ck, key, &v);
    if (s == DMX_OK) return v;
    if (s == DMX_ERR_NOT_FOUND) return def;
    b->st = s;
    return def;
}

static int kw_bool(builder *b, const char *key, int def) {
    int v;
    if (b->st != DMX_OK) return def;
    dmx_status s = dmx__ckpt_kw_bool(b->ck, key, &v);
    if (s == DMX_OK) return v;
    if (s == DMX_ERR_NOT_FOUND) return def;
    b->st = s;
    return def;
}

static void bind_norm(builder *b, dmx__norm *n, int groups, int ch, const char *fmt, ...) {
    char base[160], name[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, sizeof base, fmt, ap);
    va_end(ap);
    n->groups = groups;
    if (!groups) return;
    snprintf(name, sizeof name, "%s.weight", base);
    n->w = bind(b, 1, name, I64(ch));
    snprintf(name, sizeof name, "%s.bias", base);
    n->b = bind(b, 1, name, I64(ch));
}

/* Binds a convolution `base`.weight/.bias. freq2d: the weight is 4-D
 * (out, in, kh, kw) (Conv2d), else 3-D (out, in, k) (Conv1d over time). */
static void bind_conv(builder *b, dmx__conv *c, const dmx__conv_geom *g, int transposed, int conv2d,
                      const char *fmt, ...) {
    char base[160], name[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, sizeof base, fmt, ap);
    va_end(ap);
    c->g = *g;
    int64_t a = transposed ? g->cin : g->cout, bb = transposed ? g->cout : g->cin;
    snprintf(name, sizeof name, "%s.weight", base);
    if (conv2d)
        c->w = bind(b, 4, name, a, bb, I64(g->kh), I64(g->kw));
    else
        c->w = bind(b, 3, name, a, bb, I64(g->kw));
    snprintf(name, sizeof name, "%s.bias", base);
    c->b = bind(b, 1, name, I64(g->cout));
}

static dmx__conv_geom geom(int cin, int cout, int kh, int kw, int sh, int sw, int ph, int pw,
                           int dh, int dw) {
    dmx__conv_geom g = {cin, cout, kh, kw, sh, sw, ph, pw, dh, dw};
    return g;
}

static void bind_dconv(builder *b, dmx__dconv *d, int channels, double compress, int depth,
                       const char *prefix) {
    d->channels = channels;
    d->hidden = (int)(channels / compress);
    d->depth = depth;
    for (int i = 0; i < depth; i++) {
        dmx__dconv_layer *L = &d->layers[i];
        int dil = 1 << i;
        dmx__conv_geom g1 = geom(channels, d->hidden, 1, 3, 1, 1, 0, dil, 1, dil);
        bind_conv(b, &L->conv1, &g1, 0, 0, "%s.dconv.layers.%d.0", prefix, i);
        bind_norm(b, &L->norm1, 1, d->hidden, "%s.dconv.layers.%d.1", prefix, i);
        dmx__conv_geom g2 = geom(d->hidden, 2 * channels, 1, 1, 1, 1, 0, 0, 1, 1);
        bind_conv(b, &L->conv2, &g2, 0, 0, "%s.dconv.layers.%d.3", prefix, i);
        bind_norm(b, &L->norm2, 1, 2 * channels, "%s.dconv.layers.%d.4", prefix, i);
        char name[200];
        snprintf(name, sizeof name, "%s.dconv.layers.%d.6.scale", prefix, i);
        L->scale = bind(b, 1, name, I64(channels));
    }
}

typedef struct layer_args {
    int chin, chout, kernel, stride, freq, pad, norm, norm_groups, rewrite, context, dconv;
    int empty, last;
    double dconv_comp;
    int dconv_depth;
} layer_args;

static void bind_enc(builder *b, dmx__hlayer *L, const layer_args *a, const char *prefix) {
    memset(L, 0, sizeof *L);
    L->freq = a->freq;
    L->empty = a->empty;
    L->kernel = a->kernel;
    L->stride = a->stride;
    L->pad = a->pad ? a->kernel / 4 : 0;
    L->chin = a->chin;
    L->chout = a->chout;
    dmx__conv_geom g = a->freq
                           ? geom(a->chin, a->chout, a->kernel, 1, a->stride, 1, L->pad, 0, 1, 1)
                           : geom(a->chin, a->chout, 1, a->kernel, 1, a->stride, 0, L->pad, 1, 1);
    bind_conv(b, &L->conv, &g, 0, a->freq, "%s.conv", prefix);
    if (a->empty) return;
    int groups = a->norm ? a->norm_groups : 0;
    bind_norm(b, &L->norm1, groups, a->chout, "%s.norm1", prefix);
    if (a->rewrite) {
        int k = 1 + 2 * a->context;
        dmx__conv_geom gr =
            a->freq ? geom(a->chout, 2 * a->chout, k, k, 1, 1, a->context, a->context, 1, 1)
                    : geom(a->chout, 2 * a->chout, 1, k, 1, 1, 0, a->context, 1, 1);
        L->has_rewrite = 1;
        bind_conv(b, &L->rewrite, &gr, 0, a->freq, "%s.rewrite", prefix);
        bind_norm(b, &L->norm2, groups, 2 * a->chout, "%s.norm2", prefix);
    }
    if (a->dconv) {
        L->has_dconv = 1;
        bind_dconv(b, &L->dconv, a->chout, a->dconv_comp, a->dconv_depth, prefix);
    }
}

static void bind_dec(builder *b, dmx__hlayer *L, const layer_args *a, const char *prefix) {
    memset(L, 0, sizeof *L);
    L->freq = a->freq;
    L->empty = a->empty;
    L->last = a->last;
    L->kernel = a->kernel;
    L->stride = a->stride;
    L->pad = a->pad ? a->kernel / 4 : 0;
    L->chin = a->chin;
    L->chout = a->chout;
    dmx__conv_geom g = a->freq ? geom(a->chin, a->chout, a->kernel, 1, a->stride, 1, 0, 0, 1, 1)
                               : geom(a->chin, a->chout, 1, a->kernel, 1, a->stride, 0, 0, 1, 1);
    bind_conv(b, &L->conv, &g, 1, a->freq, "%s.conv_tr", prefix);
    int groups = a->norm ? a->norm_groups : 0;
    bind_norm(b, &L->norm2, groups, a->chout, "%s.norm2", prefix);
    if (a->empty) return;
    if (a->rewrite) {
        int k = 1 + 2 * a->context;
        dmx__conv_geom gr =
            a->freq ? geom(a->chin, 2 * a->chin, k, k, 1, 1, a->context, a->context, 1, 1)
                    : geom(a->chin, 2 * a->chin, 1, k, 1, 1, 0, a->context, 1, 1);
        L->has_rewrite = 1;
        bind_conv(b, &L->rewrite, &gr, 0, a->freq, "%s.rewrite", prefix);
        bind_norm(b, &L->norm1, groups, 2 * a->chin, "%s.norm1", prefix);
    }
    if (a->dconv) {
        L->has_dconv = 1;
        bind_dconv(b, &L->dconv, a->chin, a->dconv_comp, a->dconv_depth, prefix);
    }
}

static void bind_tlayer(builder *b, dmx__tlayer *L, const dmx__xformer *xf, int cross, int norm_out,
                        int layer_scale, const char *prefix) {
    char name[200];
    int d = xf->dim;
    L->cross = cross;
    const char *attn = cross ? "cross_attn" : "self_attn";
#define BIND1(field, suffix, n0) \
    (snprintf(name, sizeof name, "%s.%s", prefix, suffix), L->field = bind(b, 1, name, I64(n0)))
#define BIND2(field, suffix, n0, n1)                       \
    (snprintf(name, sizeof name, "%s.%s", prefix, suffix), \
     L->field = bind(b, 2, name, I64(n0), I64(n1)))
    snprintf(name, sizeof name, "%s.%s.in_proj_weight", prefix, attn);
    L->in_w = bind(b, 2, name, I64(3 * d), I64(d));
    snprintf(name, sizeof name, "%s.%s.in_proj_bias", prefix, attn);
    L->in_b = bind(b, 1, name, I64(3 * d));
    snprintf(name, sizeof name, "%s.%s.out_proj.weight", prefix, attn);
    L->out_w = bind(b, 2, name, I64(d), I64(d));
    snprintf(name, sizeof name, "%s.%s.out_proj.bias", prefix, attn);
    L->out_b = bind(b, 1, name, I64(d));
    BIND2(l1_w, "linear1.weight", xf->hidden, d);
    BIND1(l1_b, "linear1.bias", xf->hidden);
    BIND2(l2_w, "linear2.weight", d, xf->hidden);
    BIND1(l2_b, "linear2.bias", d);
    /* groups == 0 with weights: LayerNorm; groups > 0: GroupNorm */
    int g = xf->group_norm;
    bind_norm(b, &L->n1, 1, d, "%s.norm1", prefix);
    L->n1.groups = g;
    bind_norm(b, &L->n2, 1, d, "%s.norm2", prefix);
    L->n2.groups = g;
    if (cross) {
        bind_norm(b, &L->n3, 1, d, "%s.norm3", prefix);
        L->n3.groups = g;
    }
    if (xf->norm_first && norm_out) bind_norm(b, &L->norm_out, norm_out, d, "%s.norm_out", prefix);
    if (layer_scale) {
        BIND1(g1, "gamma_1.scale", d);
        BIND1(g2, "gamma_2.scale", d);
    }
#undef BIND1
#undef BIND2
}

static dmx_status unsupported_kw(builder *b, const char *key, const char *why) {
    b->st = dmx__fail(DMX_ERR_UNSUPPORTED, "checkpoint kwarg '%s': %s", key, why);
    return b->st;
}

dmx_status dmx__htdemucs_build(dmx__ckpt *ck, dmx__htdemucs **out) {
    *out = NULL;
    dmx__htdemucs *m = calloc(1, sizeof *m);
    builder bb = {ck, calloc(dmx__ckpt_n_tensors(ck) + 1, 1), DMX_OK, 0};
    builder *b = &bb;
    if (!m || !b->used) {
        free(m);
        free(b->used);
        dmx__ckpt_free(ck);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory building the model");
    }
    m->ck = ck;

    /* sources */
    size_t ns = 0;
    dmx_status s = dmx__ckpt_kw_strlist(ck, "sources", m->sources, DMX__MAX_SOURCES, &ns);
    if (s != DMX_OK) {
        b->st = s == DMX_ERR_NOT_FOUND
                    ? dmx__fail(DMX_ERR_MODEL, "checkpoint kwargs lack 'sources'")
                    : s;
        goto fail;
    }
    if (ns == 0 || ns > DMX__MAX_SOURCES) {
        b->st =
            dmx__fail(DMX_ERR_MODEL, "checkpoint kwarg 'sources' has %zu entries (1..%d supported)",
                      ns, DMX__MAX_SOURCES);
        goto fail;
    }
    m->n_sources = (int)ns;

    m->audio_channels = (int)kw_int(b, "audio_channels", 2);
    int channels = (int)kw_int(b, "channels", 48);
    int channels_time = 0;
    if (dmx__ckpt_kw_has(ck, "channels_time") && !dmx__ckpt_kw_is_none(ck, "channels_time"))
        channels_time = (int)kw_int(b, "channels_time", 0);
    int growth = (int)kw_int(b, "growth", 2);
    m->nfft = (int)kw_int(b, "nfft", 4096);
    m->wiener_iters = (int)kw_int(b, "wiener_iters", 0);
    int end_iters = (int)kw_int(b, "end_iters", 0);
    m->wiener_residual = kw_bool(b, "wiener_residual", 0);
    m->cac = kw_bool(b, "cac", 1);
    m->depth = (int)kw_int(b, "depth", 4);
    int rewrite = kw_bool(b, "rewrite", 1);
    double freq_emb = kw_num(b, "freq_emb", 0.2);
    double emb_scale = kw_num(b, "emb_scale", 10);
    int kernel_size = (int)kw_int(b, "kernel_size", 8);
    int time_stride = (int)kw_int(b, "time_stride", 2);
    int stride = (int)kw_int(b, "stride", 4);
    int context = (int)kw_int(b, "context", 1);
    int context_enc = (int)kw_int(b, "context_enc", 0);
    int norm_starts = (int)kw_int(b, "norm_starts", 4);
    int norm_groups = (int)kw_int(b, "norm_groups", 4);
    int dconv_mode = (int)kw_int(b, "dconv_mode", 1);
    int dconv_depth = (int)kw_int(b, "dconv_depth", 2);
    double dconv_comp = kw_num(b, "dconv_comp", 8);
    m->bottom_channels = (int)kw_int(b, "bottom_channels", 0);
    int t_layers = (int)kw_int(b, "t_layers", 5);
    double t_hidden_scale = kw_num(b, "t_hidden_scale", 4.0);
    int t_heads = (int)kw_int(b, "t_heads", 8);
    int t_norm_in = kw_bool(b, "t_norm_in", 1);
    int t_norm_in_group = kw_bool(b, "t_norm_in_group", 0);
    int t_group_norm = (int)kw_int(b, "t_group_norm", 0);
    int t_norm_first = kw_bool(b, "t_norm_first", 1);
    int t_norm_out = (int)kw_int(b, "t_norm_out", 1);
    double t_max_period = kw_num(b, "t_max_period", 10000.0);
    int t_layer_scale = kw_bool(b, "t_layer_scale", 1);
    int t_gelu = kw_bool(b, "t_gelu", 1);
    double t_weight_pos_embed = kw_num(b, "t_weight_pos_embed", 1.0);
    int t_sin_random_shift = (int)kw_int(b, "t_sin_random_shift", 0);
    int t_cape_mean_normalize = kw_bool(b, "t_cape_mean_normalize", 1);
    int t_sparse_self = kw_bool(b, "t_sparse_self_attn", 0);
    int t_sparse_cross = kw_bool(b, "t_sparse_cross_attn", 0);
    int t_cross_first = kw_bool(b, "t_cross_first", 0);
    m->samplerate = (int)kw_int(b, "samplerate", 44100);
    m->use_train_segment = kw_bool(b, "use_train_segment", 1);
    double segment = kw_num(b, "segment", 10);
    if (b->st != DMX_OK) goto fail;

    /* t_emb */
    const char *t_emb = "sin";
    if (dmx__ckpt_kw_has(ck, "t_emb") && dmx__ckpt_kw_str(ck, "t_emb", &t_emb) != DMX_OK) {
        b->st = dmx__fail(DMX_ERR_MODEL, "checkpoint kwarg 't_emb' is not a string");
        goto fail;
    }
    /* multi_freqs: only the empty list (all released HTDemucs models) */
    if (dmx__ckpt_kw_has(ck, "multi_freqs") && !dmx__ckpt_kw_is_none(ck, "multi_freqs")) {
        double mf[8];
        size_t nmf = 0;
        if (dmx__ckpt_kw_numlist(ck, "multi_freqs", mf, 8, &nmf) != DMX_OK || nmf != 0) {
            unsupported_kw(b, "multi_freqs",
                           "frequency band splitting (MultiWrap) is not supported");
            goto fail;
        }
    }
    if (m->wiener_iters != end_iters) { /* HTDemucs.__init__ asserts it */
        b->st = dmx__fail(DMX_ERR_MODEL,
                          "checkpoint kwargs: HTDemucs needs wiener_iters == end_iters (%d, %d)",
                          m->wiener_iters, end_iters);
        goto fail;
    }
    if (!m->cac && m->wiener_iters > 0 && m->audio_channels > 2) {
        unsupported_kw(b, "wiener_iters",
                       "Wiener EM iterations need mono or stereo audio (as open-unmix)");
        goto fail;
    }
    if (strcmp(t_emb, "sin") != 0 && strcmp(t_emb, "cape") != 0 && strcmp(t_emb, "scaled") != 0) {
        unsupported_kw(b, "t_emb",
                       "only 'sin', 'cape' and 'scaled' position embeddings are supported");
        goto fail;
    }
    if (t_sparse_self || t_sparse_cross) {
        unsupported_kw(b, "t_sparse_self_attn", "sparse attention is not supported");
        goto fail;
    }
    if (t_sin_random_shift) {
        unsupported_kw(b, "t_sin_random_shift",
                       "random embedding shifts at inference are not supported");
        goto fail;
    }
    if (m->depth < 1 || m->depth > DMX__MAX_DEPTH || channels < 1 || growth < 1 ||
        kernel_size < 1 || stride < 1 || time_stride < 1 || m->nfft < 16 ||
        (m->nfft & (m->nfft - 1)) != 0 || m->audio_channels < 1 || m->audio_channels > 8 ||
        dconv_depth < 0 || dconv_depth > 4 || dconv_comp <= 0 || m->samplerate < 1000 ||
        m->samplerate > 384000 || segment <= 0 || segment > 3600 || context < 0 ||
        context_enc < 0 || norm_groups < 1 || t_layers < 0 || t_heads < 1) {
        b->st = dmx__fail(DMX_ERR_MODEL,
                          "checkpoint kwargs describe an invalid or unsupported geometry");
        goto fail;
    }
    m->hop = m->nfft / 4;
    {
        /* upstream's int(self.segment * self.samplerate): exact for an int
         * or a Fraction (Fraction(39, 5)), float truncation for a float
         * (model_segment = 4 * dset.segment is often one, e.g. 5.6) */
        m->segment = segment;
        m->seg_num = 10;
        m->seg_den = 1;
        if (dmx__ckpt_kw_has(ck, "segment") &&
            dmx__ckpt_kw_fraction(ck, "segment", &m->seg_num, &m->seg_den) != DMX_OK)
            m->seg_num = m->seg_den = 0; /* a float */
        dmx__clear_error();
        int64_t tl = dmx__segment_length(m->seg_num, m->seg_den, segment, m->samplerate);
        if (tl < 1 || tl > INT32_MAX) {
            b->st = dmx__fail(DMX_ERR_MODEL,
                              "checkpoint kwarg 'segment' (%g s) gives no usable length", segment);
            goto fail;
        }
        m->training_length = (int)tl;
    }

    /* --- encoder / decoder geometry, exactly as HTDemucs.__init__ --- */
    int S = m->n_sources, A = m->audio_channels;
    const int nz = m->cac ? 2 : 1; /* spectrogram channels per audio channel */
    int chin = A, chin_z = nz * A;
    int chout = channels_time ? channels_time : channels, chout_z = channels;
    int freqs = m->nfft / 2;
    char prefix[64];
    for (int index = 0; index < m->depth; index++) {
        int norm = index >= norm_starts;
        const dmx__hybrid_level lv = dmx__hybrid_level_at(freqs, kernel_size, stride, time_stride);
        const int freq = lv.freq, stri = lv.stride, ker = lv.kernel, pad = lv.pad,
                  last_freq = lv.last_freq;
        if (last_freq) dmx__hybrid_merge_channels(&chout, &chout_z);
        layer_args ea = {chin_z, chout_z,     ker,        stri,        freq,           pad,
                         norm,   norm_groups, rewrite,    context_enc, dconv_mode & 1, 0,
                         0,      dconv_comp,  dconv_depth};
        snprintf(prefix, sizeof prefix, "encoder.%d", index);
        bind_enc(b, &m->enc[index], &ea, prefix);
        if (freq) {
            layer_args ta = {chin,    chout,       kernel_size,    stride,
                             0,       1,           norm,           norm_groups,
                             rewrite, context_enc, dconv_mode & 1, last_freq,
                             0,       dconv_comp,  dconv_depth};
            snprintf(prefix, sizeof prefix, "tencoder.%d", index);
            bind_enc(b, &m->tenc[index], &ta, prefix);
            m->n_tenc = index + 1;
        }
        if (index == 0) {
            chin = A * S;
            chin_z = nz * chin;
        }
        /* decoders are stored in execution order: decoder.0 is the deepest */
        int di = m->depth - 1 - index;
        layer_args da = {chout_z,    chin_z,      ker,        stri,    freq,           pad,
                         norm,       norm_groups, rewrite,    context, dconv_mode & 2, 0,
                         index == 0, dconv_comp,  dconv_depth};
        snprintf(prefix, sizeof prefix, "decoder.%d", di);
        bind_dec(b, &m->dec[di], &da, prefix);
        chin = chout;
        chin_z = chout_z;
        chout = growth * chout;
        chout_z = growth * chout_z;
        if (freq) {
            if (freqs <= kernel_size)
                freqs = 1;
            else
                freqs /= stride;
        }
        if (index == 0 && freq_emb != 0.0) {
            m->freq_emb_rows = freqs;
            m->freq_emb_dim = chin_z;
            m->freq_emb_scale = (float)freq_emb;
            m->emb_scale = (float)emb_scale;
            m->freq_emb = bind(b, 2, "freq_emb.embedding.weight", I64(freqs), I64(chin_z));
        }
        if (b->st != DMX_OK) goto fail;
    }
    m->n_enc = m->depth;
    /* Second pass for the time decoders, whose module index counts from the
     * deepest time layer. */
    {
        int nt = m->n_tenc;
        int c_in = A, c_out = channels_time ? channels_time : channels, c_outz = channels;
        int fr = m->nfft / 2;
        for (int index = 0; index < nt; index++) {
            int norm = index >= norm_starts;
            int last_freq = fr <= kernel_size;
            if (last_freq) {
                c_outz = c_outz > c_out ? c_outz : c_out;
                c_out = c_outz;
            }
            if (index == 0) c_in = A * S;
            layer_args tda = {c_out,      c_in,       kernel_size,    stride,
                              0,          1,          norm,           norm_groups,
                              rewrite,    context,    dconv_mode & 2, last_freq,
                              index == 0, dconv_comp, dconv_depth};
            int di = nt - 1 - index;
            snprintf(prefix, sizeof prefix, "tdecoder.%d", di);
            bind_dec(b, &m->tdec[di], &tda, prefix);
            c_in = c_out;
            c_out = growth * c_out;
            c_outz = growth * c_outz;
            fr = fr <= kernel_size ? 1 : fr / stride;
        }
        if (b->st != DMX_OK) goto fail;
    }

    /* --- transformer --- */
    int tc = channels;
    for (int i = 0; i < m->depth - 1; i++) tc *= growth;
    m->transformer_channels = tc;
    if (m->bottom_channels) {
        int bc = m->bottom_channels;
        dmx__conv_geom gu = geom(tc, bc, 1, 1, 1, 1, 0, 0, 1, 1);
        dmx__conv_geom gd = geom(bc, tc, 1, 1, 1, 1, 0, 0, 1, 1);
        bind_conv(b, &m->up, &gu, 0, 0, "channel_upsampler");
        bind_conv(b, &m->down, &gd, 0, 0, "channel_downsampler");
        bind_conv(b, &m->up_t, &gu, 0, 0, "channel_upsampler_t");
        bind_conv(b, &m->down_t, &gd, 0, 0, "channel_downsampler_t");
        tc = bc;
    }
    if (t_layers > 0) {
        dmx__xformer *xf = &m->xf;
        m->has_xformer = 1;
        if (tc % t_heads != 0 || tc % 4 != 0) {
            b->st = dmx__fail(DMX_ERR_MODEL,
                              "transformer width %d must be divisible by t_heads=%d and by 4", tc,
                              t_heads);
            goto fail;
        }
        xf->dim = tc;
        xf->heads = t_heads;
        xf->hidden = (int)(tc * t_hidden_scale);
        xf->n_layers = t_layers;
        xf->cross_first = t_cross_first;
        xf->norm_first = t_norm_first;
        xf->gelu = t_gelu;
        xf->group_norm = t_group_norm;
        xf->emb_cape = strcmp(t_emb, "cape") == 0;
        xf->emb_scaled = strcmp(t_emb, "scaled") == 0;
        if (xf->emb_scaled) {
            int64_t maxpos = kw_int(b, "t_max_positions", 10000);
            if (b->st != DMX_OK) goto fail;
            if (maxpos < 1 || maxpos > (1 << 24)) {
                b->st = dmx__fail(DMX_ERR_MODEL, "checkpoint kwarg 't_max_positions' is %lld",
                                  (long long)maxpos);
                goto fail;
            }
            xf->pos_emb_rows = (int)maxpos;
            xf->pos_emb = bind(b, 2, "crosstransformer.position_embeddings.embedding.weight",
                               maxpos, I64(tc));
        }
        xf->cape_mean_normalize = t_cape_mean_normalize;
        xf->max_period = (float)t_max_period;
        xf->weight_pos_embed = (float)t_weight_pos_embed;
        if (t_norm_in) {
            xf->norm_in = 1;
            bind_norm(b, &xf->norm_in_x, 1, tc, "crosstransformer.norm_in");
            bind_norm(b, &xf->norm_in_t, 1, tc, "crosstransformer.norm_in_t");
        } else if (t_norm_in_group) {
            xf->norm_in = 2;
            bind_norm(b, &xf->norm_in_x, t_norm_in_group, tc, "crosstransformer.norm_in");
            bind_norm(b, &xf->norm_in_t, t_norm_in_group, tc, "crosstransformer.norm_in_t");
        }
        xf->lx = calloc((size_t)t_layers, sizeof *xf->lx);
        xf->lt = calloc((size_t)t_layers, sizeof *xf->lt);
        if (!xf->lx || !xf->lt) {
            b->st = dmx__fail(DMX_ERR_NOMEM, "out of memory building the transformer");
            goto fail;
        }
        int parity = t_cross_first ? 1 : 0;
        for (int i = 0; i < t_layers; i++) {
            int cross = (i % 2) != parity;
            snprintf(prefix, sizeof prefix, "crosstransformer.layers.%d", i);
            bind_tlayer(b, &xf->lx[i], xf, cross, t_norm_out, t_layer_scale, prefix);
            snprintf(prefix, sizeof prefix, "crosstransformer.layers_t.%d", i);
            bind_tlayer(b, &xf->lt[i], xf, cross, t_norm_out, t_layer_scale, prefix);
        }
        if (b->st != DMX_OK) goto fail;
    }

    /* every state tensor must have been consumed */
    for (size_t i = 0; i < dmx__ckpt_n_tensors(ck); i++) {
        if (!b->used[i]) {
            const dmx__tensor *t = dmx__ckpt_tensor_at(ck, i);
            b->st = dmx__fail(DMX_ERR_MODEL,
                              "unexpected tensor '%s' (not part of the architecture the "
                              "checkpoint's kwargs describe)",
                              t->name);
            goto fail;
        }
    }
    m->n_params = b->n_params;
    m->stft = dmx__stft_new(m->nfft);
    if (!m->stft) {
        b->st = dmx__fail(DMX_ERR_NOMEM, "cannot create FFT plans for nfft=%d", m->nfft);
        goto fail;
    }
    free(b->used);
    *out = m;
    return DMX_OK;
fail:
    free(b->used);
    dmx__htdemucs_free(m);
    return b->st;
}

void dmx__htdemucs_free(dmx__htdemucs *m) {
    if (!m) return;
    free(m->xf.lx);
    free(m->xf.lt);
    dmx__stft_free(m->stft);
    dmx__ckpt_free(m->ck);
    free(m);
}

/* ------------------------------------------------------- the family's vt */

static dmx_status vt_build(dmx__ckpt *ck, void **out) {
    dmx__htdemucs *m = NULL;
    dmx_status st = dmx__htdemucs_build(ck, &m);
    *out = m;
    return st;
}

static void vt_free(void *net) { dmx__htdemucs_free(net); }

static void vt_describe(const void *net, dmx__net_desc *d) {
    const dmx__htdemucs *m = net;
    memset(d, 0, sizeof *d);
    d->n_sources = m->n_sources;
    for (int s = 0; s < m->n_sources; s++) d->sources[s] = m->sources[s];
    d->audio_channels = m->audio_channels;
    d->samplerate = m->samplerate;
    d->seg_num = m->seg_num;
    d->seg_den = m->seg_den;
    d->segment = m->segment;
    d->training_length = m->training_length;
    d->use_train_segment = m->use_train_segment;
    d->fixed_segment = 1; /* upstream's isinstance(model, HTDemucs) rules */
    /* the transformer's random.randrange(sin_random_shift + 1) per pass,
     * made for t_emb='sin' only */
    d->rand_draws_per_forward = m->has_xformer && !m->xf.emb_cape && !m->xf.emb_scaled;
    d->n_params = m->n_params;
}

/* HTDemucs.valid_length: the training length, or the chunk's own length
 * when use_train_segment is off. A chunk longer than the training length
 * gets the training length back, which apply.c rejects (upstream raises). */
static int64_t vt_valid_length(const void *net, int64_t length) {
    const dmx__htdemucs *m = net;
    return m->use_train_segment ? m->training_length : length;
}

static dmx_status vt_forward(const void *net, dmx__arena *ar, const float *mix, int len, float *out,
                             dmx__tap_fn tap, void *tap_user) {
    return dmx__htdemucs_forward(net, ar, mix, len, out, tap, tap_user);
}

const dmx__net_vt dmx__htdemucs_vt = {"htdemucs",  vt_build,        vt_free,
                                      vt_describe, vt_valid_length, vt_forward};
