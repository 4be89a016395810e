/*
 * bind.c - the two-pass parameter binder (see bind.h).
 */
#include "bind.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

dmx_status dmx__binder_init(dmx__binder *b, dmx__ckpt *ck, dmx__param_list *collect) {
    memset(b, 0, sizeof *b);
    b->ck = ck;
    b->collect = collect;
    b->st = DMX_OK;
    if (!collect) {
        size_t n = dmx__ckpt_n_tensors(ck);
        b->used = calloc(n ? n : 1, 1);
        if (!b->used)
            return b->st = dmx__fail(DMX_ERR_NOMEM, "out of memory binding the checkpoint");
    }
    return DMX_OK;
}

void dmx__binder_done(dmx__binder *b) {
    free(b->used);
    b->used = NULL;
}

static const char *fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "(");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, ndim == 1 ? ",)" : ")");
    return buf;
}

static const float *bind_name(dmx__binder *b, int ndim, const int64_t *shape, const char *name) {
    if (b->st != DMX_OK) return NULL;
    DMX_ASSERT(ndim >= 0 && ndim <= DMX__MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    if (b->collect) {
        b->st = dmx__param_list_add(b->collect, name, ndim, shape);
        if (b->st == DMX_OK) b->n_params += numel;
        return NULL;
    }
    const dmx__tensor *t = dmx__ckpt_find(b->ck, name);
    char s1[160], s2[160];
    if (!t) {
        b->st = dmx__fail(DMX_ERR_MODEL,
                          "missing tensor '%s' (expected shape %s from the checkpoint's kwargs)",
                          name, fmt_shape(s1, sizeof s1, ndim, shape));
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        b->st = dmx__fail(DMX_ERR_MODEL, "tensor '%s' has shape %s but the architecture expects %s",
                          name, fmt_shape(s1, sizeof s1, t->ndim, t->shape),
                          fmt_shape(s2, sizeof s2, ndim, shape));
        return NULL;
    }
    b->used[t - dmx__ckpt_tensor_at(b->ck, 0)] = 1; /* tensors are one array */
    b->n_params += numel;
    return t->data;
}

const float *dmx__bind(dmx__binder *b, int ndim, const int64_t *shape, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return bind_name(b, ndim, shape, name);
}

const float *dmx__bind1(dmx__binder *b, int64_t n0, const char *name) {
    int64_t s[1] = {n0};
    return bind_name(b, 1, s, name);
}

const float *dmx__bind2(dmx__binder *b, int64_t n0, int64_t n1, const char *name) {
    int64_t s[2] = {n0, n1};
    return bind_name(b, 2, s, name);
}

const float *dmx__bind3(dmx__binder *b, int64_t n0, int64_t n1, int64_t n2, const char *name) {
    int64_t s[3] = {n0, n1, n2};
    return bind_name(b, 3, s, name);
}

dmx_status dmx__bind_check_unused(dmx__binder *b, const char *family) {
    if (b->st != DMX_OK || b->collect) return b->st;
    size_t n = dmx__ckpt_n_tensors(b->ck);
    for (size_t i = 0; i < n; i++)
        if (!b->used[i])
            return b->st = dmx__fail(DMX_ERR_MODEL,
                                     "unexpected tensor '%s' in the checkpoint (not part of the %s "
                                     "architecture its kwargs describe)",
                                     dmx__ckpt_tensor_at(b->ck, i)->name, family);
    return DMX_OK;
}
