"""Graph Structure Learner (GSL) and its post-processing.

Pipeline (MSRL Sec. 3.1, after SUBLIME's FGP/attentive learner): node features X (n, d)
-> L layers of learnable element-wise weighting ``x * w_l`` with ReLU between layers -> E
(n, d) -> cosine similarity S = Ê Êᵀ (Ê row-normalised) -> keep the top-K entries of every
row (self excluded) plus a self-loop of weight 1 -> symmetrise (A + Aᵀ) / 2 -> ReLU ->
D^-1/2 A D^-1/2. Every row therefore has K neighbours + itself, plus whatever the
symmetrisation fills in from rows that chose it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from casegraph.models.msrl.graph_ops import coalesce, symmetric_topk_edges
from casegraph.models.msrl.knn_graph import topk_neighbours

ROW_CHUNK = 1024  # rows of an n-wide block held at once on the edge-list (sparse) paths


class ElementwiseLearner(nn.Module):
    """L layers of element-wise weighting; weights start at 1 so the initial graph is the
    cosine KNN graph of the inputs. ``(n, d) -> (n, d)``."""

    def __init__(self, dim: int, n_layers: int = 2, init: str = "ones", seed: int = 0) -> None:
        super().__init__()
        if init == "ones":
            weights = [torch.ones(dim) for _ in range(n_layers)]
        else:  # "random": the un-pretrained GSL ablation
            gen = torch.Generator().manual_seed(seed)
            weights = [torch.rand(dim, generator=gen) * 2.0 for _ in range(n_layers)]
        self.weights = nn.ParameterList([nn.Parameter(w) for w in weights])

    def forward(self, x: Tensor) -> Tensor:
        for i, w in enumerate(self.weights):
            x = x * w
            if i < len(self.weights) - 1:
                x = F.relu(x)
        return x


def cosine_similarity_matrix(emb: Tensor, other: Tensor | None = None) -> Tensor:
    """(n, d), (m, d) -> (n, m) cosine similarities (other defaults to emb)."""
    a = F.normalize(emb, dim=1)
    b = a if other is None else F.normalize(other, dim=1)
    return a @ b.T


def median_sq_distance(x: Tensor) -> Tensor:
    """Median off-diagonal squared Euclidean distance of (n, d) rows (a scalar)."""
    d2 = torch.cdist(x, x).pow(2)
    off = d2[~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)]
    return off.median().clamp_min(1e-8) if off.numel() else torch.tensor(1.0)


def gaussian_similarity_matrix(x: Tensor, other: Tensor, scale: Tensor) -> Tensor:
    """Static Euclidean KNN ablation: exp(-||xi - yj||² / scale) in (0, 1]; (n,d),(m,d) -> (n,m)."""
    return torch.exp(-torch.cdist(x, other).pow(2) / scale)


def topk_rows(sim: Tensor, k: int) -> Tensor:
    """Keep each row's k largest off-diagonal entries and put 1 on the diagonal.
    (n, n) -> (n, n); gradients flow into the kept values."""
    n = sim.shape[0]
    out = torch.zeros_like(sim)
    kk = min(k, n - 1)
    if kk > 0:
        eye = torch.eye(n, dtype=torch.bool, device=sim.device)
        masked = sim.masked_fill(eye, float("-inf"))
        values, index = masked.topk(kk, dim=1)
        out = out.scatter(1, index, values)
    return out + torch.eye(n, dtype=sim.dtype, device=sim.device)


def symmetrize(adj: Tensor) -> Tensor:
    return (adj + adj.T) / 2.0


def normalize_adjacency(adj: Tensor) -> Tensor:
    """D^-1/2 A D^-1/2 for a dense non-negative (n, n) A."""
    deg = adj.sum(dim=1)
    inv_sqrt = deg.clamp_min(1e-12).pow(-0.5)
    return inv_sqrt[:, None] * adj * inv_sqrt[None, :]


def post_process(sim: Tensor, k: int) -> Tensor:
    """Dense similarity (n, n) -> normalised sparse-pattern adjacency (n, n)."""
    return normalize_adjacency(F.relu(symmetrize(topk_rows(sim, k))))


def raw_adjacency(sim: Tensor, k: int) -> Tensor:
    """The symmetric non-negative adjacency before normalisation (for augmentation, BCE)."""
    return F.relu(symmetrize(topk_rows(sim, k)))


def augment_edges(adj: Tensor, drop: float, add: float, generator: torch.Generator) -> Tensor:
    """Edge-dropout + edge-addition view of a symmetric raw adjacency (n, n), self-loops kept.

    Drops each off-diagonal edge with probability ``drop``; adds ``add x |E|`` random new
    symmetric edges with the mean edge weight (detached). Returns the raw (unnormalised) view.
    """
    n = adj.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=adj.device)
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=adj.device), diagonal=1)
    edges = (adj > 0) & upper
    # drawn on the generator's device (CPU) so the stream is the same on any device
    keep = (torch.rand(n, n, generator=generator) >= drop).to(adj.device)
    keep = torch.triu(keep, diagonal=1)
    keep = keep | keep.T | eye
    view = adj * keep
    n_add = round(add * int(edges.sum()))
    if n_add > 0 and n > 1:
        rows = torch.randint(0, n, (n_add,), generator=generator).to(adj.device)
        cols = torch.randint(0, n, (n_add,), generator=generator).to(adj.device)
        off = rows != cols
        mean_w = adj[edges].mean().detach() if edges.any() else torch.tensor(1.0, device=adj.device)
        added = torch.zeros_like(adj)
        added[rows[off], cols[off]] = mean_w
        added = torch.maximum(added, added.T)
        view = torch.where((view == 0) & (added > 0), added, view)
    return view


def augment_edge_list(
    edge_index: Tensor, raw: Tensor, n: int, drop: float, add: float,
    generator: torch.Generator, chunk: int = ROW_CHUNK,
) -> tuple[Tensor, Tensor]:
    """:func:`augment_edges` on coalesced symmetric edges ((2, E), (E,), self-loops listed)
    in O(E + chunk x n) memory, with the same random draws and so the same view.

    The dense version draws one uniform per entry of an n x n matrix (row-major) and keeps
    edge (i < j) when its draw is >= ``drop``; here the same stream is drawn a row chunk at
    a time and read only at the edges, so the generator ends in the same state and the
    added edges (drawn next) are the same too. Returns the view's (edge_index, weight)."""
    rows, cols = edge_index
    lo, hi = torch.minimum(rows, cols), torch.maximum(rows, cols)
    draw = torch.ones(len(rows))
    for start in range(0, n, chunk):
        block = torch.rand(min(chunk, n - start), n, generator=generator)
        mine = (lo >= start) & (lo < start + chunk) & (lo != hi)
        draw[mine] = block[lo[mine] - start, hi[mine]]
    view = raw * ((draw >= drop) | (lo == hi))
    positive = (rows < cols) & (raw > 0)
    n_add = round(add * int(positive.sum()))
    if n_add == 0 or n < 2:
        return edge_index, view
    add_rows = torch.randint(0, n, (n_add,), generator=generator)
    add_cols = torch.randint(0, n, (n_add,), generator=generator)
    off = add_rows != add_cols
    mean_w = raw[positive].mean().detach() if bool(positive.any()) else torch.tensor(1.0)
    a, b = add_rows[off], add_cols[off]
    pairs = torch.unique(torch.cat([a * n + b, b * n + a]))  # both directions, sorted
    keys = rows * n + cols  # sorted: edge_index is coalesced
    at = torch.searchsorted(keys, pairs).clamp_max(max(len(keys) - 1, 0))
    listed = keys[at] == pairs if len(keys) else torch.zeros(len(pairs), dtype=torch.bool)
    empty = torch.zeros(len(keys), dtype=torch.bool)
    empty[at[listed]] = True
    view = torch.where(empty & (view == 0), mean_w.to(view.dtype), view)
    new = pairs[~listed]
    new_index = torch.stack([torch.div(new, n, rounding_mode="floor"), new % n])
    return coalesce(torch.cat([edge_index, new_index], dim=1),
                    torch.cat([view, mean_w.to(view.dtype).expand(len(new))]), n)


def chunked_median_sq_distance(
    x: Tensor, chunk: int = ROW_CHUNK, bins: int = 4096, keep_at_most: int = 1 << 22,
) -> Tensor:
    """:func:`median_sq_distance` in O(chunk x n + keep_at_most) memory, exact: the
    histogram of the upper triangle's squared distances (a chunk of rows at a time) finds
    the bin holding the median's rank, narrowed again while that bin holds more than
    ``keep_at_most`` values, whose values are then sorted. Each pair appears twice in the
    off-diagonal list, so its lower median is the upper triangle's lower median."""
    n = x.shape[0]
    if n < 2:
        return torch.tensor(1.0)
    rank = (n * (n - 1) // 2 - 1) // 2  # 0-based: torch.median's lower median
    cells: list[tuple[float, float, int]] = []  # (low, width, bin) of each narrowing

    def in_cell(values: Tensor) -> Tensor:
        for low, width, target in cells:
            values = values[_bin_of(values, low, width, bins) == target]
        return values

    for _ in range(16):
        low, high = float("inf"), float("-inf")
        for block in _upper_sq_distances(x, chunk):
            mine = in_cell(block)
            if len(mine):
                low, high = min(low, float(mine.min())), max(high, float(mine.max()))
        width = (high - low) / bins or 1.0
        counts = torch.zeros(bins, dtype=torch.long)
        for block in _upper_sq_distances(x, chunk):
            counts += torch.bincount(_bin_of(in_cell(block), low, width, bins), minlength=bins)
        cumulative = counts.cumsum(0)
        target = int(torch.searchsorted(cumulative, torch.tensor(rank), right=True))
        rank -= int(cumulative[target - 1]) if target > 0 else 0
        cells.append((low, width, target))
        if int(counts[target]) <= keep_at_most or high == low:
            break
    kept = torch.cat([in_cell(block) for block in _upper_sq_distances(x, chunk)])
    return kept.sort().values[rank].clamp_min(1e-8)


def _bin_of(values: Tensor, low: float, width: float, bins: int) -> Tensor:
    return ((values - low) / width).long().clamp(0, bins - 1)


def _upper_sq_distances(x: Tensor, chunk: int) -> Iterator[Tensor]:
    """The squared distances of pairs (i < j), a chunk of rows i at a time, flattened."""
    n = x.shape[0]
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        d2 = torch.cdist(x[rows], x).pow(2)
        yield d2[rows[:, None] < torch.arange(n)[None, :]]


class GraphLearner(nn.Module):
    """Features (n, d) -> normalised adjacency (n, n), learned or static (ablations)."""

    def __init__(
        self, dim: int, k: int, kind: str = "learned", n_layers: int = 2,
        init: str = "ones", seed: int = 0,
    ) -> None:
        super().__init__()
        self.k, self.kind = k, kind
        self.learner = ElementwiseLearner(dim, n_layers, init=init, seed=seed)
        if kind != "learned":
            self.learner.requires_grad_(False)
        # Euclidean ablation: kernel width, set from the training graphs, fixed at inference
        self.scale: Tensor
        self.register_buffer("scale", torch.tensor(1.0))

    def embed(self, x: Tensor) -> Tensor:
        """The GSL embedding E (n, d) used for S = Ê Êᵀ."""
        return self.learner(x) if self.kind == "learned" else x

    def similarity(self, x: Tensor) -> Tensor:
        """(n, d) -> (n, n) similarity among the rows of x."""
        if self.kind == "euclidean_knn":
            if self.training:
                self.scale.copy_(median_sq_distance(x.detach()))
            return gaussian_similarity_matrix(x, x, self.scale)
        return cosine_similarity_matrix(self.embed(x))

    def keys(self, x: Tensor) -> Tensor:
        """What similarities are computed from: normalised E (cosine) or x (Euclidean)."""
        return x if self.kind == "euclidean_knn" else F.normalize(self.embed(x), dim=1)

    def key_similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """(n, m) similarity between precomputed keys (see :meth:`keys`)."""
        if self.kind == "euclidean_knn":
            return gaussian_similarity_matrix(a, b, self.scale)
        return a @ b.T

    def pair_similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """(n,) similarity of row-paired precomputed keys a[i], b[i] (see :meth:`keys`)."""
        if self.kind == "euclidean_knn":
            return torch.exp(-(a - b).pow(2).sum(dim=1) / self.scale)
        return (a * b).sum(dim=1)

    def key_topk(self, keys: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
        """Every row's top-``k`` other rows by similarity among precomputed keys (M, d), in
        O(M K) memory (exact FAISS search, :mod:`casegraph.models.msrl.knn_graph`).
        -> (values (M, c), index (M, c)), c = min(k, M - 1), rows sorted decreasing."""
        metric = "l2" if self.kind == "euclidean_knn" else "ip"
        return topk_neighbours(keys, self.k, metric, self.pair_similarity, chunk=chunk)

    def cross_similarity(self, x: Tensor, other: Tensor) -> Tensor:
        """(n, d), (m, d) -> (n, m) similarity between two node sets (inference path)."""
        if self.kind == "euclidean_knn":
            return gaussian_similarity_matrix(x, other, self.scale)
        return cosine_similarity_matrix(self.embed(x), self.embed(other))

    def raw_edges(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`raw` as coalesced edges without an n x n matrix: (n, d) -> (edge_index
        (2, E), weight (E,)), E = O(n K); the top-K pairs chosen without gradient, their
        values recomputed with it (the same graph as the dense path, ties aside)."""
        if self.kind == "euclidean_knn" and self.training:
            self.scale.copy_(chunked_median_sq_distance(x.detach()))
        values, index = self.key_topk(self.keys(x))
        return symmetric_topk_edges(index, values, x.shape[0])

    def raw(self, x: Tensor) -> Tensor:
        return raw_adjacency(self.similarity(x), self.k)

    def forward(self, x: Tensor) -> Tensor:
        return normalize_adjacency(self.raw(x))
