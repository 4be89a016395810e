/*
 * htdemucs_forward.c - HTDemucs: one segment through the built network
 * (upstream's HTDemucs.forward with the layers of htdemucs.py/hdemucs.py);
 * the cross-transformer lives in transformer.c, the build in
 * htdemucs_build.c.
 *
 * Layout of activations (batch 1): frequency branch (C, F, T) with F the
 * frequency bins and T the STFT frames; time branch (C, T) which is the same
 * as (C, 1, T). Every layer is expressed as a 2D convolution over (C, H, W)
 * with H = frequency, W = time. All scratch comes from the caller's arena.
 * Amplitude models (cac=False) take the mixture's magnitudes and output
 * magnitudes, made complex by wiener.c as upstream's _mask does.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dconv.h"
#include "error.h"
#include "htdemucs.h"
#include "wiener.h"

#define NOMEM() dmx__fail(DMX_ERR_NOMEM, "out of memory in the HTDemucs forward pass")

/* DConv residual branch on y (C, rows, T) in place; each of the `rows`
 * frequency rows is an independent sequence, as upstream folds F into the
 * batch (the 2C-channel half: dconv.c's dmx__dconv_glu_half). */
static dmx_status dconv_forward(const dmx__dconv *d, dmx__arena *ar, float *y, int rows, int T) {
    const int C = d->channels, Hd = d->hidden;
    const size_t plane = (size_t)rows * T;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *h = dmx__arena_floats(ar, (size_t)Hd * plane);
    if (!h) return NOMEM();
    for (int i = 0; i < d->depth; i++) {
        const dmx__dconv_layer *L = &d->layers[i];
        if (dmx__conv2d(ar, &L->conv1.g, y, rows, T, L->conv1.w, L->conv1.b, h)) return NOMEM();
        dmx__group_norm_act(h, Hd, rows, T, 1, L->norm1.w, L->norm1.b, 1e-5f, DMX__ACT_GELU);
        if (dmx__dconv_glu_half(ar, h, Hd, y, C, rows, T, L->conv2.w, L->conv2.b, L->norm2.w,
                                L->norm2.b, L->scale) != DMX_OK)
            return NOMEM();
    }
    dmx__arena_restore(ar, mk);
    return DMX_OK;
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
    /* time layers zero-pad to a multiple of the stride */
    const float *xin = dmx__pad_cols(ar, x, L->chin * H, W, Wp);
    if (!xin) return NULL;
    /* The convolution and DConv work in a scratch image; the rewrite + GLU
     * then writes the layer's output. */
    float *c = (L->empty || !L->has_rewrite) ? y : dmx__arena_floats(ar, (size_t)L->chout * plane);
    if (!c || dmx__enc_conv(ar, &L->conv, &L->norm1, xin, H, Wp, inject, L->empty, c)) return NULL;
    if (L->empty) {
        dmx__arena_restore(ar, mk);
        return y;
    }
    if (L->has_dconv && dconv_forward(&L->dconv, ar, c, ho, wo) != DMX_OK) return NULL;
    if (L->has_rewrite && dmx__rewrite_glu(ar, &L->rewrite, &L->norm2, c, ho, wo, y)) return NULL;
    dmx__arena_restore(ar, mk);
    return y;
}

/* A decoder layer up to its transposed convolution: the skip added into x,
 * rewrite + GLU into y (when y is NULL, into the skip's buffer, dead once
 * added), then DConv. Returns the transposed convolution's input, or NULL
 * when out of memory. */
static float *dec_body(const dmx__hlayer *L, dmx__arena *ar, float *x, int H, int W,
                       const float *skip, float *y) {
    const size_t n = (size_t)L->chin * H * W;
    if (L->empty) return x;
    dmx__add(x, skip, n);
    if (L->has_rewrite) {
        if (!y) y = skip ? (float *)skip : dmx__arena_floats(ar, n);
        if (!y || dmx__rewrite_glu(ar, &L->rewrite, &L->norm1, x, H, W, y)) return NULL;
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
    int hf, wf, ho, wo;
    /* The transposed convolution writes its output here, cropped as it
     * writes or untrimmed for the trim to compact in place: the layer's
     * output needs one buffer. */
    size_t zsize = dmx__tr_shape(g, L->freq, L->pad, length, L->chout, H, W, &hf, &wf, &ho, &wo);
    size_t plane_in = (size_t)H * W;
    float *z = dmx__arena_floats(ar, zsize);
    if (!z) return NULL;
    float *kept = NULL; /* the transposed convolution's input, when asked for */
    if (pre && !L->empty && L->has_rewrite &&
        !(kept = dmx__arena_floats(ar, (size_t)L->chin * plane_in)))
        return NULL;
    dmx__arena_mark mk = dmx__arena_save(ar);
    float *y = dec_body(L, ar, x, H, W, skip, kept);
    if (!y || dmx__dec_conv_tr(ar, &L->conv, &L->norm2, L->freq, L->pad, L->last, y, H, W, hf, wf,
                               ho, wo, z))
        return NULL;
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
                            int H, int W, const float *skip, float mean, float std, int TL,
                            float *wav) {
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
        /* the frequency padding cropped as the rows are written */
        if (dmx__conv_tr2d_crop(ar, &gs, y, H, W, L->conv.w + (size_t)s * cs * g->kh * g->kw,
                                g->cout * g->kh * g->kw, b, L->pad, DMX__ACT_NONE, z))
            return -1;
        size_t n = (size_t)cs * ho * wf;
        for (size_t i = 0; i < n; i++) z[i] = z[i] * std + mean;
        if (dmx__ispec(m->stft, ar, z, A, wf, TL, wav + (size_t)s * A * TL)) return -1;
    }
    dmx__arena_restore(ar, mk);
    return 0;
}

#define TAP(name, p, c, h, w)                     \
    do {                                          \
        if (tap) tap(tap_user, name, p, c, h, w); \
    } while (0)

dmx_status dmx__htdemucs_forward(const dmx__htdemucs *m, dmx__arena *ar, const float *mix, int len,
                                 float *out, dmx__tap_fn tap, void *tap_user) {
    const int A = m->audio_channels, S = m->n_sources;
    const int TL = m->use_train_segment ? m->training_length : len;
    if (len < 1 || len > TL)
        return dmx__fail(DMX_ERR_INVALID_ARG, "segment of %d samples exceeds the model's %d", len,
                         TL);
    dmx__arena_mark top = dmx__arena_save(ar);
    dmx_status st = DMX_OK;
    char name[32];
    const int nb = m->nfft / 2;
    const int le = dmx__spec_frames(m->stft, TL);
    const int nz = m->cac ? 2 : 1; /* network channels per audio channel */
    const size_t plane = (size_t)nb * le;

    /* cac=False: the mixture's complex spectrogram z (A, 2, nb, le) lives
     * until the masks are applied, below everything the pass compacts */
    float *z = NULL;
    if (!m->cac && !(z = dmx__arena_floats(ar, (size_t)A * 2 * plane))) {
        st = NOMEM();
        goto done;
    }
    dmx__arena_mark body = dmx__arena_save(ar);
    /* zero-padded mix (A, TL) */
    float *mixp = dmx__arena_floats(ar, (size_t)A * TL);
    float *x = dmx__arena_floats(ar, (size_t)nz * A * plane);
    float *xt = dmx__arena_floats(ar, (size_t)A * TL);
    if (!mixp || !x || !xt) {
        st = NOMEM();
        goto done;
    }
    for (int c = 0; c < A; c++) {
        memcpy(mixp + (size_t)c * TL, mix + (size_t)c * len, sizeof(float) * len);
        memset(mixp + (size_t)c * TL + len, 0, sizeof(float) * (TL - len));
    }
    if (dmx__spec(m->stft, ar, mixp, A, TL, m->cac ? x : z)) {
        st = NOMEM();
        goto done;
    }
    TAP("spec", m->cac ? x : z, 2 * A, nb, le);
    if (!m->cac) dmx__wiener_magnitude(z, A, plane, x); /* upstream's _magnitude */
    float mean, std, meant, stdt;
    size_t nx = (size_t)nz * A * plane;
    dmx__mean_std(x, nx, &mean, &std);
    {
        float den = 1e-5f + std;
        for (size_t i = 0; i < nx; i++) x[i] = (x[i] - mean) / den;
    }
    dmx__mean_std(mixp, (size_t)A * TL, &meant, &stdt);
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
            if (!nxt) {
                st = NOMEM();
                goto done;
            }
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
        if (!nx2) {
            st = NOMEM();
            goto done;
        }
        x = nx2;
        F = h2;
        T = w2;
        snprintf(name, sizeof name, "encoder%d", idx);
        TAP(name, x, el->chout, F, T);
        if (idx == 0 && m->freq_emb) {
            for (int c = 0; c < el->chout; c++)
                for (int f = 0; f < F; f++) {
                    float e = m->freq_emb_scale *
                              (m->freq_emb[(size_t)f * m->freq_emb_dim + c] * m->emb_scale);
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
            dmx__arena_restore(ar, body);
            float *nt = body.cur == keep.cur ? dmx__arena_floats(ar, nts) : NULL;
            float *nx = nt ? dmx__arena_floats(ar, nxs) : NULL;
            if (nx && ar->cur == keep.cur && nt <= xt && nx <= x) {
                memmove(nt, xt, sizeof(float) * nts);
                memmove(nx, x, sizeof(float) * nxs);
                xt = saved_t[0] = nt;
                x = nx;
                base_mark = body;
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
                dmx__conv2d(ar, &m->up_t.g, xt, 1, Tt, m->up_t.w, m->up_t.b, xtb)) {
                st = NOMEM();
                goto done;
            }
        } else {
            /* the encoder outputs are skips: the transformer works on copies */
            xb = dmx__arena_floats(ar, (size_t)Ct * F * T);
            xtb = dmx__arena_floats(ar, (size_t)Ct * Tt);
            if (!xb || !xtb) {
                st = NOMEM();
                goto done;
            }
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
                dmx__conv2d(ar, &m->down_t.g, xtb, 1, Tt, m->down_t.w, m->down_t.b, xt)) {
                st = NOMEM();
                goto done;
            }
        } else {
            x = xb;
            xt = xtb;
        }
    } else {
        /* decoders add skips into their input in place: work on copies */
        float *xc = dmx__arena_floats(ar, (size_t)C * F * T);
        float *xtc = dmx__arena_floats(ar, (size_t)C * Tt);
        if (!xc || !xtc) {
            st = NOMEM();
            goto done;
        }
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
        int to_wave = m->cac && !tap && idx == m->depth - 1 && dl->freq && !dl->empty &&
                      !need_pre && !dl->norm2.groups && dl->chout % S == 0;
        float *nx3 = NULL;
        if (to_wave) {
            wav = dmx__arena_floats(ar, (size_t)S * A * TL);
            if (!wav || dec_last_to_wave(m, dl, ar, x, F, T, skip, mean, std, TL, wav)) {
                st = NOMEM();
                goto done;
            }
        } else {
            nx3 = dec_forward(dl, ar, x, F, T, skip, 0, &h, &w, need_pre ? &pre : NULL);
            if (!nx3) {
                st = NOMEM();
                goto done;
            }
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
            if (!nt) {
                st = NOMEM();
                goto done;
            }
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

    /* de-normalise the spectrogram estimate (cac=False: magnitudes, turned
     * into complex spectrograms by upstream's _mask), back to waveforms */
    {
        if (!wav) {
            size_t n = (size_t)S * A * nz * F * T;
            for (size_t i = 0; i < n; i++) x[i] = x[i] * std + mean;
            float *zout = x;
            if (!m->cac) {
                if (F != nb || T != le) {
                    st = dmx__fail(DMX_ERR_INVALID_ARG,
                                   "decoder output (%d, %d) for a (%d, %d) spectrogram", F, T, nb,
                                   le);
                    goto done;
                }
                if (!(zout = dmx__arena_floats(ar, (size_t)S * A * 2 * plane))) {
                    st = NOMEM();
                    goto done;
                }
                st = dmx__wiener(ar, x, z, S, A, nb, le, m->wiener_iters, m->wiener_residual, zout);
                if (st != DMX_OK) goto done;
            }
            TAP("mask_out", zout, S * A * 2, nb, le);
            wav = dmx__arena_floats(ar, (size_t)S * A * TL);
            if (!wav || dmx__ispec(m->stft, ar, zout, S * A, T, TL, wav)) {
                st = NOMEM();
                goto done;
            }
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
