/*
 * net.c - the registry of network families and the calls apply.c and
 * model.c make through it (see net.h).
 *
 * A family is added with one line in `families` below: the checkpoint class
 * name(s) it builds (as dmx__ckpt_klass spells them, "module.Name") and its
 * vt. Loading looks the checkpoint's class up there; nothing else in the
 * engine names a family.
 */
#include "net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "roformer.h"

static const struct {
    const char *klass;
    const dmx__net_vt *vt;
} families[] = {
    {"demucs.htdemucs.HTDemucs", &dmx__htdemucs_vt},
    {"demucs.demucs.Demucs", &dmx__demucs_vt},
    {"demucs.hdemucs.HDemucs", &dmx__hdemucs_vt},
    {"models.bs_roformer.bs_roformer.BSRoformer", &dmx__bs_roformer_vt},
    {"models.bs_roformer.mel_band_roformer.MelBandRoformer", &dmx__mel_band_roformer_vt},
};

#define N_FAMILIES (sizeof families / sizeof families[0])

static const char *bare_name(const char *klass) {
    const char *dot = strrchr(klass, '.');
    return dot ? dot + 1 : klass;
}

dmx_status dmx__net_build(dmx__ckpt *ck, dmx__net **out) {
    *out = NULL;
    const char *klass = dmx__ckpt_klass(ck);
    const dmx__net_vt *vt = NULL;
    for (size_t i = 0; klass && i < N_FAMILIES && !vt; i++)
        if (strcmp(klass, families[i].klass) == 0) vt = families[i].vt;
    if (!vt) {
        char known[512] = "";
        for (size_t i = 0; i < N_FAMILIES; i++) {
            size_t l = strlen(known);
            snprintf(known + l, sizeof known - l, "%s%s", i ? ", " : "", families[i].klass);
        }
        dmx_status s =
            dmx__fail(DMX_ERR_UNSUPPORTED, "model class '%s' is not supported (demix runs %s)",
                      klass ? klass : "?", known);
        dmx__ckpt_free(ck);
        return s;
    }
    dmx__net *n = calloc(1, sizeof *n);
    if (!n) {
        dmx__ckpt_free(ck);
        return dmx__fail(DMX_ERR_NOMEM, "out of memory building the model");
    }
    dmx_status s = vt->build(ck, &n->impl); /* takes ownership of ck */
    if (s != DMX_OK) {
        free(n);
        return s;
    }
    n->vt = vt;
    vt->describe(n->impl, &n->desc);
    n->desc.klass = bare_name(klass); /* klass is owned by ck, which impl owns */
    *out = n;
    return DMX_OK;
}

void dmx__net_free(dmx__net *n) {
    if (!n) return;
    n->vt->free(n->impl);
    free(n);
}

int64_t dmx__net_valid_length(const dmx__net *n, int64_t length) {
    return n->vt->valid_length(n->impl, length);
}

dmx_status dmx__net_forward(const dmx__net *n, dmx__arena *ar, const float *mix, int len,
                            float *out, dmx__tap_fn tap, void *tap_user) {
    return n->vt->forward(n->impl, ar, mix, len, out, tap, tap_user);
}

int64_t dmx__segment_length(int64_t num, int64_t den, double seconds, int samplerate) {
    if (den > 0) {
        /* int(Fraction * int): exact; floor of a non-negative quotient */
        __int128 p = (__int128)num * samplerate;
        if (p < 0) return -1;
        __int128 q = p / den;
        return q > INT64_MAX ? -1 : (int64_t)q;
    }
    /* int(float * int): one IEEE double product, truncated toward zero */
    double p = seconds * (double)samplerate;
    if (!(p >= 0.0) || p >= 9.2e18) return -1;
    return (int64_t)p;
}
