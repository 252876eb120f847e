"""Nyström self-attention, the PPEG positional encoder and TransMIL-style blocks.

Written from the papers (Xiong et al., AAAI 2021, "Nyströmformer"; Shao et al., NeurIPS
2021, "TransMIL"); no external package. Shapes: ``B`` batch, ``n`` tokens, ``d`` width,
``h`` heads, ``m`` landmarks.

Nyström attention approximates ``softmax(Q K^T / sqrt(d_h)) V`` by
``softmax(Q K_l^T) pinv(softmax(Q_l K_l^T)) softmax(Q_l K^T) V`` where ``Q_l``, ``K_l``
are segment means of the (front-padded) sequence; the pseudo-inverse uses the iterative
Moore-Penrose scheme of the paper. With ``m >= n`` landmarks the exact attention is used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def iterative_pinv(x: torch.Tensor, n_iter: int = 6) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of (..., m, m) softmax matrices by Razavi et al.'s
    iteration (as in Nyströmformer); exact inverse in the limit."""
    abs_x = x.abs()
    col = abs_x.sum(dim=-1)
    row = abs_x.sum(dim=-2)
    z = x.transpose(-1, -2) / (col.amax(dim=-1) * row.amax(dim=-1))[..., None, None]
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(n_iter):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Multi-head Nyström self-attention: (B, n, d) -> (B, n, d).

    ``n_landmarks`` m; ``pinv_iter`` pseudo-inverse iterations; ``residual_kernel`` the
    depthwise conv over values along the sequence (Nyströmformer's skip; 0 disables).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        n_landmarks: int = 256,
        pinv_iter: int = 6,
        residual_kernel: int = 33,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.n_landmarks, self.pinv_iter = heads, n_landmarks, pinv_iter
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))
        self.res_conv: nn.Conv2d | None = None
        if residual_kernel:
            self.res_conv = nn.Conv2d(heads, heads, (residual_kernel, 1),
                                      padding=(residual_kernel // 2, 0), groups=heads,
                                      bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        m = self.n_landmarks
        pad = (-n) % m if n > m else 0
        if pad:
            x = F.pad(x, (0, 0, pad, 0))
        q, k, v = (
            t.reshape(b, -1, self.heads, self.head_dim).transpose(1, 2)
            for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        q = q * self.scale
        if n <= m:
            out = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        else:
            out = self._nystrom(q, k, v, m)
        if self.res_conv is not None:
            out = out + self.res_conv(v)
        out = out.transpose(1, 2).reshape(b, -1, d)
        return self.to_out(out)[:, pad:]

    def _nystrom(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: int) -> torch.Tensor:
        b, h, n, dh = q.shape
        seg = n // m
        q_l = q.reshape(b, h, m, seg, dh).mean(dim=-2)
        k_l = k.reshape(b, h, m, seg, dh).mean(dim=-2)
        attn1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-1)  # (b,h,n,m)
        attn2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)  # (b,h,m,m)
        attn3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-1)  # (b,h,m,n)
        return (attn1 @ iterative_pinv(attn2, self.pinv_iter)) @ (attn3 @ v)


class TransLayer(nn.Module):
    """Pre-norm residual Nyström MSA block as in TransMIL: x + MSA(LN(x)); (B,n,d)->(B,n,d).

    TransMIL uses ``n_landmarks = dim // 2`` and ``heads = 8``.
    """

    def __init__(self, dim: int, heads: int = 8, n_landmarks: int | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(dim, heads=heads, n_landmarks=n_landmarks or dim // 2,
                                     dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


class PPEG(nn.Module):
    """Pyramid position encoding generator (TransMIL): (B, 1+n, d) -> (B, 1+n, d).

    The first token is the class token and passes through; the n others are laid on a
    ceil(sqrt(n))^2 grid (padded by repeating the first tokens, as TransMIL does), mixed by
    7x7, 5x5 and 3x3 depthwise convolutions plus identity, and cut back to n tokens.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj7 = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.proj5 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.proj3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n1, d = x.shape
        cls, feats = x[:, :1], x[:, 1:]
        n = n1 - 1
        side = max(1, math.ceil(math.sqrt(n)))
        extra = side * side - n
        if extra:
            reps = math.ceil(extra / n)
            feats = torch.cat([feats, feats.repeat(1, reps, 1)[:, :extra]], dim=1)
        grid = feats.transpose(1, 2).reshape(b, d, side, side)
        grid = grid + self.proj7(grid) + self.proj5(grid) + self.proj3(grid)
        feats = grid.flatten(2).transpose(1, 2)[:, :n]
        return torch.cat([cls, feats], dim=1)


class TransMILBlocks(nn.Module):
    """TransMIL's encoder: MSA -> PPEG -> MSA, then LayerNorm. (B, 1+n, d) -> (B, 1+n, d)
    with token 0 the class token."""

    def __init__(self, dim: int, heads: int = 8, n_landmarks: int | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.layer1 = TransLayer(dim, heads, n_landmarks, dropout)
        self.ppeg = PPEG(dim)
        self.layer2 = TransLayer(dim, heads, n_landmarks, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layer2(self.ppeg(self.layer1(x))))
