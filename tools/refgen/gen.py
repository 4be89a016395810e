#!/usr/bin/env python3
# Random-weight HTDemucs variants saved like upstream's serialize_model(half=True),
# plus the reference forward output on a random input. Investigation only, except
# the tiny fixtures in tests/data/refgen (see its README) made with INPUT=sines.
# Environment: OUT (folder), INPUT=sines or noise (a formula instead of random input;
# no _in.npy written), APPLY=1 (reference = apply_model(shifts=0, split, overlap 0.25)
# instead of the forward), SUB=k (keep every k-th output sample), DEMIX_OPENUNMIX
# (optional: a folder holding a real `openunmix` package, e.g. a checkout of
# sigsep/open-unmix-pytorch, used instead of the stub; needed for cac=False models
# with wiener_iters >= 0, whose _mask calls openunmix.filtering.wiener).
import sys, json, torch, numpy as np
from fractions import Fraction
import os
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "stubs"))
if os.environ.get("DEMIX_OPENUNMIX"):
    sys.path.insert(0, os.environ["DEMIX_OPENUNMIX"])
sys.path.insert(0, os.environ["DEMIX_UPSTREAM"])  # a checkout of facebookresearch/demucs
from demucs.htdemucs import HTDemucs

OUT = os.environ.get("OUT", ".")


def sines_input(channels, length):
    """(channels, length) float32: 0.1 sin(2 pi 97.5 (c+1) t) + 0.05 sin(2 pi 1201 t + c), t = i / 44100,
    computed in float64 then rounded (tests/test_net.c's sines_input)."""
    t = np.arange(length, dtype=np.float64) / 44100.0
    return np.stack([0.1 * np.sin(2 * np.pi * 97.5 * (c + 1) * t) + 0.05 * np.sin(2 * np.pi * 1201.0 * t + c)
                     for c in range(channels)]).astype(np.float32)


def noise_input(channels, length):
    """(channels, length) float32 white noise in [-0.1, 0.1) from a 64-bit LCG (Knuth's MMIX constants,
    state 12345, channel after channel, the top 24 bits of each state), computed in float64 then rounded
    (tests/test_net.c's noise_input). Unlike sines every STFT bin has energy, so the mixture phase that
    cac=False models reuse is well conditioned."""
    st, out = 12345, np.empty(channels * length, dtype=np.float64)
    for i in range(channels * length):
        st = (st * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out[i] = ((st >> 40) / 16777216.0 - 0.5) * 0.2
    return out.reshape(channels, length).astype(np.float32)


name, seed, kw = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
torch.manual_seed(seed)
kw.setdefault("segment", Fraction(39, 5))
if isinstance(kw["segment"], list): kw["segment"] = Fraction(*kw["segment"])
m = HTDemucs(**kw)
# scale weights up a bit so branches matter (rescale makes them tiny)
state = {k: v.half() for k, v in m.state_dict().items()}
torch.save({"klass": HTDemucs, "args": (), "kwargs": kw, "state": state, "training_args": {}}, os.path.join(OUT, f"{name}.th"))
m.load_state_dict({k: v.float() for k, v in state.items()})
m.eval()
L = int(sys.argv[4]) if len(sys.argv) > 4 else 132300
A = kw.get("audio_channels", 2)
if os.environ.get("INPUT") in ("sines", "noise"):
    # reproducible without a file: tests/test_net.c's sines_input() / noise_input() compute the same
    x = torch.from_numpy((sines_input if os.environ["INPUT"] == "sines" else noise_input)(A, L))[None]
else:
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, A, L, generator=g) * 0.1
with torch.no_grad():
    if os.environ.get("APPLY"):
        # upstream's apply_model: shifts 0, split, overlap 0.25 (segmenting rules)
        from demucs.apply import apply_model
        y = apply_model(m, x, shifts=0, split=True, overlap=0.25)
    else:
        y = m(x)
sub = int(os.environ.get("SUB", "1"))  # keep every sub-th sample of the output
if os.environ.get("INPUT") not in ("sines", "noise"):
    np.save(os.path.join(OUT, f"{name}_in.npy"), x[0].numpy().astype(np.float32))
np.save(os.path.join(OUT, f"{name}_out.npy"), np.ascontiguousarray(y[0].numpy()[..., ::sub]).astype(np.float32))
print(name, "ok", y.shape, float(y.abs().max()))
