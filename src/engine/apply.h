/*
 * apply.h - internal: the model and session structures behind demix.h's
 * opaque types. apply.c runs upstream's apply_model() on them as a stream.
 */
#ifndef DMX_ENGINE_APPLY_H
#define DMX_ENGINE_APPLY_H

#include "demix/demix.h"
#include "arena.h"
#include "net.h"
#include "pyrandom.h"

struct dmx_model {
    int n_members;
    dmx__net **members; /* (n_members), owned */
    float *weights;     /* (n_members, n_sources) */
    int weights_given;  /* from the bag file, else all ones */
    double *totals;     /* (n_sources) column sums of weights */
    int n_sources, channels, samplerate;
    const char *sources[DMX__MAX_SOURCES]; /* owned by members[0] */
    double segment;                        /* smallest member segment, seconds */
    double max_segment;                    /* longest segment a caller may ask for: upstream's
                                * max_allowed_segment (smallest segment of the
                                * fixed-segment members; INFINITY if none) */
    int64_t n_params;
};

#define DMX__MAX_WORKERS 32

/* Scratch of one thread evaluating segments: sized on first use, reused for
 * every later segment (the arena is compacted after its first pass). */
typedef struct dmx__worker {
    dmx__arena arena; /* activations of one forward pass */
    float *seg_in;    /* (channels, cap) one model input */
    float *seg_out;   /* (sources, channels, cap) its output */
    int64_t cap;      /* samples per channel of seg_in/seg_out */
} dmx__worker;

struct dmx_session {
    const dmx_model *model;
    int n_workers; /* workers[0..n_workers) are allocated */
    dmx__worker workers[DMX__MAX_WORKERS];
};

/* The RoFormer network of a model loaded from an MSST config
 * (dmx_model_load_config), or NULL: such models stream through MSST's
 * chunking (roformer_demix.h) instead of apply_model's. */
struct dmx__roformer;
const struct dmx__roformer *dmx__model_roformer(const dmx_model *m);

#endif
