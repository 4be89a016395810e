/*
 * ckpt.h - internal: read an upstream Demucs checkpoint (.th) into memory.
 *
 * A .th file is what torch.save writes: a zip archive (entries stored, not
 * compressed) holding `<prefix>/data.pkl` (a pickle program) and one entry per
 * tensor storage `<prefix>/data/<key>`. The pickle describes the dict
 * {klass, args, kwargs, state, training_args} built by upstream's
 * serialize_model(). The loader runs the pickle on a small VM, resolves the
 * persistent storage IDs to zip entries, converts fp16/fp32 storages to fp32
 * once, and exposes:
 *   - klass: the model class as "module.Name" (e.g. "demucs.htdemucs.HTDemucs"),
 *   - kwargs: the constructor keyword arguments, through typed accessors,
 *   - the state dict: named, contiguous fp32 tensors in file order.
 * Nothing about the model architecture lives here.
 */
#ifndef DMX_ENGINE_CKPT_H
#define DMX_ENGINE_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "demix/status.h"

#define DMX__MAX_DIMS 8

typedef struct dmx__tensor {
    char *name;                   /* state-dict key, e.g. "encoder.0.conv.weight" */
    int ndim;                     /* 0..DMX__MAX_DIMS */
    int64_t shape[DMX__MAX_DIMS]; /* PyTorch order (outermost first) */
    size_t numel;                 /* product of shape (1 for ndim == 0) */
    float *data;                  /* (numel) fp32, C-contiguous; owned by the ckpt */
} dmx__tensor;

typedef struct dmx__ckpt dmx__ckpt; /* opaque */

/* Reads and validates the checkpoint at `path`. On success *out owns
 * everything and must be released with dmx__ckpt_free. On failure returns a
 * status (DMX_ERR_IO, DMX_ERR_CORRUPT for a damaged/truncated zip or pickle,
 * DMX_ERR_UNSUPPORTED for an unknown pickle opcode / storage type / quantized
 * state, DMX_ERR_NOMEM) with a precise dmx_last_error() and *out = NULL. */
dmx_status dmx__ckpt_load(const char *path, dmx__ckpt **out);

/* Same, from a memory buffer (used by the fuzzer and tests). The buffer is
 * copied as needed; the caller keeps ownership. `name` is used in messages. */
dmx_status dmx__ckpt_load_mem(const void *buf, size_t len, const char *name, dmx__ckpt **out);

/* Same for a bare torch.save'd state dict (MSST's RoFormer .ckpt files): the
 * top-level dict name -> tensor, or MSST's wrappers ('state', 'state_dict',
 * 'model_state_dict', unwrapped in that order as its loader does; the other
 * entries of a training checkpoint are ignored). klass is NULL, there are no
 * kwargs. */
dmx_status dmx__ckpt_load_state_dict(const char *path, dmx__ckpt **out);
dmx_status dmx__ckpt_load_state_dict_mem(const void *buf, size_t len, const char *name,
                                         dmx__ckpt **out);

/* Frees everything; NULL is a no-op. */
void dmx__ckpt_free(dmx__ckpt *ck);

/* "module.Name" of the `klass` entry (e.g. "demucs.htdemucs.HTDemucs"). */
const char *dmx__ckpt_klass(const dmx__ckpt *ck);

/* State tensors in file order. Pointers stay valid until dmx__ckpt_free. */
size_t dmx__ckpt_n_tensors(const dmx__ckpt *ck);
const dmx__tensor *dmx__ckpt_tensor_at(const dmx__ckpt *ck, size_t i);
/* NULL if absent. */
const dmx__tensor *dmx__ckpt_find(const dmx__ckpt *ck, const char *name);

/* Takes ownership of a tensor's data (the ckpt entry's data becomes NULL), so a
 * model can keep weights without copying. */
float *dmx__ckpt_steal(dmx__ckpt *ck, const char *name);

/*
 * kwargs accessors. Each returns:
 *   DMX_OK            and stores the value,
 *   DMX_ERR_NOT_FOUND if the key is absent (callers then use upstream's default),
 *   DMX_ERR_MODEL     if present with an incompatible type (message names the key).
 * Numeric accessors accept Python int, bool, float and fractions.Fraction where
 * it makes sense: kw_int accepts int/bool; kw_num accepts int/bool/float/Fraction;
 * kw_bool accepts bool and int (non-zero is true).
 * `None` is reported by kw_is_none, and makes the other accessors return
 * DMX_ERR_MODEL.
 */
int dmx__ckpt_kw_has(const dmx__ckpt *ck, const char *key);
int dmx__ckpt_kw_is_none(const dmx__ckpt *ck, const char *key);
dmx_status dmx__ckpt_kw_int(const dmx__ckpt *ck, const char *key, int64_t *v);
dmx_status dmx__ckpt_kw_bool(const dmx__ckpt *ck, const char *key, int *v);
dmx_status dmx__ckpt_kw_num(const dmx__ckpt *ck, const char *key, double *v);
/* Exact rational value of an int, bool or fractions.Fraction (den > 0);
 * a float is DMX_ERR_MODEL (read it with kw_num). */
dmx_status dmx__ckpt_kw_fraction(const dmx__ckpt *ck, const char *key, int64_t *num, int64_t *den);
/* String value; pointer owned by the ckpt. */
dmx_status dmx__ckpt_kw_str(const dmx__ckpt *ck, const char *key, const char **v);
/* List or tuple of strings (e.g. `sources`): *n items; strings owned by ckpt.
 * Fills at most `cap` entries of `v` but always reports the full count in *n. */
dmx_status dmx__ckpt_kw_strlist(const dmx__ckpt *ck, const char *key, const char **v, size_t cap,
                                size_t *n);
/* List or tuple of numbers (e.g. `multi_freqs`), same conventions. */
dmx_status dmx__ckpt_kw_numlist(const dmx__ckpt *ck, const char *key, double *v, size_t cap,
                                size_t *n);

/* kwargs keys in file order (e.g. to warn about keys a model builder does not
 * know). The key pointer is owned by the ckpt; NULL when i is out of range. */
size_t dmx__ckpt_kw_count(const dmx__ckpt *ck);
const char *dmx__ckpt_kw_key_at(const dmx__ckpt *ck, size_t i);

/*
 * DiffQ-quantized states (upstream's `state['__quantized']`, mdx_q and
 * mdx_extra_q). Their entries carry no names: diffq lists them in the
 * model's named_parameters() order, the large ones (more than 52428 values)
 * bit-packed per group of values, the others as plain tensors. Such a
 * checkpoint loads with no tensors and dmx__ckpt_is_quantized() true; the
 * network builder then lists its parameters in that order (a dmx__param_list,
 * see bind.h) and dmx__ckpt_dequantize() unpacks and dequantizes the packed
 * ones exactly as diffq restores them and names every tensor, after which
 * the checkpoint is an ordinary one.
 */
typedef struct dmx__param_spec {
    char *name;
    int ndim;
    int64_t shape[DMX__MAX_DIMS];
} dmx__param_spec;

typedef struct dmx__param_list {
    dmx__param_spec *v; /* (n) owned */
    size_t n, cap;
} dmx__param_list;

/* Appends a copy of `name`; DMX_OK or DMX_ERR_NOMEM. */
dmx_status dmx__param_list_add(dmx__param_list *l, const char *name, int ndim,
                               const int64_t *shape);
void dmx__param_list_free(dmx__param_list *l);

/* 1 while the checkpoint holds a DiffQ state not yet dequantized. */
int dmx__ckpt_is_quantized(const dmx__ckpt *ck);

/* Names and dequantizes the DiffQ state with the model's parameter list (in
 * named_parameters() order). DMX_ERR_MODEL when the list does not match the
 * state (count, sizes, shapes of the plain entries), naming the parameter;
 * DMX_ERR_CORRUPT for inconsistent packed data; DMX_ERR_NOMEM. No-op (DMX_OK)
 * on a checkpoint that is not quantized. */
dmx_status dmx__ckpt_dequantize(dmx__ckpt *ck, const dmx__param_list *params);

/* IEEE half -> float widening used for fp16 storages: exact for every input
 * (subnormals, infinities; NaNs keep their payload and are quieted, matching
 * F16C's vcvtph2ps). The array version uses F16C when compiled in and gives
 * bit-identical results. `src` need not be aligned. */
float dmx__f16_to_f32_scalar(uint16_t h);
void dmx__f16_to_f32(const void *src, float *dst, size_t n);

#endif
