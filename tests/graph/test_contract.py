"""The GraphStore contract: one suite, run against the embedded and the Neo4j backend."""

from __future__ import annotations

import dataclasses

import pytest

from casegraph.graph.base import GraphStore, VersionHasChildren
from casegraph.graph.records import ModelVersionRecord, PatientRecord, SimilarEdge
from casegraph.graph.sync import SyncReport, default_version, sync_graph
from casegraph.ingest.store import Store
from tests.graph.conftest import add_patient, add_version, fill_store, predictions_for


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


# ----------------------------------------------------------- lineage and delta sync
IDS = [f"P{i:03d}" for i in range(8)]
NEW = ["P100", "P101"]


def _root_and_attach(store: Store, graph: GraphStore) -> SyncReport:
    """A trained root version with predictions, synced; then two patients of a new batch
    attached as a derived version (their own edges, predictions, a refreshed buffer)."""
    fill_store(store, trained=False)
    add_version(store, "msrl-root", IDS, k=3, predictions=predictions_for(IDS))
    sync_graph(store, graph, batch_size=3)
    for pid in NEW:
        add_patient(store, pid, batch="b1")
    add_version(store, "msrl-root-a1", NEW, k=3, seed=1, parent_id="msrl-root",
                predictions=predictions_for(NEW, seed=1), buffer=[*IDS[1:4], NEW[0]])
    return sync_graph(store, graph, batch_size=3)


def test_delta_sync_writes_only_the_new_batch_and_version(graph: GraphStore,
                                                          store: Store) -> None:
    report = _root_and_attach(store, graph)
    assert report.versions_written == ["msrl-root-a1"]
    assert report.versions_skipped == ["msrl-root"]
    assert (report.patients_written, report.slides_written) == (2, 0)
    assert (report.edges_written, report.predictions_written, report.buffer_written) == (6, 2, 4)
    assert (report.patients, report.edges) == (10, 24 + 6)
    # 2 patients + 2 IN_COHORT + version node + DERIVED_FROM + 4 IN_BUFFER + 2 PREDICTED + 6
    assert report.created == 2 + 2 + 1 + 1 + 4 + 2 + 6
    stats = graph.stats()
    assert stats.versions == {"msrl-root": 24, "msrl-root-a1": 6}
    assert stats.relationships["DERIVED_FROM"] == 1
    assert stats.relationships["PREDICTED"] == 8 + 2
    assert graph.synced_versions() == {"msrl-root": 24, "msrl-root-a1": 6}

    again = sync_graph(store, graph)
    assert again.created == 0 and again.versions_written == []
    assert (again.patients_written, again.edges_written, again.predictions_written) == (0, 0, 0)


def test_derived_version_dump(graph: GraphStore, store: Store) -> None:
    _root_and_attach(store, graph)
    dump = graph.dump()
    assert dump.derived_from == {("msrl-root-a1", "msrl-root")}
    assert {"b0", "b1"} <= dump.synced_batches
    own = {(p[0], p[1]) for p in dump.predictions}
    assert own == {("msrl-root", p) for p in IDS} | {("msrl-root-a1", p) for p in NEW}
    expected = store.versions.predictions("msrl-root-a1", own_only=True)
    p100 = next(p for p in dump.predictions if p[:2] == ("msrl-root-a1", "P100"))
    assert p100[2] == round(float(expected["risk"].iloc[0]), 6)
    assert p100[3] == tuple(round(s, 6) for s in expected["survival"].iloc[0])
    assert [p[4] for p in sorted(dump.predictions) if p[0] == "msrl-root-a1"] == [False, True]
    assert {b for b in dump.buffer if b[0] == "msrl-root-a1"} == {
        ("msrl-root-a1", pid, i) for i, pid in enumerate([*IDS[1:4], NEW[0]])}


def test_neighbours_follow_the_lineage(graph: GraphStore, store: Store) -> None:
    _root_and_attach(store, graph)
    lineage = store.versions.neighbours("msrl-root-a1")  # the store's lineage union
    for pid in [*IDS, *NEW]:
        got = graph.neighbours(pid, "msrl-root-a1", k=10)
        expected = lineage[lineage["patient_id"] == pid]
        assert [n.patient_id for n in got] == list(expected["neighbour_id"]), pid
    assert graph.neighbours("P100", "msrl-root") == []  # the parent never saw it
    assert graph.neighbours("P002", "msrl-root-a1") == graph.neighbours("P002", "msrl-root")


def test_prune_refuses_a_version_with_children(graph: GraphStore, store: Store) -> None:
    _root_and_attach(store, graph)
    before = graph.dump()
    with pytest.raises(VersionHasChildren, match="msrl-root-a1"):
        graph.prune_version("msrl-root")
    assert graph.dump() == before
    assert graph.prune_version("msrl-root", with_children=True) == 24 + 6
    dump = graph.dump()
    assert not dump.versions and not dump.similar and not dump.predictions
    assert not dump.buffer and not dump.derived_from
    assert len(dump.patients) == 10


def test_derived_from_needs_both_nodes_in_any_order(graph: GraphStore, store: Store) -> None:
    child = ModelVersionRecord("v-child", "msrl", None, "2026-01-02", parent_id="v-root",
                               batches=("b1",))
    assert graph.write_model_version(child) == 1  # the node; no parent yet
    assert graph.dump().derived_from == frozenset()
    assert graph.write_model_version(ModelVersionRecord("v-root", "msrl", None,
                                                        "2026-01-01")) == 2
    assert graph.dump().derived_from == {("v-child", "v-root")}
    assert graph.write_model_version(child) == 0
    assert graph.child_versions("v-root") == ["v-child"]


def test_sync_of_a_derived_version_brings_its_parent(graph: GraphStore, store: Store) -> None:
    fill_store(store, trained=False)
    add_version(store, "msrl-root", IDS, k=2)
    add_version(store, "msrl-root-a1", IDS[:2], k=2, seed=1, parent_id="msrl-root")
    report = sync_graph(store, graph, versions=["msrl-root-a1"])
    assert report.versions_written == ["msrl-root", "msrl-root-a1"]
    assert graph.dump().derived_from == {("msrl-root-a1", "msrl-root")}


def test_a_patient_updated_by_a_later_batch_is_rewritten(graph: GraphStore,
                                                          store: Store) -> None:
    fill_store(store)
    sync_graph(store, graph)
    store.con.execute("UPDATE patients SET time = 99.0, cohort = 'blca', batch_id = 'b2' "
                      "WHERE patient_id = 'P003'").fetchall()
    store.con.execute("INSERT INTO slides (slide_id, patient_id, cohort, batch_id) "
                      "VALUES ('P005-S9', 'P005', 'brca', 'b3')").fetchall()
    report = sync_graph(store, graph)
    assert (report.patients_written, report.slides_written) == (2, 3)  # with their slides
    assert report.created == 3  # the slide node, its HAS_SLIDE, P003's new IN_COHORT
    p3 = next(p for p in graph.dump().patients if p.patient_id == "P003")
    assert (p3.time, p3.cohort) == (99.0, "blca")
    assert graph.stats().relationships["IN_COHORT"] == 8  # the old cohort link is gone


def test_changed_splits_rewrite_every_patient(graph: GraphStore, store: Store) -> None:
    fill_store(store)
    sync_graph(store, graph)
    store.con.execute("UPDATE splits SET role = 'val' WHERE patient_id = 'P000'").fetchall()
    report = sync_graph(store, graph)
    assert report.patients_written == 8 and report.created == 0
    p0 = next(p for p in graph.dump().patients if p.patient_id == "P000")
    assert p0.splits == ("mcat/0/val",)
    assert sync_graph(store, graph).patients_written == 0


def test_both_backends_agree_after_a_delta(graph: GraphStore, store: Store) -> None:
    from casegraph.graph.embedded import EmbeddedGraphStore

    _root_and_attach(store, graph)
    if graph.backend == "embedded":
        return  # the reference itself
    reference = EmbeddedGraphStore(store)
    sync_graph(store, reference)
    assert dataclasses.asdict(graph.dump()) == dataclasses.asdict(reference.dump())
