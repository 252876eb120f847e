"""A GCN over a given normalised adjacency: Z = Â ReLU(Â ... ReLU(Â X W1) ...) W_L.

The adjacency comes from the graph structure learner already normalised (D^-1/2 A D^-1/2),
so each layer is just ``Â @ (X W)``; ``Â`` may be a dense (n, n) tensor (small graphs) or
a torch sparse COO tensor (Stage 1 and Stage 2 graphs from 2,048 nodes, inference against
large buffers). Both paths share the same weights.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GCN(nn.Module):
    """(n, in_dim) x (n, n) -> (n, hidden); ``n_layers`` propagation steps, ReLU + dropout
    between layers, none after the last."""

    def __init__(self, in_dim: int, hidden: int = 256, n_layers: int = 3, dropout: float = 0.25):
        super().__init__()
        dims = [in_dim] + [hidden] * n_layers
        pairs = list(itertools.pairwise(dims))
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in pairs)
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(b)) for _, b in pairs)
        self.dropout = dropout

    def forward(self, x: Tensor, adj: Tensor, first: Tensor | None = None) -> Tensor:
        """``first``: x W_1 when the caller has it precomputed (the buffer at inference)."""
        for i, (layer, bias) in enumerate(zip(self.layers, self.biases, strict=True)):
            h = first if i == 0 and first is not None else layer(x)
            x = (torch.sparse.mm(adj, h) if adj.is_sparse else adj @ h) + bias
            if i < len(self.layers) - 1:
                x = F.dropout(F.relu(x), self.dropout, self.training)
        return x
