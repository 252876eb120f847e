"""The web app's case-graph route over real HTTP: a patient's 1-2 hop neighbourhood read from
the embedded graph backend of a synced tiny store, and its one-line refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from casegraph.config import Neo4jSettings
from casegraph.graph.base import GraphStore
from casegraph.graph.embedded import EmbeddedGraphStore
from casegraph.graph.sync import sync_graph
from casegraph.ingest.store import Store
from tests.graph.conftest import neo4j_config, neo4j_graph  # noqa: F401 - the test server
from tests.retrieval.conftest import LiveServer, copy_store, serve


@pytest.fixture(scope="module")
def synced_server(tiny_store_dir: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[LiveServer, Path]]:
    """The tiny store with its case graph synced (no trained version: the static k-NN)."""
    root = copy_store(tiny_store_dir, tmp_path_factory.mktemp("graph-web") / "store")
    with Store.open(root) as store:
        sync_graph(store, EmbeddedGraphStore(store), static_k=4)
    with serve(root) as server:
        yield server, root


def test_patient_graph_is_the_backends_neighbourhood(
        synced_server: tuple[LiveServer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASEGRAPH_NEO4J_URI", raising=False)  # the embedded backend
    server, root = synced_server
    url = f"{server.url}/patients/A01/graph"
    assert httpx.get(url).status_code == 401
    one = httpx.get(url, headers=server.headers, params={"k": 3})
    assert one.status_code == 200, one.text
    body = one.json()
    with Store.open(root, read_only=True) as store:
        graph = EmbeddedGraphStore(store)
        expected = graph.to_networkx(body["version"], ["A01"], hops=1, k=3)
        two_hops = graph.to_networkx(body["version"], ["A01"], hops=2, k=3)
        outcome = store.patients().set_index("patient_id")
    assert body["backend"] == "embedded" and body["hops"] == 1
    assert body["version"].startswith("static")
    assert {n["id"] for n in body["nodes"]} == set(expected.nodes)
    assert {(e["source"], e["target"]): e["weight"] for e in body["edges"]} == pytest.approx(
        {(a, b): d["weight"] for a, b, d in expected.edges(data=True)})
    assert len(body["edges"]) == 3
    for node in body["nodes"]:
        assert node["time"] == outcome.at[node["id"], "time"]
        assert node["event"] == bool(outcome.at[node["id"], "event"])
        assert node["cohort"] == outcome.at[node["id"], "cohort"]
        assert node["hop"] == (0 if node["id"] == "A01" else 1)
    two = httpx.get(url, headers=server.headers, params={"k": 3, "hops": 2}).json()
    assert {n["id"] for n in two["nodes"]} == set(two_hops.nodes)
    assert len(two["edges"]) == two_hops.number_of_edges() > 3
    assert {n["hop"] for n in two["nodes"]} == {0, 1, 2}


def test_patient_graph_refusals_are_one_line(synced_server: tuple[LiveServer, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASEGRAPH_NEO4J_URI", raising=False)
    server, _ = synced_server
    url, headers = f"{server.url}/patients/A01/graph", server.headers
    for hops in (0, 3):
        bad = httpx.get(url, headers=headers, params={"hops": hops})
        assert bad.status_code == 400 and bad.json()["detail"] == f"hops must be 1..2, got {hops}"
    unknown = httpx.get(url, headers=headers, params={"version": "nope"})
    assert unknown.status_code == 400 and "nope" in unknown.json()["detail"]
    assert "\n" not in unknown.json()["detail"] and "--version" not in unknown.json()["detail"]
    assert httpx.get(f"{server.url}/patients/zz/graph", headers=headers).status_code == 404


def test_an_unsynced_store_says_what_to_run(live_server: LiveServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASEGRAPH_NEO4J_URI", raising=False)
    r = httpx.get(f"{live_server.url}/patients/A01/graph", headers=live_server.headers)
    assert r.status_code == 400 and "casegraph graph sync" in r.json()["detail"]


def test_version_inputs_say_what_the_query_page_may_send(tiny_store_dir: Path,
                                                         tmp_path: Path) -> None:
    from casegraph.models.versioning import train_version

    root = copy_store(tiny_store_dir, tmp_path / "store")
    with Store.open(root) as store:
        version = train_version(store, "alpha", "snn", fold=None, epochs=1, hidden=8)
    version_id = getattr(version, "version_id", version)
    with serve(root) as server:
        url = f"{server.url}/versions/{version_id}/inputs"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers=server.headers).json() == {
            "version_id": version_id, "uses_slides": False, "reads_genomics": True}
        missing = httpx.get(f"{server.url}/versions/nope/inputs", headers=server.headers)
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]


@pytest.mark.neo4j
def test_patient_graph_reads_neo4j_when_configured(
        tiny_store_dir: Path, tmp_path: Path, neo4j_graph: GraphStore,  # noqa: F811
        neo4j_config: Neo4jSettings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    root = copy_store(tiny_store_dir, tmp_path / "store")
    with Store.open(root) as store:
        embedded = EmbeddedGraphStore(store)
        sync_graph(store, embedded, static_k=3)
        sync_graph(store, neo4j_graph, static_k=3)
        version = sorted(embedded.synced_versions())[-1]
        expected = embedded.to_networkx(version, ["B02"], hops=2, k=3)
    monkeypatch.setenv("CASEGRAPH_NEO4J_URI", neo4j_config.uri)
    monkeypatch.setenv("CASEGRAPH_NEO4J_USER", neo4j_config.user)
    monkeypatch.delenv("CASEGRAPH_NEO4J_PASSWORD_FILE", raising=False)
    if neo4j_config.password:
        monkeypatch.setenv("CASEGRAPH_NEO4J_PASSWORD", neo4j_config.password)
    with serve(root) as server:
        r = httpx.get(f"{server.url}/patients/B02/graph", headers=server.headers,
                      params={"hops": 2, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["backend"] == "neo4j" and body["version"] == version
    assert {n["id"] for n in body["nodes"]} == set(expected.nodes)
    assert {(e["source"], e["target"]): e["weight"] for e in body["edges"]} == pytest.approx(
        {(a, b): d["weight"] for a, b, d in expected.edges(data=True)})
