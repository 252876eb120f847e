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
from tests.graph.conftest import add_version, fill_store

DOC = Path(__file__).resolve().parents[2] / "docs" / "cypher.md"
EXPECTED = {"neighbours", "neighbourhood-survival", "cross-cohort", "shared-neighbours",
            "buffer-anchors", "version-diff"}

pytestmark = pytest.mark.neo4j


def test_the_doc_has_every_cookbook_query() -> None:
    assert set(cookbook_queries(DOC.read_text(encoding="utf-8"))) == EXPECTED


@pytest.fixture
def synced(neo4j_graph: Neo4jGraphStore, store: Store) -> Iterator[Neo4jGraphStore]:
    fill_store(store)
    add_version(store, "msrl-new", [f"P{i:03d}" for i in range(8)], k=3, seed=5)
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


def test_cookbook_runs_read_only(neo4j_config: Neo4jSettings) -> None:
    from casegraph.graph.cypher import write_clauses

    for name, query in cookbook_queries(DOC.read_text(encoding="utf-8")).items():
        assert write_clauses(query) == [], name
