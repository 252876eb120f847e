"""The persistent case graph: a GraphStore interface with Neo4j and embedded (DuckDB) backends.

:func:`open_graph_store` picks the backend: Neo4j when ``CASEGRAPH_NEO4J_URI`` is set (or
``backend="neo4j"``), else the embedded tables in the store. Sync with
:func:`casegraph.graph.sync.sync_graph`.
"""

from __future__ import annotations

from casegraph.config import neo4j_settings
from casegraph.errors import CasegraphError
from casegraph.graph.base import GraphStore
from casegraph.graph.embedded import EmbeddedGraphStore
from casegraph.ingest.store import Store

BACKENDS = ("auto", "neo4j", "embedded")

__all__ = ["BACKENDS", "EmbeddedGraphStore", "GraphStore", "open_graph_store"]


def open_graph_store(store: Store, backend: str = "auto") -> GraphStore:
    """The configured case graph. ``auto``: Neo4j if ``CASEGRAPH_NEO4J_URI`` is set."""
    if backend not in BACKENDS:
        raise CasegraphError(f"unknown graph backend {backend!r}; choose among: "
                             f"{', '.join(BACKENDS)}")
    settings = neo4j_settings()
    if backend == "embedded" or (backend == "auto" and settings is None):
        return EmbeddedGraphStore(store)
    if settings is None:
        raise CasegraphError("the neo4j backend needs CASEGRAPH_NEO4J_URI (e.g. "
                             "bolt://127.0.0.1:7687) and CASEGRAPH_NEO4J_PASSWORD[_FILE]")
    from casegraph.graph.neo4j_store import Neo4jGraphStore

    return Neo4jGraphStore.connect(settings)
