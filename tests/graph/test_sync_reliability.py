"""A sync killed mid-way (a real SIGKILL of a real process) and re-run ends in the same graph;
values that look like Cypher/SQL are stored as data, never run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from casegraph.faults import CRASH_ENV
from casegraph.graph.base import GraphStore
from casegraph.graph.embedded import EmbeddedGraphStore
from casegraph.graph.records import ModelVersionRecord, SimilarEdge
from casegraph.graph.sync import batched_by_source, sync_graph
from casegraph.ingest.store import Store
from tests.graph.conftest import add_patient, add_version, client_env, fill_store

SYNC = "from casegraph.cli import main; main()"


def _sync_cli(store_dir: Path, backend: str, extra_env: dict[str, str],
              crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **extra_env}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-c", SYNC, "graph", "sync", "--store", str(store_dir),
         "--backend", backend, "--batch-size", "7"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)


# batches: cohorts 1, patients 2, slides 2, then per version: node, buffer, edges (7 a
# batch): msrl-test = batches 6-13, msrl-second = 14-22. 3: among the patients; 13: the
# first version's last edge batch, before its mark; 18: mid-way the second version's edges.
@pytest.mark.slow
@pytest.mark.parametrize("crash_after", [3, 13, 18])
def test_killed_sync_then_rerun_gives_the_same_graph(
    graph: GraphStore, store: Store, request: pytest.FixtureRequest, crash_after: int
) -> None:
    fill_store(store, n=12)
    ids = [f"P{i:03d}" for i in range(12)]
    add_version(store, "msrl-second", ids, k=4, seed=3)
    store.con.execute("CHECKPOINT")
    store_dir = store.root
    backend = graph.backend
    env = client_env(request.getfixturevalue("neo4j_config")) if backend == "neo4j" else {}
    store.close()  # the subprocess needs the DuckDB file

    killed = _sync_cli(store_dir, backend, env, crash_at=f"sync.after_batch@{crash_after}")
    assert killed.returncode == -signal.SIGKILL, killed.stdout
    assert "synced into" not in killed.stdout  # it died before its report

    with Store.open(store_dir) as reopened:
        partial = _backend_like(graph, reopened)
        expected_marked = ["msrl-test"] if crash_after > 13 else []
        assert list(partial.synced_versions()) == expected_marked  # it really stopped mid-way
        if crash_after == 18:
            assert 0 < partial.stats().versions["msrl-second"] < 48
    rerun = _sync_cli(store_dir, backend, env)
    assert rerun.returncode == 0, rerun.stdout

    with Store.open(store_dir) as reopened:
        recovered = _backend_like(graph, reopened).dump()
        clean = EmbeddedGraphStore(reopened)
        clean.clear()
        sync_graph(reopened, clean)  # an uninterrupted sync of the same store
        assert recovered == clean.dump()
        assert len(recovered.similar) == 12 * 3 + 12 * 4


def _backend_like(graph: GraphStore, store: Store) -> GraphStore:
    return EmbeddedGraphStore(store) if graph.backend == "embedded" else graph


INJECTED_ID = "P'}) DETACH DELETE p //"
INJECTED_COHORT = 'x"}) MATCH (n) DETACH DELETE n WITH 1 AS one MATCH (m) RETURN m //\'; DROP TABLE patients; --'


def test_injection_through_patient_id_and_cohort_is_just_data(
    graph: GraphStore, store: Store
) -> None:
    fill_store(store)
    store.con.execute("INSERT INTO cohorts VALUES (?, 'evil', 'b1')",
                      [INJECTED_COHORT]).fetchall()
    add_patient(store, INJECTED_ID, INJECTED_COHORT, time=1.0)
    ids = [f"P{i:03d}" for i in range(8)] + [INJECTED_ID]
    add_version(store, "msrl-evil", ids, k=2, seed=4)
    sync_graph(store, graph)
    dump = graph.dump()
    assert INJECTED_COHORT in dump.cohorts and len(dump.patients) == 9
    evil = next(p for p in dump.patients if p.patient_id == INJECTED_ID)
    assert evil.cohort == INJECTED_COHORT
    assert graph.stats().versions == {"msrl-test": 24, "msrl-evil": 18}
    assert [n.rank for n in graph.neighbours(INJECTED_ID, "msrl-evil")] == [1, 2]
    assert graph.prune_version(INJECTED_ID) == 0  # a weird version id is just a miss
    assert store.counts()["patients"] == 9  # the SQL side is intact too


def test_edge_batches_never_split_a_patients_edges() -> None:
    edges = [SimilarEdge(a, f"{a}-{j}", j, 0.5) for a, n in (("A", 3), ("B", 1), ("C", 5), ("D", 2))
             for j in range(1, n + 1)]
    chunks = [[e.patient_id for e in chunk] for chunk in batched_by_source(edges, 4)]
    assert chunks == [["A"] * 3 + ["B"], ["C"] * 5, ["D"] * 2]  # C alone exceeds 4
    assert [len(c) for c in batched_by_source(edges, 100)] == [11]


def test_edge_writes_retried_or_overlapping_create_each_edge_once(graph: GraphStore,
                                                                  store: Store) -> None:
    """A retried batch (its commit was not acknowledged) and a batch overlapping an earlier
    partial one (a re-run with another batch size) neither duplicate nor lose an edge."""
    fill_store(store, trained=False)
    ids = [f"P{i:03d}" for i in range(8)]
    sync_graph(store, graph, versions=[])  # patients only
    graph.write_model_version(ModelVersionRecord("v", "msrl", None, "2026-01-01"))
    edges = [SimilarEdge(a, b, rank, 1.0 / rank) for a in ids[:3]
             for rank, b in enumerate([o for o in ids if o != a][:3], start=1)]
    assert graph.write_similar("v", edges[:2]) == 2  # a part of P000's edges
    assert graph.write_similar("v", edges) == len(edges) - 2
    assert graph.write_similar("v", edges) == 0  # the retry
    changed = [SimilarEdge(e.patient_id, e.neighbour_id, e.rank + 10, 0.25) for e in edges[:3]]
    assert graph.write_similar("v", changed) == 0
    similar = graph.dump().similar
    assert len(similar) == len(edges)
    assert {(a, b, r) for _, a, b, r, _ in similar} == (
        {(e.patient_id, e.neighbour_id, e.rank + 10) for e in edges[:3]}
        | {(e.patient_id, e.neighbour_id, e.rank) for e in edges[3:]})
