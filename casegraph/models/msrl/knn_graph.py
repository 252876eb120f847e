"""Exact top-K neighbour lists of M nodes without an M x M matrix (MSRL's buffer graph).

The graph learner's similarity is either cosine (``keys`` = L2-normalised embeddings, so
the inner product is the cosine) or a Gaussian of the squared Euclidean distance (``keys``
= the raw features), which is monotone in the distance. Either way each row's top-K by
similarity is a nearest-neighbour search: FAISS ``IndexFlatIP`` / ``IndexFlatL2``, exact,
queried in chunks of rows, so memory is O(M K + chunk x M) instead of O(M²).

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

PairSimilarity = Callable[[Tensor, Tensor], Tensor]  # (n, d), (n, d) -> (n,) row-paired


def topk_neighbours(
    keys: Tensor, k: int, metric: str, pair_similarity: PairSimilarity,
    chunk: int = 4096, dense_below: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Every row's ``c = min(k, M - 1)`` most similar other rows.

    ``keys`` (M, d); ``metric`` "ip" (larger inner product = more similar) or "l2"
    (smaller squared distance = more similar); ``pair_similarity(a, b)`` gives the
    learner's similarity of row-paired keys (used for the returned values);
    ``dense_below``: row count under which torch does it densely (default
    :data:`DENSE_BELOW`, read at call time).
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
