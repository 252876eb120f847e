"""The Neo4j backend through routing: a ``neo4j://`` URI against the local server (a single
instance answers the driver's routing requests), so reads run as routed read transactions
and writes go to the (only) leader; the same sync, neighbour reads and Cypher as over
``bolt://``, and a sync killed mid-way then re-run over ``neo4j://`` ends in the same graph.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterator

import pytest

from casegraph.config import Neo4jSettings
from casegraph.graph.cypher import CypherWriteRefused, run_cypher
from casegraph.graph.embedded import EmbeddedGraphStore
from casegraph.graph.neo4j_store import Neo4jGraphStore
from casegraph.graph.sync import sync_graph
from casegraph.ingest.store import Store
from tests.graph.conftest import TEST_MARKER, add_version, client_env, fill_store
from tests.graph.test_sync_reliability import _sync_cli

pytestmark = pytest.mark.neo4j


def routed(settings: Neo4jSettings, scheme: str = "neo4j") -> Neo4jSettings:
    """The same server addressed with a routing scheme (``bolt://h:p`` -> ``neo4j://h:p``)."""
    _, _, address = settings.uri.partition("://")
    return dataclasses.replace(settings, uri=f"{scheme}://{address}")


@pytest.fixture
def routed_graph(neo4j_config: Neo4jSettings) -> Iterator[Neo4jGraphStore]:
    graph = Neo4jGraphStore.connect(routed(neo4j_config))
    graph.clear()
    graph.run_write(f"MERGE (:{TEST_MARKER})")
    yield graph
    graph.close()


def test_a_routing_uri_gives_a_routing_driver(routed_graph: Neo4jGraphStore) -> None:
    from neo4j import Neo4jDriver

    assert isinstance(routed_graph.driver, Neo4jDriver)  # not the direct BoltDriver
    # the server's routing table names itself as reader, writer and router
    records, _, _ = routed_graph.driver.execute_query(
        "CALL dbms.routing.getRoutingTable({}, 'neo4j') YIELD servers "
        "UNWIND servers AS s RETURN s.role AS role ORDER BY role", routing_="r")
    assert [r["role"] for r in records] == ["READ", "ROUTE", "WRITE"]


def test_sync_neighbours_and_cypher_through_routing(store: Store,
                                                    routed_graph: Neo4jGraphStore) -> None:
    fill_store(store)
    report = sync_graph(store, routed_graph, batch_size=3)
    assert report is not None
    embedded = EmbeddedGraphStore(store)
    embedded.clear()
    sync_graph(store, embedded, batch_size=3)
    assert routed_graph.dump() == embedded.dump()
    assert routed_graph.synced_versions() == {"msrl-test": 8 * 3}
    # read right after the writes, in new sessions: the shared bookmarks keep it causal
    assert routed_graph.neighbours("P000", "msrl-test", k=3) == embedded.neighbours(
        "P000", "msrl-test", k=3)

    result = run_cypher(routed_graph.driver,
                        "MATCH (p:Patient {id: $id})-[r:SIMILAR_TO]->(n) "
                        "RETURN n.id AS id ORDER BY r.rank", {"id": "P000"})
    assert result.columns == ["id"]
    assert [row[0] for row in result.rows] == [n.patient_id for n in
                                               embedded.neighbours("P000", "msrl-test", k=3)]
    with pytest.raises(CypherWriteRefused):
        run_cypher(routed_graph.driver, "MERGE (:Patient {id: 'x'})")

    again = sync_graph(store, routed_graph, batch_size=3)  # idempotent over routing too
    assert again is not None
    assert routed_graph.dump() == embedded.dump()


@pytest.mark.slow
def test_killed_sync_over_routing_then_rerun_gives_the_same_graph(
    store: Store, routed_graph: Neo4jGraphStore, neo4j_config: Neo4jSettings
) -> None:
    fill_store(store, n=12)
    add_version(store, "msrl-second", [f"P{i:03d}" for i in range(12)], k=4, seed=3)
    store.con.execute("CHECKPOINT")
    store_dir = store.root
    env = client_env(routed(neo4j_config))
    store.close()  # the subprocess needs the DuckDB file

    # batch 18: mid-way through the second version's edges (see test_sync_reliability)
    killed = _sync_cli(store_dir, "neo4j", env, crash_at="sync.after_batch@18")
    assert killed.returncode == -signal.SIGKILL, killed.stdout
    assert list(routed_graph.synced_versions()) == ["msrl-test"]
    assert 0 < routed_graph.stats().versions["msrl-second"] < 48

    rerun = _sync_cli(store_dir, "neo4j", env)
    assert rerun.returncode == 0, rerun.stdout
    with Store.open(store_dir) as reopened:
        clean = EmbeddedGraphStore(reopened)
        clean.clear()
        sync_graph(reopened, clean)
        assert routed_graph.dump() == clean.dump()
    assert routed_graph.synced_versions() == {"msrl-test": 36, "msrl-second": 48}
