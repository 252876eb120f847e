"""The GraphStore interface: what the sync, the CLI and later layers need from a case graph.

Every write method is idempotent (MERGE semantics) and is one all-or-nothing transaction;
callers batch large inputs (:mod:`casegraph.graph.sync`). Write methods return how many
nodes or relationships they *created*, so a re-run that changes nothing returns 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from casegraph.graph.records import (
    BufferEntry,
    GraphDump,
    GraphStats,
    ModelVersionRecord,
    Neighbour,
    PatientRecord,
    SimilarEdge,
    SlideRecord,
)


class GraphStore(ABC):
    """A case graph backend (Neo4j over Bolt, or embedded in the DuckDB store)."""

    backend: str = "abstract"

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create uniqueness constraints / indexes (or tables) if missing."""

    @abstractmethod
    def write_cohorts(self, names: Sequence[str]) -> int: ...

    @abstractmethod
    def write_patients(self, patients: Sequence[PatientRecord]) -> int:
        """Upsert patients with their ``IN_COHORT`` link (cohort nodes created as needed)."""

    @abstractmethod
    def write_slides(self, slides: Sequence[SlideRecord]) -> int:
        """Upsert slides with their ``HAS_SLIDE`` link; the patients must exist."""

    @abstractmethod
    def write_model_version(self, version: ModelVersionRecord) -> int: ...

    @abstractmethod
    def write_similar(self, version_id: str, edges: Sequence[SimilarEdge]) -> int:
        """Upsert ``SIMILAR_TO`` edges of one model version; both patients must exist."""

    @abstractmethod
    def write_buffer(self, version_id: str, entries: Sequence[BufferEntry]) -> int: ...

    @abstractmethod
    def mark_synced(self, version_id: str, n_edges: int) -> None:
        """Record that every edge of ``version_id`` is written (the sync's last step)."""

    @abstractmethod
    def synced_versions(self) -> dict[str, int]:
        """Version id -> edge count, for versions whose sync completed."""

    @abstractmethod
    def prune_version(self, version_id: str, batch_size: int = 10_000) -> int:
        """Delete a version's edges, buffer links, query cases and node; return edges removed."""

    @abstractmethod
    def persist_query_case(
        self,
        case_id: str,
        version_id: str,
        neighbours: Sequence[SimilarEdge],
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Write a query case ``(:QueryCase)-[:SIMILAR_TO]->(:Patient)`` (replacing its edges)."""

    @abstractmethod
    def neighbours(self, patient_id: str, version_id: str, k: int = 10) -> list[Neighbour]:
        """A patient's top-k ``SIMILAR_TO`` neighbours under one version, by rank."""

    @abstractmethod
    def stats(self) -> GraphStats: ...

    @abstractmethod
    def dump(self) -> GraphDump:
        """The whole graph as canonical sets (weights rounded to 6 decimals)."""

    @abstractmethod
    def clear(self) -> None:
        """Delete everything this backend holds (tests, and `graph prune --all`)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def round_weight(weight: float) -> float:
    return round(float(weight), 6)
