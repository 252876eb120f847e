"""Every query of docs/cypher.md, run against the real Neo4j on a small synced graph."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from casegraph.config import Neo4jSettings
from casegraph.graph.cypher import CypherResult, cookbook_queries, run_cypher
from casegraph.graph.neo4j_store import Neo4jGraphStore
from casegraph.graph.records import SimilarEdge
from casegraph.graph.sync import sync_graph
from casegraph.ingest.store import Store
from tests.graph.conftest import add_patient, add_version, fill_store, predictions_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "cypher.md"
EXPECTED = {"neighbours", "neighbourhood-survival", "cross-cohort", "shared-neighbours",
            "buffer-anchors", "version-diff", "lineage-neighbours", "risk-change",
            "attach-added", "lineage"}
IDS = [f"P{i:03d}" for i in range(8)]
NEW = ["P100", "P101"]

pytestmark = pytest.mark.neo4j


def test_the_doc_has_every_cookbook_query() -> None:
    assert set(cookbook_queries(DOC.read_text(encoding="utf-8"))) == EXPECTED


@pytest.fixture
def synced(neo4j_graph: Neo4jGraphStore, store: Store) -> Iterator[Neo4jGraphStore]:
    fill_store(store, trained=False)
    add_version(store, "msrl-test", IDS, k=3, predictions=predictions_for(IDS))
    add_version(store, "msrl-new", IDS, k=3, seed=5, predictions=predictions_for(IDS, seed=5))
    for pid in NEW:
        add_patient(store, pid, batch="b1")
    add_version(store, "msrl-test-a1", NEW, k=3, seed=6, parent_id="msrl-test",
                predictions=predictions_for(NEW, seed=6))
    sync_graph(store, neo4j_graph)
    neo4j_graph.persist_query_case("Q1", "msrl-test", [SimilarEdge("Q1", "P000", 1, 0.9)])
    yield neo4j_graph


def _run(graph: Neo4jGraphStore, name: str, **params: object) -> pd.DataFrame:
    query = cookbook_queries(DOC.read_text(encoding="utf-8"))[name]
    result: CypherResult = run_cypher(graph.driver, query, dict(params))
    return pd.DataFrame(result.rows, columns=result.columns)


def test_neighbours(synced: Neo4jGraphStore, store: Store) -> None:
    got = _run(synced, "neighbours", patient="P002", version="msrl-test", k=2)
    expected = store.model_neighbours("msrl-test").query("patient_id == 'P002'").head(2)
    assert list(got["neighbour"]) == list(expected["neighbour_id"])
    assert list(got["rank"]) == [1, 2]
    patients = store.patients().set_index("patient_id")
    assert list(got["time"]) == list(patients.loc[list(expected["neighbour_id"]), "time"])
    assert all("wsi" not in g for g in got["authentic_genomics"])


def test_neighbourhood_survival(synced: Neo4jGraphStore, store: Store) -> None:
    got = _run(synced, "neighbourhood-survival", patient="P002", version="msrl-test")
    nb = store.model_neighbours("msrl-test")
    hop1 = set(nb.query("patient_id == 'P002'")["neighbour_id"])
    hop2 = set(nb[nb["patient_id"].isin(hop1)]["neighbour_id"])
    assert set(got["patient"]) == (hop1 | hop2) - {"P002"}
    assert list(got["time"]) == sorted(got["time"])


def test_cross_cohort(synced: Neo4jGraphStore, store: Store) -> None:
    got = _run(synced, "cross-cohort", version="msrl-test")
    nb = store.model_neighbours("msrl-test")
    cohort = store.patients().set_index("patient_id")["cohort"]
    crossing = nb[nb["patient_id"].map(cohort) != nb["neighbour_id"].map(cohort)]
    assert int(got["edges"].sum()) == len(crossing)


def test_shared_neighbours(synced: Neo4jGraphStore, store: Store) -> None:
    got = _run(synced, "shared-neighbours", version="msrl-test", min_shared=2, limit=100)
    nb = store.model_neighbours("msrl-test").groupby("patient_id")["neighbour_id"].apply(set)
    expected = {(a, b) for a in nb.index for b in nb.index
                if a < b and len(nb[a] & nb[b]) >= 2}
    assert set(zip(got["patient_a"], got["patient_b"], strict=True)) == expected


def test_buffer_anchors(synced: Neo4jGraphStore, store: Store) -> None:
    got = _run(synced, "buffer-anchors", version="msrl-test", limit=10)
    assert set(got["buffer_case"]) == set(store.model_buffer("msrl-test"))
    nb = store.model_neighbours("msrl-test")
    incoming = nb["neighbour_id"].value_counts()
    for row in got.itertuples():
        assert row.anchored == incoming.get(row.buffer_case, 0) + (row.buffer_case == "P000")
    assert got.set_index("buffer_case").loc["P000", "by_query_cases"] == 1


def test_version_diff(synced: Neo4jGraphStore, store: Store) -> None:
    got = _run(synced, "version-diff", old="msrl-test", new="msrl-new", limit=100)
    old = store.model_neighbours("msrl-test").groupby("patient_id")["neighbour_id"].apply(set)
    new = store.model_neighbours("msrl-new").groupby("patient_id")["neighbour_id"].apply(set)
    assert len(got) == 8
    for row in got.itertuples():
        kept = old[row.patient] & new[row.patient]
        assert row.kept == len(kept)
        assert set(row.dropped) == old[row.patient] - kept
        assert row.jaccard == pytest.approx(len(kept) / len(old[row.patient] | new[row.patient]))


def test_lineage_neighbours(synced: Neo4jGraphStore, store: Store) -> None:
    own = store.versions.neighbours("msrl-test-a1", own_only=True)
    got = _run(synced, "lineage-neighbours", patient="P100", version="msrl-test-a1", k=10)
    assert list(got["neighbour"]) == list(own.query("patient_id == 'P100'")["neighbour_id"])
    assert set(got["written_by"]) == {"msrl-test-a1"}
    old = _run(synced, "lineage-neighbours", patient="P002", version="msrl-test-a1", k=2)
    parent = store.model_neighbours("msrl-test").query("patient_id == 'P002'").head(2)
    assert list(old["neighbour"]) == list(parent["neighbour_id"])
    assert set(old["written_by"]) == {"msrl-test"}
    assert [n.patient_id for n in synced.neighbours("P002", "msrl-test-a1", k=2)] == list(
        old["neighbour"])


def test_risk_change(synced: Neo4jGraphStore, store: Store) -> None:
    got = _run(synced, "risk-change", old="msrl-test", new="msrl-new", limit=100)
    old = store.versions.predictions("msrl-test").set_index("patient_id")["risk"]
    new = store.versions.predictions("msrl-new").set_index("patient_id")["risk"]
    change = (new - old).loc[IDS]
    assert list(got["patient"]) == list(change.abs().sort_values(ascending=False).index)
    assert list(got["change"]) == pytest.approx(list(change.loc[list(got["patient"])]))
    old_rank = old.loc[IDS].rank(ascending=False).astype(int)
    assert list(got["old_rank"]) == list(old_rank.loc[list(got["patient"])])


def test_attach_added(synced: Neo4jGraphStore, store: Store) -> None:
    got = _run(synced, "attach-added", version="msrl-test-a1")
    own = store.versions.neighbours("msrl-test-a1", own_only=True)
    predictions = store.versions.predictions("msrl-test-a1", own_only=True)
    assert list(got["patient"]) == NEW and set(got["parent"]) == {"msrl-test"}
    assert list(got["risk"]) == pytest.approx(list(predictions["risk"]))
    assert list(got["inferred"]) == list(predictions["inferred"])
    for row in got.itertuples():
        expected = list(own[own["patient_id"] == row.patient]["neighbour_id"])
        assert row.neighbours == expected
        assert row.new_neighbours == sum(n in NEW for n in expected)


def test_lineage(synced: Neo4jGraphStore) -> None:
    got = _run(synced, "lineage", version="msrl-test-a1")
    assert list(got["version"]) == ["msrl-test-a1", "msrl-test"]
    assert list(got["depth"]) == [0, 1]
    assert list(got["own_edges"]) == [2 * 3, 8 * 3]
    assert list(got["own_predictions"]) == [2, 8]
    assert all(isinstance(b, list) for b in got["batches"])  # the fixture has no ingest rows


def test_cookbook_runs_read_only(neo4j_config: Neo4jSettings) -> None:
    from casegraph.graph.cypher import write_clauses

    for name, query in cookbook_queries(DOC.read_text(encoding="utf-8")).items():
        assert write_clauses(query) == [], name
