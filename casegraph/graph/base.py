"""The GraphStore interface: what the sync, the CLI and later layers need from a case graph.

Every write method is idempotent (MERGE semantics) and is one all-or-nothing transaction;
callers batch large inputs (:mod:`casegraph.graph.sync`). Write methods return how many
nodes or relationships they *created*, so a re-run that changes nothing returns 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from casegraph.errors import CasegraphError
from casegraph.graph.records import (
    BufferEntry,
    GraphDump,
    GraphStats,
    ModelVersionRecord,
    Neighbour,
    PatientRecord,
    PredictionRecord,
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
    def write_model_version(self, version: ModelVersionRecord) -> int:
        """Upsert a version node; with ``parent_id`` also its ``DERIVED_FROM`` link to the
        parent, and from children already present to it (a link exists iff both nodes do)."""

    @abstractmethod
    def write_similar(self, version_id: str, edges: Sequence[SimilarEdge]) -> int:
        """Upsert ``SIMILAR_TO`` edges of one model version; both patients must exist."""

    @abstractmethod
    def write_buffer(self, version_id: str, entries: Sequence[BufferEntry]) -> int: ...

    @abstractmethod
    def write_predictions(self, version_id: str, predictions: Sequence[PredictionRecord]) -> int:
        """Upsert ``PREDICTED`` links of one version (its own rows); patients must exist."""

    @abstractmethod
    def mark_batches_synced(self, batch_ids: Sequence[str]) -> None:
        """Record that the patients and slides of these ingest batches are written."""

    @abstractmethod
    def synced_batches(self) -> set[str]:
        """Ingest batch ids whose patients and slides the graph holds."""

    @abstractmethod
    def mark_synced(self, version_id: str, n_edges: int) -> None:
        """Record that every edge of ``version_id`` is written (the sync's last step)."""

    @abstractmethod
    def synced_versions(self) -> dict[str, int]:
        """Version id -> edge count, for versions whose sync completed."""

    @abstractmethod
    def prune_version(self, version_id: str, batch_size: int = 10_000,
                      with_children: bool = False) -> int:
        """Delete a version's edges, predictions, buffer links, query cases and node; return
        edges removed. A version that other versions in the graph derive from is refused
        (:class:`VersionHasChildren`) unless ``with_children``: then its descendants go
        first, deepest first (their edges are counted too)."""

    @abstractmethod
    def child_versions(self, version_id: str) -> list[str]:
        """Versions in the graph deriving directly from ``version_id`` (sorted)."""

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
        """A patient's top-k ``SIMILAR_TO`` neighbours under one version, by rank, along its
        lineage: the edges of the nearest version (itself, its parent, ...) that has any for
        this patient (a derived version holds only its new patients' edges)."""

    @abstractmethod
    def stats(self) -> GraphStats: ...

    @abstractmethod
    def dump(self) -> GraphDump:
        """The whole graph as canonical sets (weights rounded to 6 decimals)."""

    @abstractmethod
    def clear(self) -> None:
        """Delete everything this backend holds (tests, and `graph prune --all`)."""

    def to_networkx(self, version_id: str, patients: Sequence[str], hops: int = 1,
                    k: int = 10) -> Any:
        """The ``hops``-hop neighbourhood of ``patients`` as a networkx DiGraph
        (:func:`casegraph.graph.export.to_networkx`)."""
        from casegraph.graph.export import to_networkx

        return to_networkx(self, version_id, patients, hops=hops, k=k)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def round_weight(weight: float) -> float:
    return round(float(weight), 6)


def round_survival(survival: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if survival is None else tuple(round_weight(s) for s in survival)


class VersionHasChildren(CasegraphError):
    """Pruning a version that derived versions still point at."""

    def __init__(self, version_id: str, children: Sequence[str]) -> None:
        shown = ", ".join(children[:5]) + (" ..." if len(children) > 5 else "")
        super().__init__(f"model version {version_id} has derived versions in the graph "
                         f"({shown}); prune them first, or prune with their children "
                         "(`casegraph graph prune --with-children`)")
        self.children = list(children)


def prune_with_children(graph: GraphStore, version_id: str, with_children: bool,
                        prune_one: Callable[[str], int]) -> int:
    """Refuse or cascade for a version with children, then ``prune_one`` each (deepest
    first); the total edges removed."""
    children = graph.child_versions(version_id)
    if children and not with_children:
        raise VersionHasChildren(version_id, children)
    removed = sum(prune_with_children(graph, c, True, prune_one) for c in children)
    return removed + prune_one(version_id)
