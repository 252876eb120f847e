"""`casegraph cypher`: read-only by default, parameters, exports; graph CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casegraph.cli import app
from casegraph.config import Neo4jSettings
from casegraph.errors import InputError
from casegraph.graph.cypher import CypherWriteRefused, parse_params, write_clauses
from casegraph.graph.neo4j_store import Neo4jGraphStore
from casegraph.ingest.store import Store
from tests.graph.conftest import add_patient, add_version, fill_store, predictions_for


@pytest.mark.parametrize("query", [
    "CREATE (n:X)", "MATCH (n) DETACH DELETE n", "MATCH (n) SET n.x = 1",
    "merge (n:X {id: 1})", "MATCH (n) REMOVE n.x", "DROP CONSTRAINT patient_id",
    "LOAD CSV FROM 'file:///x' AS r RETURN r", "MATCH (n) FOREACH (x IN [1] | SET n.y = x)",
    "CALL { MATCH (n) DELETE n } IN TRANSACTIONS",
])
def test_write_clauses_found(query: str) -> None:
    assert write_clauses(query)


@pytest.mark.parametrize("query", [
    "MATCH (p:Patient) RETURN p.id",
    "MATCH (p:Patient {id: 'CREATE (x)'}) RETURN p // DELETE in a comment",
    "MATCH (p:Patient) WHERE p.cohort = \"SET\" RETURN p.`create` AS created",
    "MATCH (p) RETURN p.id ORDER BY p.id SKIP 1 LIMIT 2 /* MERGE */",
])
def test_read_queries_pass(query: str) -> None:
    assert write_clauses(query) == []


def test_parse_params() -> None:
    assert parse_params(["k=5", "id=TCGA-01", 'ids=["a","b"]', "flag=true", "s=a=b"]) == {
        "k": 5, "id": "TCGA-01", "ids": ["a", "b"], "flag": True, "s": "a=b"}
    with pytest.raises(InputError, match="name=value"):
        parse_params(["no-equals-sign"])
    with pytest.raises(InputError):
        parse_params(["bad name=1"])


def test_cypher_needs_a_neo4j_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASEGRAPH_NEO4J_URI", raising=False)
    result = CliRunner().invoke(app, ["cypher", "RETURN 1"])
    assert result.exit_code != 0 and "CASEGRAPH_NEO4J_URI" in str(result.exception)


def test_graph_sync_and_stats_embedded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    fill_store(store)
    store.con.execute("CHECKPOINT")
    root = str(store.root)
    store.close()
    runner = CliRunner()
    out = runner.invoke(app, ["graph", "sync", "--store", root, "--backend", "embedded"])
    assert out.exit_code == 0, out.output
    assert "8 patients" in out.output and "wrote version msrl-test" in out.output
    again = runner.invoke(app, ["graph", "sync", "--store", root, "--backend", "embedded"])
    assert "0 nodes/relationships created" in again.output
    stats = runner.invoke(app, ["graph", "stats", "--store", root, "--backend", "embedded"])
    assert "SIMILAR_TO" in stats.output and "24" in stats.output
    pruned = runner.invoke(app, ["graph", "prune", "--store", root, "--backend", "embedded",
                                 "--version", "msrl-test"])
    assert "24 similarity edges removed" in pruned.output


def test_graph_sync_prints_the_delta_and_prune_guards_children(store: Store) -> None:
    from casegraph.graph.base import VersionHasChildren

    fill_store(store)
    add_patient(store, "P100")
    add_version(store, "msrl-test-a1", ["P100"], k=2, seed=1, parent_id="msrl-test",
                predictions=predictions_for(["P100"]), buffer=["P100"])
    store.con.execute("CHECKPOINT").fetchall()
    root = str(store.root)
    store.close()
    runner = CliRunner()
    args = ["--store", root, "--backend", "embedded"]
    out = runner.invoke(app, ["graph", "sync", *args])
    assert out.exit_code == 0, out.output
    assert "written (the delta): 9 patients, 9 slides, 26 edges, 1 predictions" in out.output
    again = runner.invoke(app, ["graph", "sync", *args])
    assert "written (the delta): 0 patients, 0 slides, 0 edges, 0 predictions" in again.output
    refused = runner.invoke(app, ["graph", "prune", *args, "--version", "msrl-test"])
    assert isinstance(refused.exception, VersionHasChildren)
    assert "msrl-test-a1" in str(refused.exception) and "\n" not in str(refused.exception)
    pruned = runner.invoke(app, ["graph", "prune", *args, "--version", "msrl-test",
                                 "--with-children"])
    assert pruned.exit_code == 0 and "26 similarity edges removed" in pruned.output


@pytest.mark.neo4j
@pytest.mark.usefixtures("neo4j_cli_env")
def test_cypher_cli_reads_exports_and_refuses_writes(
    neo4j_graph: Neo4jGraphStore, neo4j_config: Neo4jSettings, store: Store, tmp_path: Path
) -> None:
    from casegraph.graph.sync import sync_graph

    fill_store(store)
    sync_graph(store, neo4j_graph)
    runner = CliRunner()
    csv_path, json_path = tmp_path / "out.csv", tmp_path / "out.json"
    query = ("MATCH (p:Patient {id: $patient})-[r:SIMILAR_TO]->(n) "
             "RETURN n.id AS id, r.rank AS rank ORDER BY rank")
    out = runner.invoke(app, ["cypher", query, "--param", "patient=P001", "--csv",
                              str(csv_path), "--json", str(json_path)])
    assert out.exit_code == 0, out.output
    rows = json.loads(json_path.read_text())
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert csv_path.read_text().splitlines()[0] == "id,rank"

    refused = runner.invoke(app, ["cypher", "MATCH (p:Patient) DETACH DELETE p"])
    assert isinstance(refused.exception, CypherWriteRefused)
    assert "--write" in str(refused.exception)
    assert neo4j_graph.stats().nodes["Patient"] == 8

    # an injection attempt through a parameter is just a value that matches nothing
    evil = "P001'}) DETACH DELETE p //"
    out = runner.invoke(app, ["cypher", "MATCH (p:Patient {id: $id}) RETURN count(p) AS n",
                              "--param", f"id={evil}", "--json", str(json_path)])
    assert json.loads(json_path.read_text()) == [{"n": 0}]
    assert neo4j_graph.stats().nodes["Patient"] == 8

    wrote = runner.invoke(app, ["cypher", "MATCH (p:Patient {id: $id}) SET p.study = $s",
                                "--param", "id=P001", "--param", "s=pilot", "--write"])
    assert wrote.exit_code == 0, wrote.output
    check = runner.invoke(app, ["cypher", "MATCH (p:Patient {study: 'pilot'}) "
                                "RETURN p.id AS id", "--json", str(json_path)])
    assert check.exit_code == 0 and json.loads(json_path.read_text()) == [{"id": "P001"}]


@pytest.mark.neo4j
def test_server_refuses_writes_in_read_mode(neo4j_graph: Neo4jGraphStore) -> None:
    """The second line of defence: a read transaction cannot write, whatever the text."""
    from neo4j.exceptions import ClientError

    from casegraph.graph.cypher import run_cypher

    with pytest.raises(CypherWriteRefused):
        run_cypher(neo4j_graph.driver, "CALL db.createLabel('Sneaky')")
    with neo4j_graph.driver.session() as session, pytest.raises(ClientError):
        session.execute_read(lambda tx: tx.run("CREATE (:Sneaky)").consume())
    assert neo4j_graph.run_write("MATCH (n:Sneaky) RETURN n") == 0
