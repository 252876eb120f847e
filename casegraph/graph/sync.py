"""Copy the store's patients, slides and model versions into a GraphStore, incrementally.

Order: schema, cohorts, patients, slides, then per model version: its node, buffer links,
SIMILAR_TO edges (batches), and last a ``synced_edges`` mark on the version node. Every
batch is one transaction of MERGEs, so:

- a re-run creates nothing (the report's ``created`` counts stay 0);
- a sync killed mid-way leaves a prefix of batches; the re-run MERGEs everything again and
  ends in the same graph as an uninterrupted sync (the version's mark is missing until its
  last edge batch committed, so its edges are redone);
- a version already marked with the expected edge count is skipped (incremental).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from casegraph.faults import crash_point
from casegraph.graph import source
from casegraph.graph.base import GraphStore
from casegraph.graph.static_knn import MODEL_NAME, ensure_static_knn, has_trained_version
from casegraph.ingest.store import Store

T = TypeVar("T")
DEFAULT_BATCH = 5_000


@dataclass
class SyncReport:
    backend: str
    patients: int = 0
    slides: int = 0
    versions_written: list[str] = field(default_factory=list)
    versions_skipped: list[str] = field(default_factory=list)
    edges: int = 0
    created: int = 0  # nodes + relationships created (0 on a re-run)
    batches: int = 0
    seconds: float = 0.0


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _BatchCounter:
    """Runs one batch (one transaction) and counts it once committed."""

    def __init__(self, report: SyncReport) -> None:
        self.report = report

    def run(self, write: Callable[[], int]) -> None:
        self.report.created += write()
        self.report.batches += 1
        crash_point("sync.after_batch")


def sync_graph(
    store: Store,
    graph: GraphStore,
    *,
    versions: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    static_k: int = 12,
) -> SyncReport:
    """Bring ``graph`` up to date with ``store``; see the module docstring.

    ``versions``: model version ids to write (default: all in the store). Without any trained
    model version, the static cosine k-NN version is computed and stored first.
    """
    started = time.perf_counter()
    report = SyncReport(backend=graph.backend)
    step = _BatchCounter(report)
    graph.ensure_schema()
    if not has_trained_version(store):
        ensure_static_knn(store, k=static_k)

    patients = source.patient_records(store)
    step.run(lambda: graph.write_cohorts(sorted(set(store.cohorts()) |
                                                {p.cohort for p in patients})))
    for chunk in batched(patients, batch_size):
        step.run(lambda c=chunk: graph.write_patients(c))  # type: ignore[misc]
    slides = source.slide_records(store)
    for slide_chunk in batched(slides, batch_size):
        step.run(lambda c=slide_chunk: graph.write_slides(c))  # type: ignore[misc]
    report.patients, report.slides = len(patients), len(slides)

    records = source.model_version_records(store)
    wanted = set(versions) if versions is not None else None
    if wanted is not None:
        _check_known(wanted, {r.version_id for r in records})
    synced = graph.synced_versions()
    for record in records:
        if wanted is not None and record.version_id not in wanted:
            continue
        edges = source.similar_edges(store, record.version_id)
        report.edges += len(edges)
        if synced.get(record.version_id) == len(edges):
            report.versions_skipped.append(record.version_id)
            continue
        step.run(lambda r=record: graph.write_model_version(r))  # type: ignore[misc]
        buffer = source.buffer_entries(store, record.version_id)
        for buffer_chunk in batched(buffer, batch_size):
            step.run(lambda c=buffer_chunk, v=record.version_id:  # type: ignore[misc]
                     graph.write_buffer(v, c))
        for edge_chunk in batched(edges, batch_size):
            step.run(lambda c=edge_chunk, v=record.version_id:  # type: ignore[misc]
                     graph.write_similar(v, c))
        graph.mark_synced(record.version_id, len(edges))
        report.versions_written.append(record.version_id)
    report.seconds = time.perf_counter() - started
    return report


def _check_known(wanted: set[str], known: set[str]) -> None:
    from casegraph.errors import UnknownNameError

    for version_id in sorted(wanted - known):
        raise UnknownNameError("model version", version_id, sorted(known))


def default_version(graph: GraphStore) -> str | None:
    """The newest synced version, preferring trained ones over ``static-knn``."""
    ids = sorted(graph.synced_versions())
    trained = [v for v in ids if not v.startswith(MODEL_NAME)]
    pool = trained or ids
    return pool[-1] if pool else None
