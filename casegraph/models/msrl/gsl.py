"""Graph Structure Learner (GSL) and its post-processing.

Pipeline (MSRL Sec. 3.1, after SUBLIME's FGP/attentive learner): node features X (n, d)
-> L layers of learnable element-wise weighting ``x * w_l`` with ReLU between layers -> E
(n, d) -> cosine similarity S = Ê Êᵀ (Ê row-normalised) -> keep the top-K entries of every
row (self excluded) plus a self-loop of weight 1 -> symmetrise (A + Aᵀ) / 2 -> ReLU ->
D^-1/2 A D^-1/2. Every row therefore has K neighbours + itself, plus whatever the
symmetrisation fills in from rows that chose it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from casegraph.models.msrl.knn_graph import topk_neighbours


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

    def raw(self, x: Tensor) -> Tensor:
        return raw_adjacency(self.similarity(x), self.k)

    def forward(self, x: Tensor) -> Tensor:
        return normalize_adjacency(self.raw(x))
