#!/usr/bin/env python3
"""Times the reference: MSST's whole-track demix() (utils/model_utils.py,
its default inference settings but batch_size 1, the batch-independent
result demix computes) with PyTorch on the CPU, on one audio file.

    DEMIX_MSST=DIR bench/roformer_ref.py CONFIG.yaml CKPT AUDIO THREADS [OUT.npy]

Prints "reference: S s for A s of audio"; OUT.npy receives the stems
(stems, channels, samples) to compare with demix's."""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from roformer_build import build  # noqa: E402  (sets the paths)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402
from utils.model_utils import demix  # noqa: E402

cfg_path, ckpt, audio, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
model, cfg = build(cfg_path)
sd = torch.load(ckpt, map_location="cpu")
for k in ("state", "state_dict", "model_state_dict"):
    if isinstance(sd, dict) and k in sd:
        sd = sd[k]
model.load_state_dict(sd)
config = ConfigDict(cfg)
config.inference.batch_size = 1
sr = config.audio.get("sample_rate", 44100)
raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", audio, "-f", "f32le", "-ac", "2", "-ar", str(sr), "-"],
                     check=True, capture_output=True).stdout
mix = np.frombuffer(raw, dtype=np.float32).reshape(-1, 2).T.copy()
kind = "bs_roformer" if "freqs_per_bands" in cfg["model"] else "mel_band_roformer"
t0 = time.time()
res = demix(config, model, torch.from_numpy(mix), torch.device("cpu"), kind)
dt = time.time() - t0
print(f"reference: {dt:.1f} s for {mix.shape[1] / sr:.1f} s of audio")
if len(sys.argv) > 5:
    np.save(sys.argv[5], np.stack([res[k] for k in res]).astype(np.float32))
