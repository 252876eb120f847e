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
