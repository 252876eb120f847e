"""Options of a WSI-only query (validated once, at the boundary)."""

from __future__ import annotations

from dataclasses import dataclass

from casegraph.errors import InputError

MAX_K = 1000


@dataclass(frozen=True)
class QueryOptions:
    """``k`` neighbours reported; ``n_candidates`` (M) FAISS seeds: the query's top-M
    reference patients in the GSL space, each joined by its own ``expand`` nearest
    references (0 = none; -1 = the model's graph K) among the query's top ``pool``, before
    MSRL builds its graph;
    ``cohorts`` / ``require`` (authentic modalities) filter the neighbours;
    ``method``: "auto" (per cohort, the WSI-only method with the best validated Harrell C;
    without validated runs the newest MSRL version, else knn), "msrl" or "knn"; ``model_version``
    (None = the latest MSRL version); ``exact``: GSL over the whole buffer (no pruning);
    ``temperature`` of the fallback's softmax weights; ``persist`` into the case graph."""

    k: int = 10
    n_candidates: int = 100
    expand: int = -1
    pool: int = 2000
    cohorts: tuple[str, ...] = ()
    require: tuple[str, ...] = ()
    method: str = "auto"
    model_version: str | None = None
    exact: bool = False
    temperature: float = 0.1
    persist: bool = False
    group_set: str | None = None

    def validated(self) -> QueryOptions:
        if not 1 <= self.k <= MAX_K:
            raise InputError(f"k must be between 1 and {MAX_K}, got {self.k}", column="k")
        if self.n_candidates < self.k:
            raise InputError(f"n_candidates ({self.n_candidates}) must be >= k ({self.k})",
                             column="n_candidates")
        if self.method not in ("auto", "msrl", "knn"):
            raise InputError(f"unknown method {self.method!r}", column="method",
                             fix="choose among: auto, knn, msrl")
        if self.temperature <= 0:
            raise InputError("temperature must be > 0", column="temperature")
        return self
