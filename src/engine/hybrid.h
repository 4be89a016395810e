/*
 * hybrid.h - internal: the level geometry rule upstream's two hybrid
 * networks share (HDemucs.__init__ and HTDemucs.__init__ build their
 * encoder/decoder levels the same way), written once for hdemucs.c and
 * htdemucs_build.c.
 */
#ifndef DMX_ENGINE_HYBRID_H
#define DMX_ENGINE_HYBRID_H

typedef struct dmx__hybrid_level {
    int freq;      /* a frequency layer (more than one bin enters it) */
    int kernel;    /* its kernel along frequency (or time, once freq is 0) */
    int stride;    /* its stride along that axis */
    int pad;       /* 1: padded (kernel - stride) / 2 on each side */
    int last_freq; /* the layer that collapses the remaining bins: it merges
                    * with the time branch */
} dmx__hybrid_level;

/* The level entered by `freqs` frequency bins. */
static inline dmx__hybrid_level dmx__hybrid_level_at(int freqs, int kernel_size, int stride,
                                                     int time_stride) {
    dmx__hybrid_level l = {freqs > 1, kernel_size, stride, 1, 0};
    if (!l.freq) {
        l.kernel = time_stride * 2;
        l.stride = time_stride;
    }
    if (l.freq && freqs <= kernel_size) { /* the last frequency layer */
        l.kernel = freqs;
        l.pad = 0;
        l.last_freq = 1;
    }
    return l;
}

/* At the merging level both branches take the larger channel count. */
static inline void dmx__hybrid_merge_channels(int *chout, int *chout_z) {
    if (*chout_z < *chout) *chout_z = *chout;
    *chout = *chout_z;
}

#endif
