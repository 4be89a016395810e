/*
 * bind.h - internal: binding a network's parameters to checkpoint tensors.
 *
 * A network builder walks its architecture once per pass and asks for each
 * parameter by name and expected shape, in upstream's named_parameters()
 * order. The same walk serves two passes:
 *   collect  (b->collect != NULL): records every (name, shape) and binds
 *            nothing — the parameter list a DiffQ-quantized state needs to
 *            name its unnamed entries (dmx__ckpt_dequantize);
 *   bind     : returns the tensor's data after checking its shape; a missing
 *            or mis-shaped tensor is DMX_ERR_MODEL naming it. The first error
 *            sticks in b->st and later calls return NULL.
 * Counting the bound values (b->n_params) lets the builder reject a
 * checkpoint holding tensors the architecture does not use.
 */
#ifndef DMX_ENGINE_BIND_H
#define DMX_ENGINE_BIND_H

#include <stdint.h>

#include "ckpt.h"

typedef struct dmx__binder {
    dmx__ckpt *ck;
    dmx__param_list *collect; /* non-NULL: collect pass */
    dmx_status st;
    int64_t n_params;    /* values bound (or collected) so far */
    unsigned char *used; /* (n_tensors) bind pass: which tensors were bound */
} dmx__binder;

/* Starts a pass over `ck` (collect != NULL: the collect pass, appending to
 * it). Returns DMX_OK or DMX_ERR_NOMEM. dmx__binder_done frees it. */
dmx_status dmx__binder_init(dmx__binder *b, dmx__ckpt *ck, dmx__param_list *collect);
void dmx__binder_done(dmx__binder *b);

/* Binds (or collects) the tensor named by fmt..., of `ndim` dims `shape`.
 * Returns its data (bind pass), NULL in the collect pass or on error. */
const float *dmx__bind(dmx__binder *b, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Shorthands: 1-D, 2-D and 3-D shapes. */
const float *dmx__bind1(dmx__binder *b, int64_t n0, const char *name);
const float *dmx__bind2(dmx__binder *b, int64_t n0, int64_t n1, const char *name);
const float *dmx__bind3(dmx__binder *b, int64_t n0, int64_t n1, int64_t n2, const char *name);

/* After the bind pass: DMX_ERR_MODEL naming the first checkpoint tensor the
 * architecture did not bind (`family` names the network in the message). */
dmx_status dmx__bind_check_unused(dmx__binder *b, const char *family);

#endif
