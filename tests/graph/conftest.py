"""Graph fixtures: a tiny literal store, and both GraphStore backends.

The Neo4j backend uses the server named by CASEGRAPH_TEST_NEO4J_URI / _USER / _PASSWORD
(scripts/test.sh starts one from deploy/neo4j and sets them), else CASEGRAPH_NEO4J_URI. The
test variables are separate so that other layers' tests keep the embedded default. Without
a server the ``neo4j`` tests skip locally but FAIL in CI (CI=true).
The tests wipe that database, so they refuse one that holds anything but test data (unless
CASEGRAPH_NEO4J_TEST_SERVER=1, set by scripts/test.sh for its throwaway server).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from casegraph.config import Neo4jSettings, neo4j_settings
from casegraph.graph.base import GraphStore
from casegraph.graph.embedded import EmbeddedGraphStore
from casegraph.ingest.parquet_files import write_genomic_file
from casegraph.ingest.store import Store
from casegraph.ingest.versions import NewVersion, PredictionRows

TEST_MARKER = "CasegraphTestMarker"
COHORTS = ("blca", "brca")


class _Runner:
    """``execute`` that also fetches (DuckDB refuses ``register`` with a pending result)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def execute(self, sql: str, params: list[object] | None = None) -> None:
        self.store.con.execute(sql, params or []).fetchall()


def add_patient(store: Store, patient_id: str, cohort: str = "blca", batch: str = "b1",
                time: float = 5.0, event: bool = True) -> None:
    """One more patient row (no slide, no genomics) of ingest batch ``batch``."""
    _Runner(store).execute("INSERT INTO patients VALUES (?, ?, ?, ?, 'x', '{}', ?)",
                           [patient_id, cohort, time, event, batch])


def fill_store(store: Store, n: int = 8, trained: bool = True) -> None:
    """n patients over two cohorts, one slide each (two for the first), 3 genomic features,
    an MCAT-style split, and (``trained``) one model version "msrl-test" with top-3
    neighbours and a 4-patient buffer."""
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(n)]
    con = _Runner(store)
    for cohort in COHORTS:
        con.execute("INSERT INTO cohorts VALUES (?, 'test', 'b0')", [cohort])
    for i, pid in enumerate(ids):
        con.execute("INSERT INTO patients VALUES (?, ?, ?, ?, ?, ?, 'b0')",
                    [pid, COHORTS[i % 2], 10.0 + i, i % 3 == 0, pid, json.dumps({})])
        for s in range(2 if i == 0 else 1):
            con.execute("INSERT INTO slides (slide_id, patient_id, cohort, n_patches, encoder) "
                        "VALUES (?, ?, ?, ?, 'uni')", [f"{pid}-S{s}", pid, COHORTS[i % 2], 100])
        con.execute("INSERT INTO splits VALUES ('mcat', 0, ?, ?)",
                    [pid, "train" if i < n - 2 else "val"])
    names = ["TP53_rnaseq", "EGFR_rnaseq", "TP53_cnv"]
    for fid, name in enumerate(names):
        gene, modality = name.split("_")[0], "cnv" if name.endswith("_cnv") else "rna"
        con.execute("INSERT INTO features VALUES (?, ?, ?, ?)", [fid, name, gene, modality])
    values = rng.normal(size=(n, 3)).astype(np.float32)
    values[1::2, 2] = np.nan  # odd patients have no measured CNV
    file = write_genomic_file(store.genomics_dir, "b0", ids, names, values)
    for row, pid in enumerate(ids):
        con.execute("INSERT INTO genomic_rows VALUES (?, ?, ?, 'b0')", [pid, file, row])
    if trained:
        add_version(store, "msrl-test", ids, k=3)


def add_version(store: Store, version_id: str, ids: list[str], k: int = 3,
                seed: int = 0, parent_id: str | None = None,
                predictions: PredictionRows | None = None,
                buffer: list[str] | None = None) -> None:
    """A version (through the storage API) with k random neighbours for each of ``ids``
    (among ``ids``, and for a derived version also its parent's patients) and a buffer of
    the first four ids (or ``buffer``)."""
    rng = np.random.default_rng(seed)
    pool = list(ids)
    if parent_id is not None:
        pool += [p for p in store.versions.neighbours(parent_id)["patient_id"].unique()
                 if p not in ids]
    rows = []
    for pid in ids:
        others = [o for o in pool if o != pid]
        picks = rng.choice(len(others), size=k, replace=False)
        rows += [(pid, others[j], rank, round(1.0 / rank, 3))
                 for rank, j in enumerate(picks, start=1)]
    store.versions.create(NewVersion(
        model="msrl", cohort="blca", config={"k": k}, metrics={"c_index": 0.6},
        version_id=version_id, parent_id=parent_id, predictions=predictions,
        neighbours=pd.DataFrame(rows, columns=["patient_id", "neighbour_id", "rank", "weight"]),
        buffer=ids[:4] if buffer is None else buffer))


def predictions_for(ids: list[str], seed: int = 0, n_bins: int = 3) -> PredictionRows:
    """Risks and non-increasing survival curves for ``ids``; the last id is ``inferred``."""
    rng = np.random.default_rng(seed)
    survival = np.cumprod(rng.uniform(0.5, 1.0, size=(len(ids), n_bins)), axis=1,
                         dtype=np.float64)
    inferred = np.zeros(len(ids), dtype=bool)
    inferred[-1:] = True
    return PredictionRows(list(ids), rng.normal(size=len(ids)), survival, inferred)


@pytest.fixture
def filled_store(store: Store) -> Store:
    fill_store(store)
    return store


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_server_settings() -> Neo4jSettings | None:
    uri = os.environ.get("CASEGRAPH_TEST_NEO4J_URI")
    if not uri:
        return neo4j_settings()
    return Neo4jSettings(uri, os.environ.get("CASEGRAPH_TEST_NEO4J_USER", "neo4j"),
                         os.environ.get("CASEGRAPH_TEST_NEO4J_PASSWORD"))


def client_env(settings: Neo4jSettings) -> dict[str, str]:
    """The CASEGRAPH_NEO4J_* variables a CLI process needs to reach the test server."""
    env = {"CASEGRAPH_NEO4J_URI": settings.uri, "CASEGRAPH_NEO4J_USER": settings.user}
    if settings.password:
        env["CASEGRAPH_NEO4J_PASSWORD"] = settings.password
    return env


@pytest.fixture(scope="session")
def neo4j_config() -> Neo4jSettings:
    """The test server's settings; skip locally / fail in CI when it is not reachable."""
    settings = test_server_settings()
    problem = None
    if settings is None:
        problem = ("neither CASEGRAPH_TEST_NEO4J_URI nor CASEGRAPH_NEO4J_URI is set "
                   "(scripts/test.sh starts a server)")
    else:
        from neo4j import GraphDatabase

        auth = (settings.user, settings.password) if settings.password else None
        try:
            with GraphDatabase.driver(settings.uri, auth=auth) as driver:
                driver.verify_connectivity()
                records, _, _ = driver.execute_query(
                    f"RETURN COUNT {{ MATCH (n) WHERE NOT n:{TEST_MARKER} }} > 0 AS used, "
                    f"EXISTS {{ MATCH (:{TEST_MARKER}) }} AS marked")
                throwaway = os.environ.get("CASEGRAPH_NEO4J_TEST_SERVER") == "1"
                if records[0]["used"] and not records[0]["marked"] and not throwaway:
                    problem = (f"{settings.uri} holds data that is not from the tests; "
                               "refusing to wipe it (point CASEGRAPH_NEO4J_URI at a test server)")
                else:
                    driver.execute_query(f"MERGE (:{TEST_MARKER})")
        except Exception as exc:
            problem = f"Neo4j at {settings.uri} is not usable: {exc.__class__.__name__}"
    if problem:
        if _in_ci():
            pytest.fail(f"neo4j tests must run in CI: {problem}")
        pytest.skip(problem)
    assert settings is not None
    return settings


@pytest.fixture
def neo4j_graph(neo4j_config: Neo4jSettings) -> Iterator[GraphStore]:
    from casegraph.graph.neo4j_store import Neo4jGraphStore

    graph = Neo4jGraphStore.connect(neo4j_config)
    _wipe(graph)
    yield graph
    graph.close()


def _wipe(graph: GraphStore) -> None:
    from casegraph.graph.neo4j_store import Neo4jGraphStore

    assert isinstance(graph, Neo4jGraphStore)
    graph.clear()
    graph.run_write(f"MERGE (:{TEST_MARKER})")


@pytest.fixture(params=["embedded", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def graph(request: pytest.FixtureRequest, store: Store) -> GraphStore:
    """Each backend in turn (the contract suite runs against both)."""
    if request.param == "embedded":
        return EmbeddedGraphStore(store)
    result: GraphStore = request.getfixturevalue("neo4j_graph")
    return result


@pytest.fixture
def neo4j_cli_env(neo4j_config: Neo4jSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point in-process CLI calls (CliRunner) at the test server."""
    for name, value in client_env(neo4j_config).items():
        monkeypatch.setenv(name, value)
