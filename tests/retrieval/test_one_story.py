"""One story everywhere: for a stored patient of a stored version, the case graph (embedded
backend and Cypher), ``QueryEngine.similar``, ``GET /patients/{id}/similar`` and
``casegraph query --patient`` return the same neighbours in the same order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from casegraph.cli import app as cli_app
from casegraph.graph.embedded import EmbeddedGraphStore
from casegraph.graph.sync import sync_graph
from casegraph.ingest.pipeline import ingest
from casegraph.ingest.store import Store
from casegraph.models.msrl.artifacts import load_version, neighbour_rows
from casegraph.retrieval.attach import attach_patients
from casegraph.retrieval.query import QueryEngine, QueryOptions
from casegraph.retrieval.service import API_KEY_HEADER, create_app
from tests.graph.conftest import neo4j_config, neo4j_graph  # noqa: F401 - fixtures
from tests.retrieval.test_attach import _second_batch, _trained

KEY = "one-story-key"
STORED_NOTE = "answered from the version's stored case graph"
runner = CliRunner()


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A store with a trained tiny MSRL version, a second batch attached to it (a derived
    version), and the embedded case graph synced from both."""
    root = tmp_path_factory.mktemp("one-story")
    store_dir, trained = _trained(root)
    with Store.open(store_dir) as store:
        ingest(store, _second_batch(root))
        derived = attach_patients(store, trained).version_id
        assert derived is not None
        sync_graph(store, EmbeddedGraphStore(store))
    return store_dir, trained, derived


def _stored(store: Store, version: str) -> dict[str, list[tuple[str, float]]]:
    """patient -> its stored (neighbour, weight) rows in rank order, along the lineage."""
    out: dict[str, list[tuple[str, float]]] = {}
    for member in store.versions.lineage(version):  # nearest first
        rows = store.versions.neighbours(member, own_only=True)
        for pid, frame in rows.groupby("patient_id", sort=False):
            out.setdefault(str(pid), [(str(n), float(w)) for n, w in
                                      zip(frame["neighbour_id"], frame["weight"], strict=True)])
    return out


@pytest.fixture(scope="module")
def client(story: tuple[Path, str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(story[0], keys=frozenset({KEY}), reload_seconds=3600)) as c:
        c.headers[API_KEY_HEADER] = KEY
        yield c


@pytest.mark.parametrize("which", ["trained", "derived"])
def test_every_stored_patient_gets_the_same_neighbours_on_every_path(
        story: tuple[Path, str, str], client: TestClient, which: str) -> None:
    store_dir, trained, derived = story
    version = trained if which == "trained" else derived
    with Store.open(store_dir, create=False, read_only=True) as store:
        expected = _stored(store, version)
        graph = EmbeddedGraphStore(store)
        engine = QueryEngine(store)
        assert len(expected) >= 20
        for pid, rows in expected.items():
            ids, k = [n for n, _ in rows], len(rows)
            assert [n.patient_id for n in graph.neighbours(pid, version, k)] == ids
            answer = engine.similar(pid, QueryOptions(k=k, model_version=version))
            assert [n.patient_id for n in answer.neighbours] == ids, pid
            assert [n.rank for n in answer.neighbours] == list(range(1, k + 1))
            weights = np.array([w for _, w in rows])
            np.testing.assert_allclose([n.weight for n in answer.neighbours],
                                       weights / weights.sum(), rtol=1e-6)
            assert answer.method == "msrl-gsl" and any(STORED_NOTE in n for n in answer.notes)
            served = client.get(f"/patients/{pid}/similar",
                                params={"k": k, "model_version": version})
            assert served.status_code == 200, served.text
            assert [n["patient_id"] for n in served.json()["neighbours"]] == ids
    for pid, rows in list(expected.items())[:4]:  # the CLI's own process path, a few
        out = runner.invoke(cli_app, ["query", "--store", str(store_dir), "--patient", pid,
                                      "--k", str(len(rows)), "--version", version, "--json"])
        assert out.exit_code == 0, out.output
        assert [n["patient_id"] for n in json.loads(out.output)["neighbours"]] == \
            [n for n, _ in rows]


def test_the_stored_answer_uses_the_stored_prediction(story: tuple[Path, str, str]) -> None:
    store_dir, trained, _ = story
    with Store.open(store_dir, create=False, read_only=True) as store:
        predictions = store.versions.predictions(trained).set_index("patient_id")
        engine = QueryEngine(store)
        for pid in list(_stored(store, trained))[:5]:
            answer = engine.similar(pid, QueryOptions(k=3, model_version=trained))
            assert answer.risk == pytest.approx(float(predictions.at[pid, "risk"]))
            assert answer.survival.survival == pytest.approx(predictions.at[pid, "survival"])
            assert len(answer.survival.times) == len(answer.survival.survival)


def test_filters_exact_and_larger_k_are_computed(story: tuple[Path, str, str]) -> None:
    store_dir, trained, _ = story
    with Store.open(store_dir, create=False, read_only=True) as store:
        engine = QueryEngine(store)
        pid, rows = next(iter(_stored(store, trained).items()))
        for opts in (QueryOptions(k=3, model_version=trained, exact=True),
                     QueryOptions(k=3, model_version=trained, cohorts=("alpha",)),
                     QueryOptions(k=len(rows) + 1, model_version=trained),
                     QueryOptions(k=3, n_candidates=8, model_version=trained)):
            answer = engine.similar(pid, opts)
            assert not any(STORED_NOTE in n for n in answer.notes)
            assert pid not in {n.patient_id for n in answer.neighbours}


def test_stored_rows_exclude_the_patients_own_case(story: tuple[Path, str, str]) -> None:
    """The trained version's rows follow the query's rule: two patients of one case are
    never each other's neighbours (here two patients are made one case)."""
    store_dir, trained, _ = story
    torch.set_num_threads(1)
    with Store.open(store_dir, create=False, read_only=True) as store:
        model = load_version(store, trained)
        ids, fused = store.versions.embeddings(trained, "fused", own_only=True)
        fused_t = torch.from_numpy(fused)
        as_stored = neighbour_rows(model, ids, fused_t)
        stored = store.versions.neighbours(trained, own_only=True)
        assert list(as_stored["neighbour_id"]) == list(stored["neighbour_id"])
        first, partner = ids[0], str(as_stored.iloc[0]["neighbour_id"])
        cases = ["shared" if p in (first, partner) else p for p in ids]
        rows = neighbour_rows(model, ids, fused_t, cases=cases)
    assert partner not in set(rows[rows["patient_id"] == first]["neighbour_id"])
    assert first not in set(rows[rows["patient_id"] == partner]["neighbour_id"])
    assert not (rows["patient_id"] == rows["neighbour_id"]).any()


@pytest.mark.neo4j
def test_cypher_returns_the_stored_neighbours(story: tuple[Path, str, str],
                                              neo4j_graph: object) -> None:  # noqa: F811
    from casegraph.graph.cypher import cookbook_queries, run_cypher
    from casegraph.graph.neo4j_store import Neo4jGraphStore

    assert isinstance(neo4j_graph, Neo4jGraphStore)
    store_dir, trained, derived = story
    doc = Path(__file__).resolve().parents[2] / "docs" / "cypher.md"
    lineage_query = cookbook_queries(doc.read_text(encoding="utf-8"))["lineage-neighbours"]
    with Store.open(store_dir, create=False, read_only=True) as store:
        sync_graph(store, neo4j_graph)
        engine = QueryEngine(store)
        for version in (trained, derived):
            for pid, rows in _stored(store, version).items():
                got = run_cypher(neo4j_graph.driver, lineage_query,
                                 {"patient": pid, "version": version, "k": len(rows)})
                cypher_ids = [r[got.columns.index("neighbour")] for r in got.rows]
                answer = engine.similar(pid, QueryOptions(k=len(rows), model_version=version))
                assert cypher_ids == [n.patient_id for n in answer.neighbours] == \
                    [n for n, _ in rows]
