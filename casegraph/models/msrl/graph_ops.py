"""Sparse-graph helpers in plain torch, so the query path does not import torch-geometric.

``import torch_geometric`` imports ``torch._dynamo`` and costs seconds per cold process
(measured ~7 s, 14 s on a loaded 2-core box), more than a whole WSI-only query; the query
path needed only :func:`coalesce` from it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def coalesce(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Sort edges by (row, col) and sum the weights of duplicates.

    ``edge_index`` (2, E) long, ``edge_weight`` (E,) or (E, F) -> (``edge_index`` (2, U),
    ``edge_weight`` (U,) or (U, F)) with U unique edges in row-major order, the same result
    as ``torch_geometric.utils.coalesce(edge_index, edge_weight, num_nodes, reduce="sum")``.
    """
    if edge_index.numel() == 0:
        return edge_index, edge_weight
    keys = edge_index[0] * num_nodes + edge_index[1]
    unique_keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    summed = torch.zeros((len(unique_keys), *edge_weight.shape[1:]), dtype=edge_weight.dtype,
                         device=edge_weight.device).index_add_(0, inverse, edge_weight)
    rows = torch.div(unique_keys, num_nodes, rounding_mode="floor")
    return torch.stack([rows, unique_keys - rows * num_nodes]), summed


def symmetric_topk_edges(index: Tensor, values: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Every row's top-K list -> the raw adjacency relu((R + Rᵀ) / 2) as coalesced edges,
    R = the lists plus a self-loop of 1 (what ``gsl.raw_adjacency`` holds densely).

    ``index`` (n, c) long, ``values`` (n, c) (gradients flow) -> (``edge_index`` (2, E)
    row-major, ``weight`` (E,)); a pair both rows dropped to 0 after the ReLU stays listed."""
    c = index.shape[1]
    rows = torch.arange(n).repeat_interleave(c)
    cols, vals = index.reshape(-1), values.reshape(-1)
    loops = torch.arange(n)
    edge_index = torch.stack([torch.cat([rows, cols, loops]), torch.cat([cols, rows, loops])])
    weight = torch.cat([vals / 2, vals / 2, torch.ones(n, dtype=values.dtype)])
    edge_index, weight = coalesce(edge_index, weight, n)
    return edge_index, weight.clamp_min(0.0)


def normalized_sparse_adjacency(edge_index: Tensor, weight: Tensor, n: int) -> Tensor:
    """D^-1/2 A D^-1/2 of coalesced edges (``gsl.normalize_adjacency`` without the n x n
    matrix): (2, E), (E,) -> a coalesced torch sparse COO (n, n); gradients flow into
    ``weight``."""
    degree = torch.zeros(n, dtype=weight.dtype).index_add(0, edge_index[0], weight)
    inv = degree.clamp_min(1e-12).pow(-0.5)
    normalized = inv[edge_index[0]] * weight * inv[edge_index[1]]
    return torch.sparse_coo_tensor(edge_index, normalized, (n, n), is_coalesced=True,
                                   check_invariants=False)
