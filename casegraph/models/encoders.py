"""Encoders: SNN for genomics (per gene group, as in MCAT/CCL), gated-attention ABMIL and
mean pooling for patch bags.

Bags are one patient's patches stacked over all of the patient's slides: (N, D). ABMIL
computes attention chunk by chunk with an online softmax, so a 50,000-patch bag never
materialises more than ``chunk_size`` projected patches at once at inference; under
autograd the per-chunk activations are kept for the backward pass (O(N * hidden)).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn


def init_snn_weights(module: nn.Module) -> None:
    """MCAT ``init_max_weights``: N(0, 1/fan_in) weights, zero biases (LeCun normal)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.weight.size(1)))
            if m.bias is not None:
                m.bias.data.zero_()


class SNN(nn.Module):
    """Self-normalising network: ``n_layers`` x (Linear, ELU, AlphaDropout). (B, in) -> (B, hidden)."""

    def __init__(self, in_dim: int, hidden: int = 256, n_layers: int = 2,
                 dropout: float = 0.25) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden] * n_layers
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ELU(), nn.AlphaDropout(p=dropout)]
        self.net = nn.Sequential(*layers)
        self.out_dim = hidden
        init_snn_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class GroupSNN(nn.Module):
    """One SNN per gene group: list of G tensors (B, g_j) -> (B, G, hidden)."""

    def __init__(self, group_sizes: list[int], hidden: int = 256, n_layers: int = 2,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.group_sizes = list(group_sizes)
        self.nets = nn.ModuleList(SNN(g, hidden, n_layers, dropout) for g in group_sizes)
        self.out_dim = hidden

    def forward(self, groups: list[Tensor]) -> Tensor:
        if len(groups) != len(self.nets):
            raise ValueError(f"expected {len(self.nets)} gene groups, got {len(groups)}")
        return torch.stack([net(x) for net, x in zip(self.nets, groups, strict=True)], dim=1)


class GatedAttentionMIL(nn.Module):
    """Gated-attention MIL pooling (Ilse et al. 2018; the MCAT/CLAM ``Attn_Net_Gated``).

    Patches are projected by Linear(in, hidden)+ReLU+Dropout, scored by
    ``w^T (tanh(V h) * sigmoid(U h))`` and averaged with softmax weights.
    bag (N, in) [or (1, N, in)] -> (embedding (hidden,), attention (N,) summing to 1).
    """

    def __init__(self, in_dim: int, hidden: int = 256, dropout: float = 0.25,
                 chunk_size: int = 8192) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attn_a = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.attn_b = nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.attn_c = nn.Linear(hidden, 1)
        self.chunk_size = chunk_size
        self.out_dim = hidden

    def forward(self, bag: Tensor) -> tuple[Tensor, Tensor]:
        if bag.dim() == 3 and bag.shape[0] == 1:
            bag = bag[0]
        if bag.dim() != 2 or bag.shape[0] == 0:
            raise ValueError(f"bag must be (N, D) with N >= 1, got {tuple(bag.shape)}")
        running_max = bag.new_full((), -math.inf)
        weight_sum = bag.new_zeros(())
        weighted = bag.new_zeros(self.out_dim)
        logits = []
        for start in range(0, bag.shape[0], self.chunk_size):
            h = self.project(bag[start:start + self.chunk_size])
            a = self.attn_c(self.attn_a(h) * self.attn_b(h)).squeeze(1)
            logits.append(a)
            new_max = torch.maximum(running_max, a.max())
            scale = torch.exp(running_max - new_max)
            w = torch.exp(a - new_max)
            weight_sum = weight_sum * scale + w.sum()
            weighted = weighted * scale + w @ h
            running_max = new_max
        attention = torch.softmax(torch.cat(logits), dim=0)
        return weighted / weight_sum, attention


class MeanPoolMIL(nn.Module):
    """Mean pooling baseline: mean of the raw patch features, then Linear+ReLU+Dropout.

    Pooling before the projection (rather than after) makes it exactly computable from a
    precomputed per-slide mean embedding. bag (N, in) -> (embedding (hidden,), attention (N,)).
    """

    def __init__(self, in_dim: int, hidden: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.out_dim = hidden

    def forward(self, bag: Tensor) -> tuple[Tensor, Tensor]:
        if bag.dim() == 3 and bag.shape[0] == 1:
            bag = bag[0]
        n = bag.shape[0]
        return self.project(bag.mean(dim=0)), bag.new_full((n,), 1.0 / n)
