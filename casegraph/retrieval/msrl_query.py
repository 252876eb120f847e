"""The MSRL path of a WSI-only query: candidates from FAISS, then MSRL's graph over them.

Shared by the query engine, the evaluation and the benchmark, so all three measure the
same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.retrieval import msrl_adapter
from casegraph.retrieval.index import LoadedIndex
from casegraph.retrieval.options import QueryOptions

FloatArray = npt.NDArray[np.float32]


@dataclass
class CoreAnswer:
    """MSRL's answer before the outcomes are attached: (id, weight) neighbours best first,
    risk (NaN when no candidate passed the filters), survival per bin (None for models
    without one), the number of candidates and the query's vector in the GSL space."""

    neighbours: list[tuple[str, float]]
    risk: float
    survival: Any
    n_candidates: int
    vector: FloatArray


def answer_wsi_only(
    model: Any,
    loaded: LoadedIndex,
    features: FloatArray,
    opts: QueryOptions,
    allowed: set[str] | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
    *,
    mean: FloatArray | None = None,
) -> CoreAnswer:
    """Encode the bag (N, D), pick the candidates (FAISS top-M in the GSL space, or the
    whole buffer when ``opts.exact``), and run MSRL's Inductor + GSL + GCN over them.
    ``mean`` (D,): the bag's float32 patch mean when the caller has it (see
    ``msrl_adapter.pooled_bag``)."""
    bag = msrl_adapter.pooled_bag(model, features, mean)
    vector = loaded.prepare_query(msrl_adapter.query_vector(model, msrl_adapter.embed(
        model, bag)))
    candidates: list[str] | None
    if opts.exact:
        candidates = msrl_adapter.buffer_candidates(model, exclude, allowed)
        n_candidates = (len(candidates) if candidates is not None
                        else msrl_adapter.buffer_size(model))
    else:
        candidates = candidate_ids(model, loaded, vector, opts, allowed, exclude)
        n_candidates = len(candidates)
    if candidates is not None and not candidates:
        return CoreAnswer([], float("nan"), None, 0, vector)
    answer = msrl_adapter.query(model, bag, candidates, opts.k)
    pairs = [(p, float(w)) for p, w in answer.neighbours if p not in exclude][: opts.k]
    return CoreAnswer(pairs, float(answer.risk), answer.survival, n_candidates, vector)


def candidate_ids(model: Any, loaded: LoadedIndex, vector: FloatArray, opts: QueryOptions,
                  allowed: set[str] | None, exclude: set[str] | frozenset[str]) -> list[str]:
    """The query's top-M seeds plus each seed's nearest references (see QueryOptions).

    Why the expansion: the GSL graph is built over the candidates only, so a seed's own
    top-K list (which decides whether it links to the query, and its degree) is exact only
    when its true nearest references are candidates too; without them the pruned graph's
    neighbours drift far from the exact path's (docs/retrieval.md). The seeds' neighbours
    are looked up inside a pool (the query's top ``pool`` references, one FAISS search),
    by one dense product, instead of one FAISS search per seed.
    """
    width = msrl_adapter.graph_k(model) if opts.expand < 0 else opts.expand
    pool_size = opts.n_candidates if width == 0 else max(opts.pool, opts.n_candidates)
    pool = [h.patient_id for h in loaded.index.search(
        vector, pool_size, allowed=allowed, exclude=exclude)[0]]
    seeds = pool[: opts.n_candidates]
    if width == 0 or len(pool) <= len(seeds):
        return seeds
    sims = _seed_similarities(loaded.index.vectors(pool), len(seeds))
    take = min(width + 1, len(pool))
    nearest = np.argpartition(-sims, take - 1, axis=1)[:, :take]
    return list(dict.fromkeys(seeds + [pool[j] for row in nearest for j in row]))


def _seed_similarities(keys: FloatArray, n_seeds: int) -> FloatArray:
    """(n_seeds, len(keys)) inner products of the first ``n_seeds`` keys with all of them.

    In torch, which runs on the threads the query was given (``--threads``): numpy's
    OpenBLAS keeps its own pool (2 threads here) and, on a loaded box, took 3x longer."""
    import torch

    with torch.inference_mode():
        t = torch.from_numpy(keys)
        return (t[:n_seeds] @ t.T).numpy()
