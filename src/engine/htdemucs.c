/*
 * htdemucs.c - HTDemucs: building the network from a checkpoint and running
 * one segment through it. Mirrors upstream's htdemucs.py/hdemucs.py; the
 * transformer lives in transformer.c.
 *
 * Layout of activations (batch 1): frequency branch (C, F, T) with F the
 * frequency bins and T the STFT frames; time branch (C, T) which is the same
 * as (C, 1, T). Every layer is expressed as a 2D convolution over (C, H, W)
 * with H = frequency, W = time.
 */
#include "htdemucs.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

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
static void bind_conv(builder *b, dmx__conv *c, const dmx__conv_geom *g, int transposed,
                      int conv2d, const char *fmt, ...) {
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
    dmx__conv_geom g = a->freq ? geom(a->chin, a->chout, a->kernel, 1, a->stride, 1, L->pad, 0, 1, 1)
                               : geom(a->chin, a->chout, 1, a->kernel, 1, a->stride, 0, L->pad, 1, 1);
    bind_conv(b, &L->conv, &g, 0, a->freq, "%s.conv", prefix);
    if (a->empty) return;
    int groups = a->norm ? a->norm_groups : 0;
    bind_norm(b, &L->norm1, groups, a->chout, "%s.norm1", prefix);
    if (a->rewrite) {
        int k = 1 + 2 * a->context;
        dmx__conv_geom gr = a->freq ? geom(a->chout, 2 * a->chout, k, k, 1, 1, a->context, a->context, 1, 1)
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
        dmx__conv_geom gr = a->freq ? geom(a->chin, 2 * a->chin, k, k, 1, 1, a->context, a->context, 1, 1)
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

static void bind_tlayer(builder *b, dmx__tlayer *L, const dmx__xformer *xf, int cross,
                        int norm_out, int layer_scale, const char *prefix) {
    char name[200];
    int d = xf->dim;
    L->cross = cross;
    const char *attn = cross ? "cross_attn" : "self_attn";
#define BIND1(field, suffix, n0) \
    (snprintf(name, sizeof name, "%s.%s", prefix, suffix), L->field = bind(b, 1, name, I64(n0)))
#define BIND2(field, suffix, n0, n1) \
    (snprintf(name, sizeof name, "%s.%s", prefix, suffix), L->field = bind(b, 2, name, I64(n0), I64(n1)))
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
    const char *klass = dmx__ckpt_klass(ck);
    if (!klass || strcmp(klass, "demucs.htdemucs.HTDemucs") != 0) {
        dmx_status s = dmx__fail(DMX_ERR_UNSUPPORTED,
                                 "model class '%s' is not supported (demix runs demucs.htdemucs.HTDemucs)",
                                 klass ? klass : "?");
        dmx__ckpt_free(ck);
        return s;
    }
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
        b->st = s == DMX_ERR_NOT_FOUND ? dmx__fail(DMX_ERR_MODEL, "checkpoint kwargs lack 'sources'") : s;
        goto fail;
    }
    if (ns == 0 || ns > DMX__MAX_SOURCES) {
        b->st = dmx__fail(DMX_ERR_MODEL, "checkpoint kwarg 'sources' has %zu entries (1..%d supported)",
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
    int wiener_iters = (int)kw_int(b, "wiener_iters", 0);
    int cac = kw_bool(b, "cac", 1);
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
            unsupported_kw(b, "multi_freqs", "frequency band splitting (MultiWrap) is not supported");
            goto fail;
        }
    }
    if (!cac) { unsupported_kw(b, "cac", "only complex-as-channels models (cac=True) are supported"); goto fail; }
    (void)wiener_iters;
    if (strcmp(t_emb, "sin") != 0 && strcmp(t_emb, "cape") != 0) {
        unsupported_kw(b, "t_emb", "only 'sin' and 'cape' position embeddings are supported");
        goto fail;
    }
    if (t_sparse_self || t_sparse_cross) { unsupported_kw(b, "t_sparse_self_attn", "sparse attention is not supported"); goto fail; }
    if (t_sin_random_shift) { unsupported_kw(b, "t_sin_random_shift", "random embedding shifts at inference are not supported"); goto fail; }
    if (m->depth < 1 || m->depth > DMX__MAX_DEPTH || channels < 1 || growth < 1 || kernel_size < 1 ||
        stride < 1 || time_stride < 1 || m->nfft < 16 || (m->nfft & (m->nfft - 1)) != 0 ||
        m->audio_channels < 1 || m->audio_channels > 8 || dconv_depth < 0 || dconv_depth > 4 ||
        dconv_comp <= 0 || m->samplerate < 1000 || m->samplerate > 384000 || segment <= 0 ||
        segment > 3600 || context < 0 || context_enc < 0 || norm_groups < 1 || t_layers < 0 ||
        t_heads < 1) {
        b->st = dmx__fail(DMX_ERR_MODEL, "checkpoint kwargs describe an invalid or unsupported geometry");
        goto fail;
    }
    m->hop = m->nfft / 4;
    {
        /* segment as an exact fraction when it is one (Fraction(39, 5)) */
        m->segment = segment;
        m->training_length = (int)floor(segment * m->samplerate + 1e-9);
    }

    /* --- encoder / decoder geometry, exactly as HTDemucs.__init__ --- */
    int S = m->n_sources, A = m->audio_channels;
    int chin = A, chin_z = 2 * A;
    int chout = channels_time ? channels_time : channels, chout_z = channels;
    int freqs = m->nfft / 2;
    char prefix[64];
    for (int index = 0; index < m->depth; index++) {
        int norm = index >= norm_starts;
        int freq = freqs > 1;
        int stri = stride, ker = kernel_size;
        if (!freq) {
            ker = time_stride * 2;
            stri = time_stride;
        }
        int pad = 1, last_freq = 0;
        if (freq && freqs <= kernel_size) {
            ker = freqs;
            pad = 0;
            last_freq = 1;
        }
        if (last_freq) {
            chout_z = chout_z > chout ? chout_z : chout;
            chout = chout_z;
        }
        layer_args ea = {chin_z, chout_z, ker, stri, freq, pad, norm, norm_groups, rewrite,
                         context_enc, dconv_mode & 1, 0, 0, dconv_comp, dconv_depth};
        snprintf(prefix, sizeof prefix, "encoder.%d", index);
        bind_enc(b, &m->enc[index], &ea, prefix);
        if (freq) {
            layer_args ta = {chin, chout, kernel_size, stride, 0, 1, norm, norm_groups, rewrite,
                             context_enc, dconv_mode & 1, last_freq, 0, dconv_comp, dconv_depth};
            snprintf(prefix, sizeof prefix, "tencoder.%d", index);
            bind_enc(b, &m->tenc[index], &ta, prefix);
            m->n_tenc = index + 1;
        }
        if (index == 0) {
            chin = A * S;
            chin_z = 2 * chin;
        }
        /* decoders are stored in execution order: decoder.0 is the deepest */
        int di = m->depth - 1 - index;
        layer_args da = {chout_z, chin_z, ker, stri, freq, pad, norm, norm_groups, rewrite,
                         context, dconv_mode & 2, 0, index == 0, dconv_comp, dconv_depth};
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
            layer_args tda = {c_out, c_in, kernel_size, stride, 0, 1, norm, norm_groups, rewrite,
                              context, dconv_mode & 2, last_freq, index == 0, dconv_comp, dconv_depth};
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
            b->st = dmx__fail(DMX_ERR_MODEL, "transformer width %d must be divisible by t_heads=%d and by 4", tc, t_heads);
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
                              "unexpected tensor '%s' (not part of the architecture the checkpoint's kwargs describe)",
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

/* ----------------------------------------------------------------- forward */

#define NOMEM() dmx__fail(DMX_ERR_NOMEM, "out of memory in the HTDemucs forward pass")

/* DConv residual branch on y (C, rows, T) in place; each of the `rows`
 * frequency rows is an independent sequence, as upstream folds F into the
 * batch. The 2C-channel half of each layer (1x1 conv, per-row GroupNorm,
 * GLU, LayerScale, residual add) runs a block of rows at a time, so its
 * activations never exist for the whole image. */
static dmx_status dconv_forward(const dmx__dconv *d, dmx__arena *ar, float *y, int rows, int T) {
    const int C = d->channels, Hd = d->hidden;
    const size_t plane = (size_t)rows * T;
    const size_t budget = (size_t)1 << 20; /* floats of 2C-channel scratch */
    int rb = (int)(budget / ((size_t)2 * C * T));
    if (rb < 1) rb = 1;
    if (rb > rows) rb = rows;
    /* Rows longer than the budget (time layers: one row of many thousand
     * steps) go in column blocks, in two passes: GroupNorm(1) needs the
     * whole row's statistics, and recomputing the small 1x1 product is
     * cheaper than holding the row's 2C channels. */
    int cb = T;
    if ((size_t)2 * C * T > budget) {
        cb = (int)(budget / ((size_t)2 * C)) / 64 * 64;
        if (cb < 64) cb = 64;
        if (cb > T) cb = T;
    }
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *h = dmx__arena_floats(ar, (size_t)Hd * plane);
    float *h2 = dmx__arena_floats(ar, (size_t)2 * C * rb * cb);
    if (!h || !h2) return NOMEM();
    for (int i = 0; i < d->depth; i++) {
        const dmx__dconv_layer *L = &d->layers[i];
        if (dmx__conv2d(ar, &L->conv1.g, y, rows, T, L->conv1.w, L->conv1.b, h)) return NOMEM();
        dmx__group_norm(h, Hd, rows, T, 1, L->norm1.w, L->norm1.b, 1e-5f);
        dmx__gelu(h, (size_t)Hd * plane);
        if (cb == T) {
            for (int r0 = 0; r0 < rows; r0 += rb) {
                int nr = rows - r0 < rb ? rows - r0 : rb;
                int n = nr * T;
                /* 1x1 conv on the rows [r0, r0 + nr): columns of h with stride `plane` */
                dmx__sgemm(0, 0, 2 * C, n, Hd, 1.0f, L->conv2.w, Hd, h + (size_t)r0 * T, (int)plane, 0.0f,
                           h2, n);
                dmx__add_bias(h2, L->conv2.b, 2 * C, (size_t)n);
                dmx__group_norm(h2, 2 * C, nr, T, 1, L->norm2.w, L->norm2.b, 1e-5f);
                dmx__glu(h2, h2, 2 * C, (size_t)n);
                for (int c = 0; c < C; c++) {
                    float sc = L->scale[c];
                    float *yc = y + (size_t)c * plane + (size_t)r0 * T;
                    const float *gc = h2 + (size_t)c * n;
                    for (int q = 0; q < n; q++) yc[q] += sc * gc[q];
                }
            }
            continue;
        }
        for (int r = 0; r < rows; r++) {
            const float *hr = h + (size_t)r * T;
            double s = 0, s2 = 0;
            for (int pass = 0; pass < 2; pass++) {
                float mean = 0, rstd = 0;
                if (pass == 1) {
                    double cnt = 2.0 * C * T, mu = s / cnt, var = s2 / cnt - mu * mu;
                    mean = (float)mu;
                    rstd = (float)(1.0 / sqrt((var > 0 ? var : 0) + 1e-5));
                }
                for (int t0 = 0; t0 < T; t0 += cb) {
                    int n = T - t0 < cb ? T - t0 : cb;
                    dmx__sgemm(0, 0, 2 * C, n, Hd, 1.0f, L->conv2.w, Hd, hr + t0, (int)plane, 0.0f, h2, n);
                    dmx__add_bias(h2, L->conv2.b, 2 * C, (size_t)n);
                    if (pass == 0) {
                        for (int c = 0; c < 2 * C; c++) {
                            const float *p = h2 + (size_t)c * n;
                            double a = 0, a2 = 0;
                            for (int q = 0; q < n; q++) {
                                a += p[q];
                                a2 += (double)p[q] * p[q];
                            }
                            s += a;
                            s2 += a2;
                        }
                        continue;
                    }
                    for (int c = 0; c < 2 * C; c++) {
                        float *p = h2 + (size_t)c * n;
                        float sc = rstd * (L->norm2.w ? L->norm2.w[c] : 1.0f);
                        float be = L->norm2.b ? L->norm2.b[c] : 0.0f;
                        for (int q = 0; q < n; q++) p[q] = (p[q] - mean) * sc + be;
                    }
                    dmx__glu(h2, h2, 2 * C, (size_t)n);
                    for (int c = 0; c < C; c++) {
                        float sc = L->scale[c];
                        float *yc = y + (size_t)c * plane + (size_t)r * T + t0;
                        const float *gc = h2 + (size_t)c * n;
                        for (int q = 0; q < n; q++) yc[q] += sc * gc[q];
                    }
                }
            }
        }
    }
    dmx__arena_restore(ar, mk);
    return DMX_OK;
}

static void norm_image(float *x, int C, size_t L, const dmx__norm *n) {
    if (n->groups) dmx__group_norm(x, C, 1, (int)L, n->groups, n->w, n->b, 1e-5f);
}

/* y (C/2 of conv's cout, H, W) = GLU(norm(conv(x))): fused in column blocks
 * when there is no norm (every released model), else through a full buffer
 * because GroupNorm needs the whole tensor's statistics. */
static int rewrite_glu(const dmx__conv *cv, const dmx__norm *n, dmx__arena *ar, const float *x, int H,
                       int W, float *y) {
    if (!n->groups) return dmx__conv2d_glu(ar, &cv->g, x, H, W, cv->w, cv->b, y);
    size_t plane = (size_t)H * W;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *r = dmx__arena_floats(ar, (size_t)cv->g.cout * plane);
    if (!r || dmx__conv2d(ar, &cv->g, x, H, W, cv->w, cv->b, r)) return -1;
    norm_image(r, cv->g.cout, plane, n);
    dmx__glu(r, y, cv->g.cout, plane);
    dmx__arena_restore(ar, mk);
    return 0;
}

/* HEncLayer.forward. x (chin, H, W); inject (chout, Wo) or NULL.
 * Allocates the result (chout, *Ho, *Wo) from the arena (it outlives the
 * layer's scratch) and returns it, or NULL when out of memory. */
static float *enc_forward(const dmx__hlayer *L, dmx__arena *ar, const float *x, int H, int W,
                          const float *inject, int *Ho, int *Wo) {
    const dmx__conv_geom *g = &L->conv.g;
    int Wp = W;
    if (!L->freq && W % L->stride) Wp = W + L->stride - W % L->stride;
    int ho = dmx__conv_out(H, g->kh, g->sh, g->ph, g->dh);
    int wo = dmx__conv_out(Wp, g->kw, g->sw, g->pw, g->dw);
    size_t plane = (size_t)ho * wo;
    float *y = dmx__arena_floats(ar, (size_t)L->chout * plane);
    if (!y) return NULL;
    *Ho = ho;
    *Wo = wo;
    dmx__arena_mark mk = dmx__arena_save(ar);
    const float *xin = x;
    if (Wp != W) {
        /* time layers zero-pad to a multiple of the stride */
        float *xp = dmx__arena_floats(ar, (size_t)L->chin * H * Wp);
        if (!xp) return NULL;
        for (int c = 0; c < L->chin * H; c++) {
            memcpy(xp + (size_t)c * Wp, x + (size_t)c * W, sizeof(float) * W);
            memset(xp + (size_t)c * Wp + W, 0, sizeof(float) * (Wp - W));
        }
        xin = xp;
    }
    /* The convolution and DConv work in a scratch image; the rewrite + GLU
     * then writes the layer's output. */
    float *c = (L->empty || !L->has_rewrite) ? y : dmx__arena_floats(ar, (size_t)L->chout * plane);
    if (!c || dmx__conv2d(ar, g, xin, H, Wp, L->conv.w, L->conv.b, c)) return NULL;
    if (L->empty) {
        dmx__arena_restore(ar, mk);
        return y;
    }
    if (inject) {
        for (int ch = 0; ch < L->chout; ch++)
            for (int f = 0; f < ho; f++) dmx__add(c + ((size_t)ch * ho + f) * wo, inject + (size_t)ch * wo, wo);
    }
    norm_image(c, L->chout, plane, &L->norm1);
    dmx__gelu(c, (size_t)L->chout * plane);
    if (L->has_dconv && dconv_forward(&L->dconv, ar, c, ho, wo) != DMX_OK) return NULL;
    if (L->has_rewrite && rewrite_glu(&L->rewrite, &L->norm2, ar, c, ho, wo, y)) return NULL;
    dmx__arena_restore(ar, mk);
    return y;
}

/* A decoder layer up to its transposed convolution: the skip added into x,
 * rewrite + GLU into y (when y is NULL, into the skip's buffer, dead once
 * added), then DConv. Returns the transposed convolution's input, or NULL
 * when out of memory. */
static float *dec_body(const dmx__hlayer *L, dmx__arena *ar, float *x, int H, int W, const float *skip,
                       float *y) {
    const size_t n = (size_t)L->chin * H * W;
    if (L->empty) return x;
    dmx__add(x, skip, n);
    if (L->has_rewrite) {
        if (!y) y = skip ? (float *)skip : dmx__arena_floats(ar, n);
        if (!y || rewrite_glu(&L->rewrite, &L->norm1, ar, x, H, W, y)) return NULL;
    } else {
        y = x;
    }
    if (L->has_dconv && dconv_forward(&L->dconv, ar, y, H, W) != DMX_OK) return NULL;
    return y;
}

/* HDecLayer.forward. x (chin, H, W) is modified (skip added). Returns the
 * output (chout, *Ho, *Wo) allocated from the arena; *pre receives the
 * input of the transposed convolution (arena memory as well) when not NULL. */
static float *dec_forward(const dmx__hlayer *L, dmx__arena *ar, float *x, int H, int W,
                          const float *skip, int length, int *Ho, int *Wo, float **pre) {
    const dmx__conv_geom *g = &L->conv.g;
    int hf = (H - 1) * g->sh + g->kh, wf = (W - 1) * g->sw + g->kw; /* untrimmed */
    int ho = hf, wo = wf;
    if (L->freq) ho = hf - 2 * L->pad;
    else wo = length;
    size_t plane_in = (size_t)H * W;
    /* The transposed convolution writes the untrimmed output here and the
     * trim compacts it in place, so the layer's output needs one buffer. */
    size_t zsize = (size_t)L->chout * hf * wf;
    if ((size_t)L->chout * ho * wo > zsize) zsize = (size_t)L->chout * ho * wo;
    float *z = dmx__arena_floats(ar, zsize);
    if (!z) return NULL;
    float *kept = NULL; /* the transposed convolution's input, when asked for */
    if (pre && !L->empty && L->has_rewrite && !(kept = dmx__arena_floats(ar, (size_t)L->chin * plane_in)))
        return NULL;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *y = dec_body(L, ar, x, H, W, skip, kept);
    if (!y || dmx__conv_tr2d(ar, g, y, H, W, L->conv.w, L->conv.b, z)) return NULL;
    norm_image(z, L->chout, (size_t)hf * wf, &L->norm2);
    for (int c = 0; c < L->chout; c++) {
        /* destination offsets never pass their sources: compact forward */
        if (L->freq) {
            memmove(z + (size_t)c * ho * wo, z + ((size_t)c * hf + L->pad) * wf, sizeof(float) * (size_t)ho * wo);
        } else {
            /* time: keep [pad, pad + length) (H == 1) */
            int avail = wf - L->pad;
            int n = length < avail ? length : avail;
            memmove(z + (size_t)c * wo, z + (size_t)c * wf + L->pad, sizeof(float) * n);
            if (n < length) memset(z + (size_t)c * wo + n, 0, sizeof(float) * (length - n));
        }
    }
    if (!L->last) dmx__gelu(z, (size_t)L->chout * ho * wo);
    dmx__arena_restore(ar, mk);
    *Ho = ho;
    *Wo = wo;
    if (pre) *pre = y;
    return z;
}

/* The last frequency decoder straight to waveforms, one source at a time:
 * its untrimmed output for every source is the largest tensor of the pass,
 * while one source's spectrogram can go through the iSTFT alone. Same
 * computation as dec_forward + de-normalisation + dmx__ispec (needs a
 * layer without GroupNorm after the transposed convolution, as released
 * models have). wav (sources, audio channels, TL) receives the result. */
static int dec_last_to_wave(const dmx__htdemucs *m, const dmx__hlayer *L, dmx__arena *ar, float *x,
                            int H, int W, const float *skip, float mean, float std, int TL, float *wav) {
    const dmx__conv_geom *g = &L->conv.g;
    const int S = m->n_sources, A = m->audio_channels, cs = L->chout / S;
    const int hf = (H - 1) * g->sh + g->kh, wf = (W - 1) * g->sw + g->kw, ho = hf - 2 * L->pad;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *y = dec_body(L, ar, x, H, W, skip, NULL);
    if (!y) return -1;
    dmx__conv_geom gs = *g;
    gs.cout = cs;
    float *z = dmx__arena_floats(ar, (size_t)cs * hf * wf);
    if (!z) return -1;
    for (int s = 0; s < S; s++) {
        const float *b = L->conv.b ? L->conv.b + (size_t)s * cs : NULL;
        if (dmx__conv_tr2d_ld(ar, &gs, y, H, W, L->conv.w + (size_t)s * cs * g->kh * g->kw,
                              g->cout * g->kh * g->kw, b, z))
            return -1;
        for (int c = 0; c < cs; c++) /* trim the frequency padding in place */
            memmove(z + (size_t)c * ho * wf, z + ((size_t)c * hf + L->pad) * wf, sizeof(float) * (size_t)ho * wf);
        size_t n = (size_t)cs * ho * wf;
        for (size_t i = 0; i < n; i++) z[i] = z[i] * std + mean;
        if (dmx__ispec(m->stft, ar, z, A, wf, TL, wav + (size_t)s * A * TL)) return -1;
    }
    dmx__arena_restore(ar, mk);
    return 0;
}

static void mean_std(const float *x, size_t n, float *mean, float *std) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double mu = s / n, v = 0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - mu;
        v += d * d;
    }
    *mean = (float)mu;
    *std = (float)sqrt(v / (n > 1 ? n - 1 : 1)); /* torch.std is unbiased */
}

#define TAP(name, p, c, h, w) \
    do { if (tap) tap(tap_user, name, p, c, h, w); } while (0)

dmx_status dmx__htdemucs_forward(const dmx__htdemucs *m, dmx__arena *ar, const float *mix,
                                 int len, float *out, dmx__tap_fn tap, void *tap_user) {
    const int A = m->audio_channels, S = m->n_sources;
    const int TL = m->use_train_segment ? m->training_length : len;
    if (len < 1 || len > TL)
        return dmx__fail(DMX_ERR_INVALID_ARG, "segment of %d samples exceeds the model's %d", len, TL);
    dmx__arena_mark top = dmx__arena_save(ar);
    dmx_status st = DMX_OK;
    char name[32];
    const int nb = m->nfft / 2;
    const int le = dmx__spec_frames(m->stft, TL);

    /* zero-padded mix (A, TL) */
    float *mixp = dmx__arena_floats(ar, (size_t)A * TL);
    float *x = dmx__arena_floats(ar, (size_t)2 * A * nb * le);
    float *xt = dmx__arena_floats(ar, (size_t)A * TL);
    if (!mixp || !x || !xt) { st = NOMEM(); goto done; }
    for (int c = 0; c < A; c++) {
        memcpy(mixp + (size_t)c * TL, mix + (size_t)c * len, sizeof(float) * len);
        memset(mixp + (size_t)c * TL + len, 0, sizeof(float) * (TL - len));
    }
    if (dmx__spec(m->stft, ar, mixp, A, TL, x)) { st = NOMEM(); goto done; }
    TAP("spec", x, 2 * A, nb, le);
    float mean, std, meant, stdt;
    size_t nx = (size_t)2 * A * nb * le;
    mean_std(x, nx, &mean, &std);
    {
        float den = 1e-5f + std;
        for (size_t i = 0; i < nx; i++) x[i] = (x[i] - mean) / den;
    }
    mean_std(mixp, (size_t)A * TL, &meant, &stdt);
    {
        float den = 1e-5f + stdt;
        for (size_t i = 0; i < (size_t)A * TL; i++) xt[i] = (mixp[i] - meant) / den;
    }

    float *saved[DMX__MAX_DEPTH], *saved_t[DMX__MAX_DEPTH];
    int sF[DMX__MAX_DEPTH], sT[DMX__MAX_DEPTH], stT[DMX__MAX_DEPTH], lengths_t[DMX__MAX_DEPTH];
    int n_saved = 0, n_saved_t = 0, n_len_t = 0;
    int F = nb, T = le, Tt = TL;
    /* emark[i]: the arena just after encoder i's outputs (the skips) */
    dmx__arena_mark emark[DMX__MAX_DEPTH + 1];
    dmx__arena_mark base_mark = dmx__arena_save(ar);
    for (int idx = 0; idx < m->n_enc; idx++) {
        const float *inject = NULL;
        if (idx < m->n_tenc) {
            const dmx__hlayer *tl = &m->tenc[idx];
            lengths_t[n_len_t++] = Tt;
            int h1, w1;
            float *nxt = enc_forward(tl, ar, xt, 1, Tt, NULL, &h1, &w1);
            if (!nxt) { st = NOMEM(); goto done; }
            xt = nxt;
            Tt = w1;
            snprintf(name, sizeof name, "tencoder%d", idx);
            TAP(name, xt, tl->chout, 1, Tt);
            if (!tl->empty) {
                stT[n_saved_t] = Tt;
                saved_t[n_saved_t++] = xt;
            } else {
                inject = xt;
            }
        }
        const dmx__hlayer *el = &m->enc[idx];
        int h2, w2;
        float *nx2 = enc_forward(el, ar, x, F, T, inject, &h2, &w2);
        if (!nx2) { st = NOMEM(); goto done; }
        x = nx2;
        F = h2;
        T = w2;
        snprintf(name, sizeof name, "encoder%d", idx);
        TAP(name, x, el->chout, F, T);
        if (idx == 0 && m->freq_emb) {
            for (int c = 0; c < el->chout; c++)
                for (int f = 0; f < F; f++) {
                    float e = m->freq_emb_scale * (m->freq_emb[(size_t)f * m->freq_emb_dim + c] * m->emb_scale);
                    float *row = x + ((size_t)c * F + f) * T;
                    for (int t = 0; t < T; t++) row[t] += e;
                }
        }
        if (idx == 0 && n_saved_t == 1) {
            /* The padded mix, its spectrogram and the normalised waveform
             * are dead now: move the first skips down over them (when they
             * share one block, so the moves only go down). */
            dmx__arena_mark keep = dmx__arena_save(ar);
            size_t nts = (size_t)m->tenc[0].chout * Tt, nxs = (size_t)el->chout * F * T;
            dmx__arena_restore(ar, top);
            float *nt = top.cur == keep.cur ? dmx__arena_floats(ar, nts) : NULL;
            float *nx = nt ? dmx__arena_floats(ar, nxs) : NULL;
            if (nx && ar->cur == keep.cur && nt <= xt && nx <= x) {
                memmove(nt, xt, sizeof(float) * nts);
                memmove(nx, x, sizeof(float) * nxs);
                xt = saved_t[0] = nt;
                x = nx;
                base_mark = top;
            } else {
                dmx__arena_restore(ar, keep);
            }
        }
        emark[idx] = dmx__arena_save(ar);
        sF[n_saved] = F;
        sT[n_saved] = T;
        saved[n_saved++] = x;
    }

    int C = m->enc[m->n_enc - 1].chout;
    if (m->has_xformer) {
        float *xb = x, *xtb = xt;
        int Ct = C;
        if (m->bottom_channels) {
            Ct = m->bottom_channels;
            xb = dmx__arena_floats(ar, (size_t)Ct * F * T);
            xtb = dmx__arena_floats(ar, (size_t)Ct * Tt);
            if (!xb || !xtb || dmx__conv2d(ar, &m->up.g, x, 1, F * T, m->up.w, m->up.b, xb) ||
                dmx__conv2d(ar, &m->up_t.g, xt, 1, Tt, m->up_t.w, m->up_t.b, xtb)) { st = NOMEM(); goto done; }
        } else {
            /* the encoder outputs are skips: the transformer works on copies */
            xb = dmx__arena_floats(ar, (size_t)Ct * F * T);
            xtb = dmx__arena_floats(ar, (size_t)Ct * Tt);
            if (!xb || !xtb) { st = NOMEM(); goto done; }
            memcpy(xb, x, sizeof(float) * Ct * F * T);
            memcpy(xtb, xt, sizeof(float) * Ct * Tt);
        }
        st = dmx__xformer_forward(&m->xf, ar, xb, F, T, xtb, Tt);
        if (st != DMX_OK) goto done;
        TAP("crosstransformer", xb, Ct, F, T);
        TAP("crosstransformer_t", xtb, Ct, 1, Tt);
        if (m->bottom_channels) {
            x = dmx__arena_floats(ar, (size_t)C * F * T);
            xt = dmx__arena_floats(ar, (size_t)C * Tt);
            if (!x || !xt || dmx__conv2d(ar, &m->down.g, xb, 1, F * T, m->down.w, m->down.b, x) ||
                dmx__conv2d(ar, &m->down_t.g, xtb, 1, Tt, m->down_t.w, m->down_t.b, xt)) { st = NOMEM(); goto done; }
        } else {
            x = xb;
            xt = xtb;
        }
    } else {
        /* decoders add skips into their input in place: work on copies */
        float *xc = dmx__arena_floats(ar, (size_t)C * F * T);
        float *xtc = dmx__arena_floats(ar, (size_t)C * Tt);
        if (!xc || !xtc) { st = NOMEM(); goto done; }
        memcpy(xc, x, sizeof(float) * C * F * T);
        memcpy(xtc, xt, sizeof(float) * C * Tt);
        x = xc;
        xt = xtc;
    }

    int offset = m->depth - m->n_tenc;
    float *wav = NULL; /* (S, A, TL) once the frequency branch is decoded */
    for (int idx = 0; idx < m->depth; idx++) {
        const dmx__hlayer *dl = &m->dec[idx];
        --n_saved;
        float *skip = saved[n_saved];
        (void)sF;
        (void)sT;
        float *pre = NULL;
        int h, w;
        int need_pre = idx >= offset && m->tdec[idx - offset].empty;
        /* the layer taps (tests) want the whole last decoder output */
        int to_wave = !tap && idx == m->depth - 1 && dl->freq && !dl->empty && !need_pre &&
                      !dl->norm2.groups && dl->chout % S == 0;
        float *nx3 = NULL;
        if (to_wave) {
            wav = dmx__arena_floats(ar, (size_t)S * A * TL);
            if (!wav || dec_last_to_wave(m, dl, ar, x, F, T, skip, mean, std, TL, wav)) { st = NOMEM(); goto done; }
        } else {
            nx3 = dec_forward(dl, ar, x, F, T, skip, 0, &h, &w, need_pre ? &pre : NULL);
            if (!nx3) { st = NOMEM(); goto done; }
            snprintf(name, sizeof name, "decoder%d", idx);
            TAP(name, nx3, dl->chout, h, w);
        }
        if (idx >= offset) {
            const dmx__hlayer *tl = &m->tdec[idx - offset];
            int length_t = lengths_t[--n_len_t];
            int h4, w4;
            float *nt;
            if (tl->empty) {
                /* pre has a single frequency row: (chin, 1, T) is (chin, T) */
                nt = dec_forward(tl, ar, pre, 1, T, NULL, length_t, &h4, &w4, NULL);
            } else {
                --n_saved_t;
                nt = dec_forward(tl, ar, xt, 1, Tt, saved_t[n_saved_t], length_t, &h4, &w4, NULL);
            }
            if (!nt) { st = NOMEM(); goto done; }
            xt = nt;
            Tt = w4;
            snprintf(name, sizeof name, "tdecoder%d", idx - offset);
            TAP(name, xt, tl->chout, 1, Tt);
        }
        if (to_wave) break; /* the last layer: nothing to compact */
        x = nx3;
        F = h;
        T = w;
        /* Compact the stack: the skips this decoder consumed and everything
         * above them are dead except x and xt, which move down to just above
         * the skips still to come. Skipped when a move would overwrite live
         * data (blocks are not contiguous) or when `pre` is alive. */
        if (!need_pre) {
            int Cx = dl->chout, Ct = idx >= offset ? m->tdec[idx - offset].chout : 0;
            size_t nxs = (size_t)Cx * F * T, nts = (size_t)Ct * Tt;
            int live = m->depth - 2 - idx;
            dmx__arena_mark keep = dmx__arena_save(ar);
            dmx__arena_restore(ar, live >= 0 ? emark[live] : base_mark);
            float *nx = dmx__arena_floats(ar, nxs);
            float *ntt = idx >= offset ? dmx__arena_floats(ar, nts) : NULL;
            int ok = nx && (idx < offset || ntt);
            /* Moving one buffer must not clobber the other before it moves;
             * memmove handles a buffer overlapping its own destination. */
            int x_hits_xt = ntt && nx < xt + nts && xt < nx + nxs;
            int xt_hits_x = ntt && ntt < x + nxs && x < ntt + nts;
            if (ok && x_hits_xt && xt_hits_x) ok = 0;
            if (ok) {
                if (x_hits_xt) {
                    memmove(ntt, xt, sizeof(float) * nts);
                    memmove(nx, x, sizeof(float) * nxs);
                } else {
                    memmove(nx, x, sizeof(float) * nxs);
                    if (ntt) memmove(ntt, xt, sizeof(float) * nts);
                }
                x = nx;
                if (ntt) xt = ntt;
            } else {
                dmx__arena_restore(ar, keep);
            }
        }
    }
    (void)stT;

    /* de-normalise the spectrogram estimate, back to waveforms */
    {
        if (!wav) {
            size_t n = (size_t)S * A * 2 * F * T;
            for (size_t i = 0; i < n; i++) x[i] = x[i] * std + mean;
            wav = dmx__arena_floats(ar, (size_t)S * A * TL);
            if (!wav || dmx__ispec(m->stft, ar, x, S * A, T, TL, wav)) { st = NOMEM(); goto done; }
        }
        for (int s = 0; s < S; s++)
            for (int c = 0; c < A; c++) {
                const float *a = xt + ((size_t)s * A + c) * Tt;
                const float *bw = wav + ((size_t)s * A + c) * TL;
                float *o = out + ((size_t)s * A + c) * len;
                for (int i = 0; i < len; i++) o[i] = (a[i] * stdt + meant) + bw[i];
            }
    }
done:
    dmx__arena_restore(ar, top);
    return st;
}
