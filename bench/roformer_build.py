#!/usr/bin/env python3
"""Builds a full-size BS-RoFormer or Mel-Band RoFormer with random weights in
the real checkpoint layout (torch.save of MSST's state_dict, as the viperx
and Kimberley Jensen releases are) from a real MSST config, with MSST's own
model classes. Not a test: bench/roformer.sh uses it.

    DEMIX_MSST=DIR bench/roformer_build.py CONFIG.yaml OUT_STEM [SEED]

writes OUT_STEM.yaml (the config, unchanged) and OUT_STEM.ckpt. DIR is a
checkout of ZFTurbo/Music-Source-Separation-Training; the packages Debian
lacks come from bench/msst_shims. flash_attn is turned off to build (torch
1.13 has no fused attention; the weights are the same)."""
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "msst_shims"))
sys.path.insert(0, os.environ["DEMIX_MSST"])
import torch  # noqa: E402
import yaml  # noqa: E402


def build(cfg_path):
    with open(cfg_path) as f:
        cfg = yaml.load(f, Loader=yaml.FullLoader)
    kw = dict(cfg["model"])
    kw["flash_attn"] = False
    if "freqs_per_bands" in kw:
        from models.bs_roformer.bs_roformer import BSRoformer as cls
    else:
        from models.bs_roformer.mel_band_roformer import MelBandRoformer as cls
    return cls(**kw).eval(), cfg


def main():
    cfg_path, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    model, _ = build(cfg_path)
    n = sum(p.numel() for p in model.parameters())
    torch.save(model.state_dict(), out + ".ckpt")
    shutil.copyfile(cfg_path, out + ".yaml")
    print(f"{type(model).__name__}: {n / 1e6:.1f} M parameters -> {out}.ckpt")


if __name__ == "__main__":
    main()
