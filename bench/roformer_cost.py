#!/usr/bin/env python3
"""GFLOP of matrix products per second of audio, one pass, of a BS-RoFormer or
Mel-Band RoFormer from its MSST config, counted as the golden README counts
them (2 x the multiply-adds of every Linear and of both attention products;
FFTs, norms and activations left out, under 0.1 %). Reproduces the README's
four values (1087.0, 388.4, 529.3, 400.3). Numbers for docs/MODELS.md; not a
test.

    bench/roformer_cost.py CONFIG.yaml...
"""
import os
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "msst_shims"))
from librosa import filters  # noqa: E402  (the Slaney mel bank stand-in)


def band_features(m, sr, n_fft, channels):
    """Features per band: (bins of the band) x channels x (re, im)."""
    if "freqs_per_bands" in m:
        return [2 * channels * f for f in m["freqs_per_bands"]]
    mel = filters.mel(sr=sr, n_fft=n_fft, n_mels=m["num_bands"])
    mel[0][0] = 1.0  # the reference's edge fixes
    mel[-1][-1] = 1.0
    return [2 * channels * int((row > 0).sum()) for row in mel]


def cost(path):
    with open(path) as f:
        c = yaml.load(f, Loader=yaml.FullLoader)
    m = c["model"]
    chunk = c["inference"].get("chunk_size", c["audio"]["chunk_size"])
    sr = c["audio"].get("sample_rate", 44100)
    n_fft, hop = m.get("stft_n_fft", 2048), m.get("stft_hop_length", 512)
    t = 1 + chunk // hop  # frames of one chunk
    D, H, dh = m["dim"], m.get("heads", 8), m.get("dim_head", 64)
    depth = m["depth"]
    td, fd = m.get("time_transformer_depth", 2), m.get("freq_transformer_depth", 2)
    stems = m.get("num_stems", 1)
    bs = "freqs_per_bands" in m
    feats = band_features(m, sr, n_fft, 2 if m.get("stereo", False) else 1)
    nb, inner = len(feats), H * dh
    # transformer blocks: qkv, gates, out, feed-forward (x4), on every token
    block = D * 3 * inner + D * H + inner * D + 2 * D * 4 * D
    macs = depth * (td + fd) * t * nb * block
    # attention products (q k^T and a v): time over frames, frequency over bands
    macs += depth * (td * nb * H * t * t * dh * 2 + fd * t * H * nb * nb * dh * 2)
    # band split
    macs += t * sum(f * D for f in feats)
    # mask estimators: BS depth d = d Linears, Mel-Band depth d = d + 1 Linears
    med = m.get("mask_estimator_depth", 2 if bs else 1)
    hid = D * m.get("mlp_expansion_factor", 4)
    n_hidden = max(med - 2, 0) if bs else med - 1
    for f in feats:
        layers = [(D, hid)] + [(hid, hid)] * n_hidden + [(hid, 2 * f)]
        macs += stems * t * sum(a * b for a, b in layers)
    return 2 * macs / 1e9 * sr / chunk


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(f"{cost(p):8.1f}  {os.path.basename(p)}")
