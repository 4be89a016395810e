"""RotaryEmbedding stand-in: rotary-embedding-torch 0.8.9's defaults as the
MSST RoFormers use them (freqs_for 'lang', theta 10000, interleaved pairs,
no xpos, positions 0..n-1 along dim -2)."""
import torch
import torch.nn as nn


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, theta=10000, **_):
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def rotate_queries_or_keys(self, t, seq_dim=-2):
        n = t.shape[seq_dim]
        pos = torch.arange(n, device=t.device, dtype=self.freqs.dtype)
        ang = torch.einsum("i,f->if", pos, self.freqs).repeat_interleave(2, dim=-1)
        x = t.reshape(*t.shape[:-1], -1, 2)
        rot = torch.stack((-x[..., 1], x[..., 0]), dim=-1).reshape(t.shape)
        return t * ang.cos() + rot * ang.sin()
