#!/usr/bin/env python3
"""Times upstream Demucs (PyTorch) separating a file with a .th checkpoint of
any upstream class (HTDemucs, HDemucs, Demucs: the class stored in the file):
the same whole-track pipeline as `demucs` (normalise, apply_model with
shifts 0, overlap 0.25, de-normalise). Needs DEMIX_UPSTREAM (an upstream
checkout) and python3-torch; decoding uses ffmpeg. Prints the seconds spent."""
import os, subprocess, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "refgen", "stubs"))
sys.path.insert(0, os.environ["DEMIX_UPSTREAM"])
import numpy as np
import torch
from demucs.apply import apply_model

model_path, audio, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
pkg = torch.load(model_path, map_location="cpu")
model = pkg["klass"](*pkg["args"], **pkg["kwargs"])
model.load_state_dict({k: v.float() for k, v in pkg["state"].items()})
model.eval()
raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", audio, "-f", "f32le", "-ac", "2", "-ar",
                      str(model.samplerate), "-"], check=True, capture_output=True).stdout
wav = torch.from_numpy(np.frombuffer(raw, dtype=np.float32).reshape(-1, 2).T.copy())
t0 = time.time()
ref = wav.mean(0)
wav = (wav - ref.mean()) / (ref.std() + 1e-8)
with torch.no_grad():
    out = apply_model(model, wav[None], shifts=0, split=True, overlap=0.25)[0]
out = out * (ref.std() + 1e-8) + ref.mean()
print(f"upstream: {time.time() - t0:.1f} s for {wav.shape[-1] / model.samplerate:.1f} s of audio")
