"""The :class:`VectorIndex` interface: cosine similarity over (patient id, vector) pairs.

Implementations (casegraph/retrieval/faiss_index.py) normalise vectors on the way in, so
inner product = cosine similarity, and honour one contract (tests/retrieval/
test_faiss_index.py): filtered search returns ``min(k, eligible)`` hits, never fewer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Hit:
    """One search result: a patient id and its cosine similarity to the query."""

    patient_id: str
    score: float


def normalise(vectors: npt.ArrayLike) -> FloatArray:
    """Rows scaled to unit L2 norm (zero rows stay zero); (n, d) float32, C-contiguous."""
    x = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return np.ascontiguousarray(x)


class VectorIndex(ABC):
    """Cosine-similarity index over (patient id, vector) pairs."""

    kind: ClassVar[str]

    def __init__(self, dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, patient_id: object) -> bool: ...

    @abstractmethod
    def ids(self) -> list[str]:
        """Ids currently in the index, in insertion order."""

    @abstractmethod
    def add(self, patient_ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Add new patients; an id already present is an error (remove it first)."""

    @abstractmethod
    def remove(self, patient_ids: Collection[str]) -> int:
        """Remove patients; unknown ids are ignored. Returns how many were removed."""

    @abstractmethod
    def search(
        self,
        vectors: npt.ArrayLike,
        k: int,
        *,
        allowed: Collection[str] | None = None,
        exclude: Collection[str] = (),
    ) -> list[list[Hit]]:
        """Top-``k`` hits for each query row of ``vectors`` (q, dim), best first.

        ``allowed``: only these ids may be returned. ``exclude``: these ids never are.
        Returns ``min(k, eligible)`` hits per query, never fewer.
        """

    @property
    def params(self) -> dict[str, Any]:
        """Parameters worth recording (type, sizes, search settings)."""
        return {"type": self.kind, "dim": self.dim, "n": len(self)}
