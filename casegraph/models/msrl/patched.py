"""A query's graph as a patch of the cached buffer graph (the WSI-only inference fast path).

The post-processed graph over buffer + query q is relu((R + Rᵀ) / 2) normalised, where R
holds every row's top-K similarities and a self-loop. Adding q changes R in few places:
q's own row (its top-K), and every buffer row whose K-th neighbour q beats (that
neighbour is replaced by q). So the buffer's symmetric pre-ReLU graph is built once
(:class:`SymmetricGraph`), and a query only records the changed entries, q's edges and
the new degrees (:class:`PatchedGraph`); rows are read from the cache on demand, in
O(rows × K), instead of coalescing all M K edges per query. Exact: the tests compare it
with the dense graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from casegraph.models.msrl.graph_ops import coalesce


@dataclass
class SymmetricGraph:
    """The buffer-only graph (R + Rᵀ) / 2 before ReLU, in CSR order; self-loops included."""

    rowptr: Tensor  # (M + 1,) long
    col: Tensor  # (E,) long
    pre: Tensor  # (E,) pre-ReLU symmetric values
    keys: Tensor  # (E,) row * M + col, ascending
    degree: Tensor  # (M,) sum of relu(pre) per row

    @classmethod
    def from_topk(cls, index: Tensor, values: Tensor) -> SymmetricGraph:
        """From every row's top-K ``index``/``values`` (M, K) (self excluded)."""
        m = index.shape[0]
        rows = torch.arange(m).repeat_interleave(index.shape[1])
        flat_idx, half = index.reshape(-1), values.reshape(-1) / 2.0
        loops = torch.arange(m)
        edge_index = torch.stack([torch.cat([rows, flat_idx, loops]),
                                  torch.cat([flat_idx, rows, loops])])
        edge_index, pre = coalesce(edge_index, torch.cat([half, half, torch.ones(m)]), m)
        rowptr = torch.zeros(m + 1, dtype=torch.long)
        rowptr[1:] = torch.bincount(edge_index[0], minlength=m).cumsum(0)
        degree = torch.zeros(m).index_add_(0, edge_index[0], pre.clamp_min(0.0))
        return cls(rowptr, edge_index[1], pre, edge_index[0] * m + edge_index[1], degree)

    def rows(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(src, dst, edge positions) of every stored edge of the rows ``ids``."""
        start = self.rowptr[ids]
        counts = self.rowptr[ids + 1] - start
        src = ids.repeat_interleave(counts)
        first = (counts.cumsum(0) - counts).repeat_interleave(counts)
        pos = start.repeat_interleave(counts) + torch.arange(int(counts.sum())) - first
        return src, self.col[pos], pos


@dataclass
class PatchedGraph:
    """Buffer graph + query q (node M): changed entries, q's edges and the new D^-1/2."""

    base: SymmetricGraph
    n_buffer: int
    changed_pos: Tensor  # (c,) ascending edge positions in ``base`` whose value changes
    changed_pre: Tensor  # (c,) their new pre-ReLU values
    q_neighbours: Tensor  # (t,) buffer ids with an entry in q's row/column
    q_pre: Tensor  # (t,) their pre-ReLU values A[q, x] = A[x, q]
    inv_sqrt_degree: Tensor  # (M + 1,)

    @classmethod
    def build(cls, base: SymmetricGraph, index: Tensor, values: Tensor, s_q: Tensor,
              k: int) -> PatchedGraph:
        """``index``/``values`` (M, K): the buffer rows' top-K; ``s_q`` (M,): q's similarity
        to every buffer node. Needs M > K (every row full), as the caller ensures."""
        m = index.shape[0]
        beats = torch.nonzero(s_q > values[:, -1]).flatten()
        dropped, dropped_val = index[beats, -1], values[beats, -1]
        keys = torch.cat([beats * m + dropped, dropped * m + beats])
        keys, inverse = torch.unique(keys, return_inverse=True)
        decrement = torch.zeros(len(keys)).index_add_(0, inverse, torch.cat([dropped_val] * 2) / 2)
        pos = torch.searchsorted(base.keys, keys)
        old = base.pre[pos]
        new = old - decrement
        degree = base.degree.clone()
        degree.index_add_(0, keys // m, new.clamp_min(0.0) - old.clamp_min(0.0))
        q_vals, q_idx = s_q.topk(k)
        a_q = torch.zeros(m).index_add_(0, q_idx, q_vals / 2).index_add_(0, beats, s_q[beats] / 2)
        neighbours = torch.unique(torch.cat([q_idx, beats]))
        q_pre = a_q[neighbours]
        degree.index_add_(0, neighbours, q_pre.clamp_min(0.0))
        degree_q = 1.0 + q_pre.clamp_min(0.0).sum()
        inv = torch.cat([degree, degree_q[None]]).clamp_min(1e-12).pow(-0.5)
        return cls(base, m, pos, new, neighbours, q_pre, inv)

    def edges_of(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(src, dst, normalised weight) of every edge of the rows ``ids`` (q = M allowed)."""
        m = self.n_buffer
        buffer_ids = ids[ids < m]
        src, dst, pos = self.base.rows(buffer_ids)
        pre = self.base.pre[pos]
        if len(self.changed_pos):
            loc = torch.searchsorted(self.changed_pos, pos).clamp_max(len(self.changed_pos) - 1)
            hit = self.changed_pos[loc] == pos
            pre = torch.where(hit, self.changed_pre[loc], pre)
        slot = torch.full((m,), -1, dtype=torch.long)
        slot[self.q_neighbours] = torch.arange(len(self.q_neighbours))
        to_q = buffer_ids[slot[buffer_ids] >= 0]
        q = torch.tensor([m])
        parts = [(src, dst, pre), (to_q, q.expand(len(to_q)), self.q_pre[slot[to_q]])]
        if bool((ids == m).any()):
            parts.append((q.expand(len(self.q_neighbours)), self.q_neighbours, self.q_pre))
            parts.append((q, q, torch.ones(1)))
        src, dst, pre = (torch.cat(p) for p in zip(*parts, strict=True))
        weight = pre.clamp_min(0.0) * self.inv_sqrt_degree[src] * self.inv_sqrt_degree[dst]
        return src, dst, weight
