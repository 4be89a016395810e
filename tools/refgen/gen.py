#!/usr/bin/env python3
# Random-weight HTDemucs variants saved like upstream's serialize_model(half=True),
# plus the reference forward output on a random input. Investigation only.
import sys, json, torch, numpy as np
from fractions import Fraction
import os
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "stubs"))
sys.path.insert(0, os.environ["DEMIX_UPSTREAM"])  # a checkout of facebookresearch/demucs
from demucs.htdemucs import HTDemucs

OUT = os.environ.get("OUT", ".")
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
g = torch.Generator().manual_seed(seed + 1)
x = torch.randn(1, kw.get("audio_channels", 2), L, generator=g) * 0.1
with torch.no_grad():
    y = m(x)
np.save(os.path.join(OUT, f"{name}_in.npy"), x[0].numpy().astype(np.float32))
np.save(os.path.join(OUT, f"{name}_out.npy"), y[0].numpy().astype(np.float32))
print(name, "ok", y.shape, float(y.abs().max()))
