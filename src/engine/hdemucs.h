/*
 * hdemucs.h - internal: Hybrid Demucs v3 (upstream demucs.hdemucs.HDemucs:
 * hdemucs_mmi, the mdx / mdx_extra / repro_mdx_a hybrid members).
 *
 * The network is reached through its dmx__net_vt (net.h): dmx__hdemucs_vt.
 * build reads every constructor kwarg upstream's HDemucs.__init__ takes,
 * lays out the frequency branch (convolutions over frequency until one bin
 * is left, then time convolutions on the merged branch), the time branch
 * (merged into the frequency branch by its last, "empty" layer), MultiWrap
 * band layers, DConv branches (dconv.h) and the frequency embedding, and
 * binds every tensor in upstream's named_parameters() order (so DiffQ states
 * dequantize, see ckpt.h). forward runs one chunk at its own length (HDemucs
 * has no valid_length), complex-as-channels or amplitude + Wiener filtering
 * (wiener.h), with `hybrid_old`'s zero padding and iSTFT crop.
 *
 * Layer taps (for tests): "spec" (channels, re/im, F, T); "encoderN" (N =
 * 0..depth-1, encoder0 before the frequency embedding), "tencoderN",
 * "decoderN", "tdecoderN", "encoderN_dconv_in" / "_dconv_out" (layers with a
 * DConv, (C, F, T)), "mask_out" (sources, channels, re/im, F, T) flattened
 * as (sources·channels·2, F, T).
 */
#ifndef DMX_ENGINE_HDEMUCS_H
#define DMX_ENGINE_HDEMUCS_H

#include "net.h" /* declares dmx__hdemucs_vt */

#endif
