/*
 * lstm.h - internal: PyTorch's multi-layer bidirectional LSTM and upstream
 * Demucs' BLSTM around it.
 *
 * dmx__lstm is torch.nn.LSTM(input, hidden, num_layers, bidirectional=True)
 * at inference: gate rows in PyTorch's order (input, forget, cell, output)
 * in weight_ih_l{k}[_reverse] (4H, in) and weight_hh_l{k}[_reverse] (4H, H),
 * both biases added, zero initial state; layer k > 0 reads the previous
 * layer's [forward, backward] outputs (2H).
 *
 * dmx__blstm is upstream's demucs.demucs.BLSTM: the LSTM over time, then
 * Linear(2H -> H), optionally plus the input (skip). With max_steps set and
 * T > max_steps the sequence is cut into windows of max_steps with hop
 * max_steps/2 (zero padded at the end), each run from zero state, and the
 * windows' centres are stitched back together exactly as upstream does;
 * the windows run as one batch (one GEMM per step for all of them).
 */
#ifndef DMX_ENGINE_LSTM_H
#define DMX_ENGINE_LSTM_H

#include "arena.h"
#include "bind.h"

#define DMX__LSTM_MAX_LAYERS 4

typedef struct dmx__lstm {
    int layers, input, hidden;
    /* [layer][direction]: (4H, in), (4H, H), (4H), (4H) */
    const float *w_ih[DMX__LSTM_MAX_LAYERS][2], *w_hh[DMX__LSTM_MAX_LAYERS][2];
    const float *b_ih[DMX__LSTM_MAX_LAYERS][2], *b_hh[DMX__LSTM_MAX_LAYERS][2];
} dmx__lstm;

typedef struct dmx__blstm {
    dmx__lstm lstm;             /* dim -> dim, bidirectional */
    const float *lin_w, *lin_b; /* (dim, 2 dim), (dim) */
    int dim, max_steps, skip;   /* max_steps 0: never chunked */
} dmx__blstm;

/* Binds `prefix`.lstm.* and `prefix`.linear.* in named_parameters() order. */
void dmx__blstm_bind(dmx__binder *b, dmx__blstm *m, const char *prefix, int dim, int layers,
                     int max_steps, int skip);

/* y (B, T, 2H) = LSTM(x (B, T, input)) for B independent sequences of T
 * steps, rows time-major within each. DMX_OK or DMX_ERR_NOMEM. */
dmx_status dmx__lstm_forward(const dmx__lstm *m, dmx__arena *ar, const float *x, int B, int T,
                             float *y);

/* x (dim, T) channel-major, replaced in place by BLSTM(x). DMX_OK or
 * DMX_ERR_NOMEM. */
dmx_status dmx__blstm_forward(const dmx__blstm *m, dmx__arena *ar, float *x, int T);

#endif
