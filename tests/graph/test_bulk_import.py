"""`casegraph graph import` (Neo4j's bulk importer) gives the graph a batched sync gives:
the same nodes, relationships and properties read back through the driver from a second,
real server started on the imported database."""

from __future__ import annotations

import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from casegraph.cli import app
from casegraph.config import Neo4jSettings
from casegraph.errors import CasegraphError
from casegraph.graph.base import GraphStore
from casegraph.graph.bulk_import import bulk_import
from casegraph.graph.neo4j_store import Neo4jGraphStore
from casegraph.graph.sync import sync_graph
from casegraph.ingest.store import Store
from tests.graph.conftest import TEST_MARKER, add_patient, add_version, fill_store, predictions_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "neo4j"
JAR = DEPLOY / "target" / "casegraph-neo4j.jar"
LAUNCHER = ["bash", str(DEPLOY / "import.sh")]
ODD_ID = 'P"odd, id\nwith a line break'
pytestmark = pytest.mark.neo4j


def _fill(store: Store) -> None:
    """The graph fixture's store, a derived version with predictions, and a patient whose id
    holds a quote, a comma and a line break."""
    fill_store(store)
    add_patient(store, ODD_ID, "brca", batch="b1", time=3.5, event=False)
    ids = [f"P{i:03d}" for i in range(8)]
    add_version(store, "msrl-child", [ODD_ID, ids[1]], k=2, seed=1, parent_id="msrl-test",
                predictions=predictions_for([ODD_ID, ids[1]]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server_on(tmp_path: Path) -> Iterator[Any]:
    """Starts a throwaway server (no auth, a free port) on a home: ``start(home)``."""
    processes: list[subprocess.Popen[str]] = []

    def start(home: Path) -> Neo4jSettings:
        port = _free_port()
        process = subprocess.Popen(
            ["java", "-Xmx512m", "-XX:+UseSerialGC", "-jar", str(JAR), "--port", str(port),
             "--home", str(home), "--no-auth", "--page-cache", "64"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        assert process.stdout is not None
        for line in process.stdout:  # no time limit: the readiness line or the exit
            if line.startswith("casegraph-neo4j ready "):
                return Neo4jSettings(f"bolt://127.0.0.1:{port}", "neo4j", None)
        raise AssertionError(f"the server on {home} exited ({process.wait()})")

    yield start
    for process in processes:
        process.terminate()
        process.wait()


def _full_dump(graph: Neo4jGraphStore) -> tuple[Counter[Any], Counter[Any]]:
    """Every node (labels, properties) and relationship (type, end keys, properties) as
    multisets; an empty list counts as absent (the importer's CSV has no empty list)."""
    def props(values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                            for k, v in values.items() if v != []))

    with graph.driver.session(database="neo4j") as session:
        nodes = session.run(f"MATCH (n) WHERE NOT n:{TEST_MARKER} "
                            "RETURN labels(n) AS l, properties(n) AS p").data()
        rels = session.run("MATCH (a)-[r]->(b) RETURN type(r) AS t, coalesce(a.id, a.name) AS a, "
                           "coalesce(b.id, b.name) AS b, properties(r) AS p").data()
    return (Counter((tuple(sorted(r["l"])), props(r["p"])) for r in nodes),
            Counter((r["t"], r["a"], r["b"], props(r["p"])) for r in rels))


def test_import_gives_the_graph_of_a_batched_sync(
    neo4j_graph: GraphStore, store: Store, tmp_path: Path, server_on: Any
) -> None:
    assert isinstance(neo4j_graph, Neo4jGraphStore)
    synced_graph: Neo4jGraphStore = neo4j_graph
    _fill(store)
    store.con.execute("CHECKPOINT")
    root = store.root
    store.close()
    home = tmp_path / "imported-home"
    result = CliRunner().invoke(app, ["graph", "import", "--store", str(root),
                                      "--neo4j-home", str(home)])
    assert result.exit_code == 0, result.output
    assert "28 similarity edges" in result.output  # msrl-test 8 x 3, msrl-child 2 x 2
    with Store.open(root) as reopened:
        report = sync_graph(reopened, synced_graph, batch_size=5)
        synced, synced_full = synced_graph.dump(), _full_dump(synced_graph)
        imported = Neo4jGraphStore.connect(server_on(home))
        with imported:
            assert imported.dump() == synced
            assert _full_dump(imported) == synced_full
            again = sync_graph(reopened, imported)  # constraints; the marks say: all there
            assert (again.created, again.patients_written, again.edges_written) == (0, 0, 0)
            assert sorted(again.versions_skipped) == sorted(report.versions_written)
            with pytest.raises(CasegraphError, match=r"import into .* failed: .") as failure:
                bulk_import(reopened, home, LAUNCHER)  # a running server holds it
            assert "\n" not in str(failure.value)
