#!/usr/bin/env python3
"""Builds a full-size random-weight checkpoint of an upstream Demucs
architecture, saved the way upstream's serialize_model(half=True) saves the
official files (klass, args, kwargs, state in float16), for benchmarks only:
demix and upstream then run the same tensors.

    DEMIX_UPSTREAM=DIR bench/build_model.py hdemucs_mmi OUT.th

Architectures: hdemucs_mmi (HDemucs, conf/config.yaml's hdemucs section,
segment 40, as 75fc33f5 is built); mdx_demucs (the time-domain Demucs members
of `mdx`, 0d19c1c6 / 7ecf8ec1: config.yaml's demucs section with
rewrite=False, segment 44). DIR is a checkout of facebookresearch/demucs;
tools/refgen/stubs stands in for the imports inference does not use."""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tools", "refgen", "stubs"))
sys.path.insert(0, os.environ["DEMIX_UPSTREAM"])
import torch  # noqa: E402

SOURCES = ["drums", "bass", "other", "vocals"]
# conf/config.yaml `hdemucs:` at upstream e976d93, in its order
HDEMUCS = dict(channels=48, channels_time=None, growth=2, nfft=4096, wiener_iters=0, end_iters=0,
               wiener_residual=False, cac=True, depth=6, rewrite=True, hybrid=True, hybrid_old=False,
               multi_freqs=[], multi_freqs_depth=3, freq_emb=0.2, emb_scale=10, emb_smooth=True,
               kernel_size=8, stride=4, time_stride=2, context=1, context_enc=0, norm_starts=4,
               norm_groups=4, dconv_mode=1, dconv_depth=2, dconv_comp=4, dconv_attn=4, dconv_lstm=4,
               dconv_init=1e-3, rescale=0.1)
# conf/config.yaml `demucs:` at upstream e976d93
DEMUCS = dict(channels=64, growth=2, depth=6, rewrite=True, lstm_layers=0, kernel_size=8, stride=4,
              context=1, gelu=True, glu=True, norm_groups=4, norm_starts=4, dconv_depth=2, dconv_mode=1,
              dconv_comp=4, dconv_attn=4, dconv_lstm=4, dconv_init=1e-4, resample=True, normalize=False,
              rescale=0.1)


def build(arch):
    if arch == "hdemucs_mmi":
        from demucs.hdemucs import HDemucs
        kw = dict(sources=SOURCES, audio_channels=2, samplerate=44100, segment=40, **HDEMUCS)
        return HDemucs, kw
    if arch == "mdx_demucs":
        from demucs.demucs import Demucs
        kw = dict(sources=SOURCES, audio_channels=2, samplerate=44100, segment=44, **DEMUCS)
        kw["rewrite"] = False
        return Demucs, kw
    raise SystemExit(f"unknown architecture {arch!r} (known: hdemucs_mmi, mdx_demucs)")


arch, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
klass, kw = build(arch)
model = klass(**kw)
state = {k: v.half() for k, v in model.state_dict().items()}
torch.save({"klass": klass, "args": (), "kwargs": kw, "state": state, "training_args": {}}, out)
n = sum(v.numel() for v in state.values())
print(f"{arch}: {n / 1e6:.1f} M parameters -> {out}")
