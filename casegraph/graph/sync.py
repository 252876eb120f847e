"""Copy the store into a GraphStore by deltas: only what the graph does not hold yet.

Order: schema, cohorts, the patients and slides of ingest batches not yet synced, a mark
of those batches, then per model version not yet synced (oldest first, so a parent before
its children): its node with its ``DERIVED_FROM`` link, buffer links, ``PREDICTED`` links,
its own ``SIMILAR_TO`` edges (batches), and last a ``synced_edges`` mark on the version
node (its own edge count).

What "not yet synced" means:

- patients: the graph records the ingest batch ids whose patients and slides it holds
  (``graph_synced_batches`` / the ``:SyncState`` node). A patient belongs to each batch that
  wrote one of its rows (patient row — an ``--update`` re-writes it under the new batch —,
  genomic row, slide), so a sync writes the patients touched by new batches and their
  slides. Split memberships have no batch: a digest of all split rows stands in as one
  pseudo-batch, and a change rewrites every patient;
- versions: a version is written once, complete; a derived version (``casegraph attach``)
  holds only its own rows, so after attaching 1,000 patients to a 100,000-patient version
  the sync writes ~1,000 patients, their edges and predictions, the buffer and one node.

Every batch is one transaction of MERGEs (the Neo4j backend CREATEs the edges of sources
that have none of the version yet, checked in the same transaction), and a batch never
splits one patient's edges, so:

- a re-run creates nothing (the report's ``created`` counts stay 0) and writes nothing but
  the cohorts;
- a sync killed mid-way leaves a prefix of batches; the marks come after what they cover
  (batches after their patients and slides, a version's after its last edge batch), so
  the re-run redoes exactly the unmarked part and ends in the same graph as an
  uninterrupted sync;
- a version already marked with its own edge count is skipped (incremental).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from casegraph.faults import crash_point
from casegraph.graph import source
from casegraph.graph.base import GraphStore
from casegraph.graph.records import SimilarEdge
from casegraph.graph.static_knn import MODEL_NAME, ensure_static_knn, has_trained_version
from casegraph.ingest.store import Store

T = TypeVar("T")
DEFAULT_BATCH = 5_000


@dataclass
class SyncReport:
    """``patients``/``slides``/``edges``: store totals (edges: the versions' own edges);
    ``*_written``: what this sync sent to the graph; ``created``: what the graph created."""

    backend: str
    patients: int = 0
    slides: int = 0
    versions_written: list[str] = field(default_factory=list)
    versions_skipped: list[str] = field(default_factory=list)
    edges: int = 0
    patients_written: int = 0
    slides_written: int = 0
    edges_written: int = 0
    predictions_written: int = 0
    buffer_written: int = 0
    created: int = 0  # nodes + relationships created (0 on a re-run)
    batches: int = 0
    seconds: float = 0.0


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def batched_by_source(edges: Sequence[SimilarEdge], size: int) -> Iterator[Sequence[SimilarEdge]]:
    """Batches of at most ``size`` edges (more only for one source with more) that never
    split one source's edges: ``edges`` hold each source's edges together."""
    start = 0
    while start < len(edges):
        end = min(start + size, len(edges))
        if end < len(edges) and edges[end].patient_id == edges[end - 1].patient_id:
            cut = end - 1
            while cut > start and edges[cut - 1].patient_id == edges[end].patient_id:
                cut -= 1
            if cut == start:  # one source holds more than ``size`` edges: take all of them
                while end < len(edges) and edges[end].patient_id == edges[start].patient_id:
                    end += 1
            else:
                end = cut
        yield edges[start:end]
        start = end


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
    _sync_patients(store, graph, step, batch_size)
    _sync_versions(store, graph, step, versions, batch_size)
    report.seconds = time.perf_counter() - started
    return report


def _sync_patients(store: Store, graph: GraphStore, step: _BatchCounter,
                   batch_size: int) -> None:
    report = step.report
    delta = source.patient_delta(store, graph.synced_batches())
    patients = [] if delta.empty else source.patient_records(store, delta.patient_ids)
    step.run(lambda: graph.write_cohorts(sorted(set(store.cohorts()) |
                                                {p.cohort for p in patients})))
    for chunk in batched(patients, batch_size):
        step.run(lambda c=chunk: graph.write_patients(c))  # type: ignore[misc]
    slides = [] if delta.empty else source.slide_records(store, delta.patient_ids)
    for slide_chunk in batched(slides, batch_size):
        step.run(lambda c=slide_chunk: graph.write_slides(c))  # type: ignore[misc]
    graph.mark_batches_synced(delta.batches)
    totals = store.counts()
    report.patients, report.slides = totals["patients"], totals["slides"]
    report.patients_written, report.slides_written = len(patients), len(slides)


def _sync_versions(store: Store, graph: GraphStore, step: _BatchCounter,
                   versions: Sequence[str] | None, batch_size: int) -> None:
    report = step.report
    records = source.model_version_records(store)
    wanted = None if versions is None else _with_ancestors(store, versions,
                                                          {r.version_id for r in records})
    synced = graph.synced_versions()
    own_edges = store.own_neighbour_counts()
    for record in records:
        version_id = record.version_id
        if wanted is not None and version_id not in wanted:
            continue
        n_edges = own_edges.get(version_id, 0)
        report.edges += n_edges
        if synced.get(version_id) == n_edges:
            report.versions_skipped.append(version_id)
            continue
        step.run(lambda r=record: graph.write_model_version(r))  # type: ignore[misc]
        buffer = source.buffer_entries(store, version_id)
        for buffer_chunk in batched(buffer, batch_size):
            step.run(lambda c=buffer_chunk, v=version_id:  # type: ignore[misc]
                     graph.write_buffer(v, c))
        predictions = source.prediction_records(store, version_id)
        for prediction_chunk in batched(predictions, batch_size):
            step.run(lambda c=prediction_chunk, v=version_id:  # type: ignore[misc]
                     graph.write_predictions(v, c))
        edges = source.similar_edges(store, version_id)
        for edge_chunk in batched_by_source(edges, batch_size):
            step.run(lambda c=edge_chunk, v=version_id:  # type: ignore[misc]
                     graph.write_similar(v, c))
        graph.mark_synced(version_id, len(edges))
        report.versions_written.append(version_id)
        report.buffer_written += len(buffer)
        report.predictions_written += len(predictions)
        report.edges_written += len(edges)


def _with_ancestors(store: Store, versions: Sequence[str], known: set[str]) -> set[str]:
    """The asked versions and their lineages (a child's DERIVED_FROM needs its parent)."""
    _check_known(set(versions), known)
    return {member for v in versions for member in store.versions.lineage(v)}


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
