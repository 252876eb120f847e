"""The GraphStore contract: one suite, run against the embedded and the Neo4j backend."""

from __future__ import annotations

import dataclasses

from casegraph.graph.base import GraphStore
from casegraph.graph.records import PatientRecord, SimilarEdge
from casegraph.graph.sync import default_version, sync_graph
from casegraph.ingest.store import Store
from tests.graph.conftest import add_patient, add_version, fill_store


def test_sync_writes_the_graph(graph: GraphStore, store: Store) -> None:
    fill_store(store)
    report = sync_graph(store, graph, batch_size=3)
    assert report.versions_written == ["msrl-test"]
    stats = graph.stats()
    assert stats.nodes["Patient"] == 8 and stats.nodes["Cohort"] == 2
    assert stats.nodes["Slide"] == 9 and stats.nodes["ModelVersion"] == 1
    assert stats.relationships["IN_COHORT"] == 8 and stats.relationships["HAS_SLIDE"] == 9
    assert stats.relationships["SIMILAR_TO"] == 8 * 3
    assert stats.relationships["IN_BUFFER"] == 4
    assert stats.versions == {"msrl-test": 24}
    p0 = next(p for p in graph.dump().patients if p.patient_id == "P000")
    assert p0 == PatientRecord("P000", "blca", 10.0, True, ("cnv", "rna", "wsi"),
                               ("mcat/0/train",))
    p1 = next(p for p in graph.dump().patients if p.patient_id == "P001")
    assert p1.modalities == ("rna", "wsi")  # no measured CNV: not authentic


def test_resync_changes_nothing(graph: GraphStore, store: Store) -> None:
    fill_store(store)
    sync_graph(store, graph, batch_size=4)
    before = graph.dump()
    again = sync_graph(store, graph, batch_size=4)
    assert again.created == 0
    assert again.versions_skipped == ["msrl-test"] and again.versions_written == []
    assert graph.dump() == before


def test_sync_is_incremental(graph: GraphStore, store: Store) -> None:
    fill_store(store)
    sync_graph(store, graph)
    first = graph.dump()
    ids = sorted(p.patient_id for p in first.patients)
    add_patient(store, "P100")
    add_version(store, "msrl-test-2", [*ids, "P100"], k=2, seed=1)
    report = sync_graph(store, graph)
    assert report.versions_written == ["msrl-test-2"]
    assert report.versions_skipped == ["msrl-test"]
    after = graph.dump()
    assert after.similar > first.similar and len(after.patients) == 9
    assert graph.stats().versions == {"msrl-test": 24, "msrl-test-2": 18}


def test_prune_removes_only_that_version(graph: GraphStore, store: Store) -> None:
    fill_store(store)
    ids = [f"P{i:03d}" for i in range(8)]
    add_version(store, "msrl-old", ids, k=2, seed=2)
    sync_graph(store, graph)
    graph.persist_query_case("Q1", "msrl-old", [SimilarEdge("Q1", "P001", 1, 0.9)])
    kept = {e for e in graph.dump().similar if e[0] == "msrl-test"}
    assert graph.prune_version("msrl-old", batch_size=5) == 16
    dump = graph.dump()
    assert dump.similar == kept and "msrl-old" not in dump.versions
    assert not dump.query_cases and all(b[0] == "msrl-test" for b in dump.buffer)
    assert graph.prune_version("msrl-old") == 0


def test_neighbours_with_outcomes(graph: GraphStore, store: Store) -> None:
    fill_store(store)
    sync_graph(store, graph)
    expected = store.model_neighbours("msrl-test").query("patient_id == 'P002'")
    got = graph.neighbours("P002", "msrl-test", k=2)
    assert [n.patient_id for n in got] == list(expected["neighbour_id"][:2])
    assert [n.rank for n in got] == [1, 2]
    outcome = store.patients().set_index("patient_id").loc[got[0].patient_id]
    assert got[0].time == outcome["time"] and got[0].event == bool(outcome["event"])
    assert graph.neighbours("nobody", "msrl-test") == []
    assert default_version(graph) == "msrl-test"


def test_query_case_persisted_and_replaced(graph: GraphStore, store: Store) -> None:
    fill_store(store)
    sync_graph(store, graph)
    edges = [SimilarEdge("Q7", "P001", 1, 0.8), SimilarEdge("Q7", "P002", 2, 0.5),
             SimilarEdge("Q7", "no-such-patient", 3, 0.1)]
    graph.persist_query_case("Q7", "msrl-test", edges, {"source": "wsi-only"})
    assert graph.dump().query_cases == {("Q7", "msrl-test", "P001", 1, 0.8),
                                        ("Q7", "msrl-test", "P002", 2, 0.5)}
    graph.persist_query_case("Q7", "msrl-test", [SimilarEdge("Q7", "P003", 1, 0.7)])
    assert graph.dump().query_cases == {("Q7", "msrl-test", "P003", 1, 0.7)}
    assert graph.stats().nodes["QueryCase"] == 1


def test_static_knn_when_no_model_version(graph: GraphStore, store: Store) -> None:
    fill_store(store, trained=False)
    report = sync_graph(store, graph, static_k=3)
    (version,) = report.versions_written
    assert version.startswith("static-knn-genomics-k3-")
    # only patients with measured genomics get edges; weights are cosines
    assert graph.stats().versions == {version: 8 * 3}
    assert all(-1.0 <= e[4] <= 1.0 for e in graph.dump().similar)
    assert sync_graph(store, graph, static_k=3).versions_skipped == [version]


def test_edges_to_unknown_patients_are_dropped(graph: GraphStore, store: Store) -> None:
    fill_store(store)
    sync_graph(store, graph)
    assert graph.write_similar("msrl-test", [SimilarEdge("P001", "ghost", 9, 0.1)]) == 0
    assert graph.stats().versions["msrl-test"] == 24


def test_both_backends_build_the_same_graph(graph: GraphStore, store: Store) -> None:
    """The backend under test equals the embedded reference on the same store."""
    from casegraph.graph.embedded import EmbeddedGraphStore

    fill_store(store)
    sync_graph(store, graph, batch_size=2)
    reference = EmbeddedGraphStore(store)
    if graph.backend != "embedded":
        sync_graph(store, reference)
    assert dataclasses.asdict(graph.dump()) == dataclasses.asdict(reference.dump())
