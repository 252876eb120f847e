"""Write a query case and its neighbour edges into the case graph (casegraph.graph).

Uses the graph layer's API when it offers one; otherwise says why nothing was written.
"""

from __future__ import annotations

from typing import Any

from casegraph.ingest.store import Store
from casegraph.retrieval.results import QueryResult


def persist_query(store: Store, result: QueryResult) -> tuple[bool, str]:
    """(written?, a note for the result)."""
    try:
        from casegraph import graph
    except ImportError:  # pragma: no cover
        return False, "not persisted: the graph layer is not installed"
    writer: Any = getattr(graph, "persist_query_case", None)
    if writer is None:
        return False, "not persisted: the graph layer offers no query-case writer yet"
    if store.read_only:
        return False, "not persisted: the store is open read-only"
    writer(store, result.model_dump())
    return True, "query case and its edges written to the case graph"
