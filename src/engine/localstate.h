/*
 * localstate.h - internal: upstream Demucs' LocalState attention (the
 * attention of the DConv branches in demucs.demucs / demucs.hdemucs).
 *
 * On x (C, T), with heads h of D = C/heads channels (channel = h*D + c):
 *   dots[t, s] = sum_c key[c, t] query[c, s] / sqrt(D)
 *              - sum_f (f+1) |t - s| / sqrt(ndecay) * sigmoid(query_decay[h*ndecay + f, s]) / 2
 *   dots[s, s] = -100 (no self reference), softmax over the key index t,
 *   out = x + proj(sum_t w[t, s] content[c, t]),
 * all projections 1x1 convolutions. Only nfreqs = 0 exists in released
 * models (DConv never passes it). Queries run in blocks so the score
 * scratch is block x T, never T x T.
 */
#ifndef DMX_ENGINE_LOCALSTATE_H
#define DMX_ENGINE_LOCALSTATE_H

#include "arena.h"
#include "bind.h"

typedef struct dmx__localstate {
    int channels, heads, ndecay;
    const float *content_w, *content_b; /* (C, C, 1), (C) */
    const float *query_w, *query_b;
    const float *key_w, *key_b;
    const float *decay_w, *decay_b; /* (heads*ndecay, C, 1), or NULL when ndecay = 0 */
    const float *proj_w, *proj_b;   /* (C, C, 1) */
} dmx__localstate;

/* Binds `prefix`.{content,query,key,query_decay,proj}.{weight,bias}. */
void dmx__localstate_bind(dmx__binder *b, dmx__localstate *m, const char *prefix, int channels,
                          int heads, int ndecay);

/* x (C, T) updated in place. DMX_OK or DMX_ERR_NOMEM. */
dmx_status dmx__localstate_forward(const dmx__localstate *m, dmx__arena *ar, float *x, int T);

#endif
