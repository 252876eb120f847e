"""The case graph as networkx and GraphML, on both backends (the contract fixture)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

from casegraph.errors import InputError
from casegraph.graph.base import GraphStore
from casegraph.graph.export import write_graphml
from casegraph.graph.sync import sync_graph
from casegraph.ingest.store import Store
from tests.graph.conftest import fill_store


def test_neighbourhood_as_networkx_and_graphml(graph: GraphStore, store: Store,
                                               tmp_path: Path) -> None:
    fill_store(store)
    sync_graph(store, graph)
    edges = store.model_neighbours("msrl-test")
    one = graph.to_networkx("msrl-test", ["P002"], hops=1, k=3)
    first = list(edges.query("patient_id == 'P002'")["neighbour_id"])
    assert set(one.successors("P002")) == set(first)
    assert one.nodes["P002"]["seed"] == 1 and one.graph["version"] == "msrl-test"
    assert {d["rank"] for _, _, d in one.out_edges("P002", data=True)} == {1, 2, 3}
    outcome = store.patients().set_index("patient_id")
    for node, data in one.nodes(data=True):
        assert data["time"] == outcome.at[node, "time"]
        assert data["event"] == int(outcome.at[node, "event"])
    two = graph.to_networkx("msrl-test", ["P002"], hops=2, k=3)
    second = set(edges[edges["patient_id"].isin(first)]["neighbour_id"])
    assert set(two.nodes) == {"P002", *first, *second}
    back = nx.read_graphml(write_graphml(two, tmp_path / "g.graphml"))
    assert set(back.nodes) == set(two.nodes) and back.number_of_edges() == two.number_of_edges()


def test_export_refuses_unknown_inputs(graph: GraphStore, store: Store) -> None:
    fill_store(store)
    sync_graph(store, graph)
    with pytest.raises(InputError, match="not in the case graph"):
        graph.to_networkx("nope", ["P002"])
    with pytest.raises(InputError, match="patient 'ghost'"):
        graph.to_networkx("msrl-test", ["ghost"])
    with pytest.raises(InputError, match="hops"):
        graph.to_networkx("msrl-test", ["P002"], hops=9)
