"""Exact top-K neighbour lists of M nodes without an M x M matrix (MSRL's buffer graph).

The graph learner's similarity is either cosine (``keys`` = L2-normalised embeddings, so
the inner product is the cosine) or a Gaussian of the squared Euclidean distance (``keys``
= the raw features), which is monotone in the distance. Either way each row's top-K by
similarity is a nearest-neighbour search: FAISS ``IndexFlatIP`` / ``IndexFlatL2``, exact,
queried in chunks of rows, so memory is O(M K + chunk x M) instead of O(M²).

Large M: from :data:`PRUNED_FROM` rows an exact search that skips whole k-means clusters
a bound proves cannot reach a row's top-K (:func:`_pruned_topk_index`) does the same with
a fraction of the inner products on clustered keys, and no worse than brute force on keys
without structure.

Small M: below :data:`DENSE_BELOW` rows the same lists come from chunked ``torch.topk``
(FAISS was as fast or faster from a few hundred rows up, see docs/benchmarks.md). Both paths return the same neighbours,
ties aside; the returned *values* are always recomputed in torch from the chosen pairs, so
they do not depend on which path chose them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

# below this many rows the dense torch path is used: FAISS measured as fast or faster from
# 250 rows up (d = 64 and 512, 2 loaded cores), and tiny buffers need not import faiss
DENSE_BELOW = 256

# from this many rows on, the cluster-pruned exact search replaces FAISS's flat one: on
# clustered 256-d keys it was slower at 8,000 rows (12 vs 4 s) and faster at 20,000
# (13.7 vs 25 s), 2 heavily loaded cores (docs/benchmarks.md)
PRUNED_FROM = 20_000
# the pruned search's first group of points per block of rows (its own and the nearest
# clusters): small, so that the rows' c-th best scores prune the groups after it
FIRST_GROUP = 2048

PairSimilarity = Callable[[Tensor, Tensor], Tensor]  # (n, d), (n, d) -> (n,) row-paired


def topk_neighbours(
    keys: Tensor, k: int, metric: str, pair_similarity: PairSimilarity,
    chunk: int = 4096, dense_below: int | None = None, pruned_from: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Every row's ``c = min(k, M - 1)`` most similar other rows.

    ``keys`` (M, d); ``metric`` "ip" (larger inner product = more similar) or "l2"
    (smaller squared distance = more similar); ``pair_similarity(a, b)`` gives the
    learner's similarity of row-paired keys (used for the returned values);
    ``dense_below``: row count under which torch does it densely (default
    :data:`DENSE_BELOW`, read at call time); ``pruned_from``: row count from which the
    cluster-pruned exact search is used instead of FAISS's flat one (default
    :data:`PRUNED_FROM`).
    Returns (values (M, c) float, index (M, c) long), each row sorted by decreasing
    similarity, self excluded.
    """
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
    m = keys.shape[0]
    c = min(k, max(m - 1, 0))
    if c == 0:
        return torch.zeros(m, 0), torch.zeros(m, 0, dtype=torch.long)
    with torch.no_grad():  # the choice carries no gradient; the values below do
        if m < (DENSE_BELOW if dense_below is None else dense_below):
            index = _dense_topk_index(keys, c, metric, chunk)
        elif m >= (PRUNED_FROM if pruned_from is None else pruned_from):
            index = _pruned_topk_index(keys, c, metric)
        else:
            index = _faiss_topk_index(keys, c, metric, chunk)
    values = torch.empty(m, c, dtype=keys.dtype)
    for start in range(0, m, chunk):  # gathered pairs in chunks: (chunk c, d), not (M c, d)
        stop = min(start + chunk, m)
        rows = torch.arange(start, stop).repeat_interleave(c)
        pairs = pair_similarity(keys[rows], keys[index[start:stop].reshape(-1)])
        values[start:stop] = pairs.reshape(stop - start, c)
    # the recomputed values may reorder near-ties by an ulp: rows must stay sorted, the
    # query path reads a row's K-th value as its last
    values, order = values.sort(dim=1, descending=True, stable=True)
    return values, index.gather(1, order)


def _dense_topk_index(keys: Tensor, c: int, metric: str, chunk: int) -> Tensor:
    """Chunked torch top-c by inner product or (negated) squared distance, self masked."""
    m = keys.shape[0]
    index = torch.empty(m, c, dtype=torch.long)
    norms = keys.pow(2).sum(dim=1) if metric == "l2" else None
    for start in range(0, m, chunk):
        rows = torch.arange(start, min(start + chunk, m))
        score = keys[rows] @ keys.T
        if norms is not None:  # -||a - b||² up to the row's own constant ||a||²
            score = 2.0 * score - norms[None, :]
        score[torch.arange(len(rows)), rows] = float("-inf")
        index[rows] = score.topk(c, dim=1).indices
    return index


def _faiss_topk_index(keys: Tensor, c: int, metric: str, chunk: int) -> Tensor:
    """Exact FAISS flat search for c + 1 neighbours per row, then self dropped."""
    import faiss  # imported here: the query path of a CLI command should not pay for it

    data = np.ascontiguousarray(keys.detach().cpu().numpy(), dtype=np.float32)
    m, d = data.shape
    flat = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    flat.add(data)
    index = np.empty((m, c), dtype=np.int64)
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        _, found = flat.search(data[start:stop], c + 1)
        index[start:stop] = _drop_self(found, np.arange(start, stop))
    return torch.from_numpy(index)


def _drop_self(found: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(n, c + 1) neighbour ids -> (n, c) without the row itself; a row whose own id was
    pushed out by exact duplicates loses its last entry instead."""
    keep = found != rows[:, None]
    no_self = keep.all(axis=1)
    keep[no_self, -1] = False
    return found[keep].reshape(len(found), found.shape[1] - 1)


def _pruned_topk_index(keys: Tensor, c: int, metric: str, block_rows: int = 1024,
                       col_block: int = 16384, seed: int = 0) -> Tensor:
    """Exact top-c (self excluded) by cluster pruning: a bound per (row, cluster) proves
    that a whole cluster cannot reach a row's c-th best score, so it is never scored.

    The rows are grouped by k-means (about sqrt(M) clusters, chained so that neighbouring
    clusters are consecutive; the clustering changes only the speed, never the result).
    For a block of about ``block_rows`` consecutive rows, clusters are scored in decreasing
    order of their best bound, a group of at most ``col_block`` points at a time, and a
    cluster is skipped when no row's bound reaches that row's current c-th best. Bounds:
    ``ip``: q.x <= q.mu + |q| r (Cauchy-Schwarz, mu the cluster mean, r its radius);
    ``l2``: |q - x| >= |q - mu| - r. On data without cluster structure nothing is pruned
    and this is a blocked brute force.
    """
    x = keys.detach().to(torch.float32).contiguous()
    m = x.shape[0]
    assign = _kmeans_assign(x, max(1, min(1024, int(m**0.5))), metric, seed)
    assign = _chain_order(_cluster_means(x, assign))[assign]
    order = torch.argsort(assign, stable=True)
    sizes = torch.bincount(assign)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    xs, sq = x[order], x[order].pow(2).sum(dim=1)
    centres = _cluster_means(x, assign)
    radius = torch.zeros(len(sizes)).scatter_reduce_(
        0, assign, (x - centres[assign]).norm(dim=1), "amax", include_self=True)
    tol = 1e-4 * float(sq.max()) + 1e-6  # float error of a score vs its bound
    if metric == "l2":  # |q - mu| from the expanded square: its error is ~sqrt(eps) |q|
        radius += 1e-3 * float(sq.max()) ** 0.5
    found = torch.empty(m, c, dtype=torch.long)
    for lo in _block_starts(starts, block_rows):
        rows = torch.arange(lo[0], lo[1])
        bound = _bounds(xs[rows], sq[rows], centres, radius, metric)
        picked = _block_topk(xs, sq, rows, bound, starts, sizes, c, metric, tol, col_block)
        found[order[rows]] = order[picked]
    return found


def _cluster_means(x: Tensor, assign: Tensor) -> Tensor:
    """(C, d) mean of each cluster's rows (zeros for an empty one)."""
    n_clusters = int(assign.max()) + 1
    sizes = torch.bincount(assign, minlength=n_clusters).clamp_min(1)
    return torch.zeros(n_clusters, x.shape[1]).index_add_(0, assign, x) / sizes[:, None]


def _chain_order(centres: Tensor) -> Tensor:
    """(C,) new id of each cluster: a greedy nearest-centre chain, so that consecutive
    clusters (and so the rows of one block) are near each other."""
    dist = torch.cdist(centres, centres)
    visited = torch.zeros(len(centres), dtype=torch.bool)
    chain, at = [], 0
    for _ in range(len(centres)):
        chain.append(at)
        visited[at] = True
        at = int(dist[at].masked_fill(visited, float("inf")).argmin())
    new_id = torch.empty(len(centres), dtype=torch.long)
    new_id[torch.tensor(chain)] = torch.arange(len(centres))
    return new_id


def _block_starts(starts: Tensor, block_rows: int) -> list[tuple[int, int]]:
    """Row ranges of whole consecutive clusters, about ``block_rows`` rows each (a bigger
    cluster is cut into pieces of ``block_rows``)."""
    blocks: list[tuple[int, int]] = []
    lo, ends = 0, starts[1:].tolist()
    for end in ends:
        while end - lo > block_rows:
            blocks.append((lo, lo + block_rows))
            lo += block_rows
        if end - lo >= block_rows // 2 or end == ends[-1]:
            if end > lo:
                blocks.append((lo, end))
            lo = end
    return blocks


def _kmeans_assign(x: Tensor, n_clusters: int, metric: str, seed: int) -> Tensor:
    """(M,) cluster of every row by FAISS k-means on a sample (64 rows per centre)."""
    import faiss

    data = x.numpy()
    if metric == "ip":  # cluster by direction: cosine keys are compared by angle
        data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
    kmeans = faiss.Kmeans(data.shape[1], n_clusters, niter=8, seed=seed + 1234,
                          max_points_per_centroid=64, spherical=metric == "ip")
    kmeans.train(np.ascontiguousarray(data, dtype=np.float32))
    _, assign = kmeans.index.search(np.ascontiguousarray(data, dtype=np.float32), 1)
    return torch.from_numpy(assign[:, 0].astype(np.int64))


def _scores(q: Tensor, q_sq: Tensor, x: Tensor, x_sq: Tensor, metric: str) -> Tensor:
    """(b, d), (n, d) -> (b, n): inner products, or minus the squared distances."""
    dot = q @ x.T
    return dot if metric == "ip" else 2.0 * dot - q_sq[:, None] - x_sq[None, :]


def _bounds(q: Tensor, q_sq: Tensor, centres: Tensor, radius: Tensor, metric: str) -> Tensor:
    """(b, C): an upper bound of the row's score with any member of each cluster."""
    if metric == "ip":
        return q @ centres.T + q_sq.sqrt()[:, None] * radius[None, :]
    dist = (-_scores(q, q_sq, centres, centres.pow(2).sum(dim=1), "l2")).clamp_min(0).sqrt()
    return -(dist - radius[None, :]).clamp_min(0).pow(2)


def _block_topk(xs: Tensor, sq: Tensor, rows: Tensor, bound: Tensor, starts: Tensor,
                sizes: Tensor, c: int, metric: str, tol: float, col_block: int) -> Tensor:
    """The top-c other points (positions in the cluster-sorted order) of one block of
    consecutive rows, scoring clusters best bound first and skipping the ones that cannot
    reach a row's current c-th best score. -> (b, c) positions.

    The rows' own clusters come first and the first group stops at ``FIRST_GROUP`` points
    (enough for every row's first c scores), so that the later groups are pruned."""
    b = len(rows)
    best_val = torch.full((b, c), float("-inf"))
    best_pos = torch.zeros(b, c, dtype=torch.long)
    best_bound = bound.max(dim=0).values
    first = int(torch.searchsorted(starts, rows[0], right=True)) - 1
    last = int(torch.searchsorted(starts, rows[-1], right=True)) - 1
    best_bound[first:last + 1] = float("inf")  # the own clusters hold the closest points
    pending = [int(j) for j in torch.argsort(best_bound, descending=True) if sizes[j] > 0]
    limit = max(min(FIRST_GROUP, col_block), int(sizes[first:last + 1].sum()))
    while pending:
        threshold = best_val[:, -1:] - tol  # (b, 1): -inf until a row has c scores
        if float(best_bound[pending[0]]) < float(threshold.min()):
            break  # sorted by best bound: no remaining cluster can reach any row
        group, count = [], 0
        for j in pending:
            if count >= c + 1 and count + int(sizes[j]) > limit:
                break
            group.append(j)
            count += int(sizes[j])
        pending, limit = pending[len(group):], col_block
        group = sorted(j for j in group if bool((bound[:, j:j + 1] >= threshold).any()))
        if not group:
            continue
        cols = torch.cat([torch.arange(int(starts[j]), int(starts[j + 1])) for j in group])
        score = _scores(xs[rows], sq[rows], xs[cols], sq[cols], metric)
        at = torch.searchsorted(cols, rows).clamp_max(len(cols) - 1)  # cols ascend
        is_self = cols[at] == rows
        score[torch.arange(b)[is_self], at[is_self]] = float("-inf")
        top_val, top_at = score.topk(min(c, len(cols)), dim=1)
        merged_val = torch.cat([best_val, top_val], dim=1)
        merged_pos = torch.cat([best_pos, cols[top_at]], dim=1)
        best_val, pick = merged_val.topk(c, dim=1)
        best_pos = merged_pos.gather(1, pick)
    return best_pos
