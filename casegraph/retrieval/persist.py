"""Write a query case and its neighbour edges into the case graph (casegraph.graph).

The case becomes ``(:QueryCase {case_id})-[:SIMILAR_TO {rank, weight}]->(:Patient)`` under
the answering model version (``slide-mean`` for the fallback), through the configured
GraphStore (Neo4j when ``CASEGRAPH_NEO4J_URI`` is set, else the embedded tables). Edges
to patients not yet synced into the graph are skipped by the graph layer.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from casegraph.ingest.store import Store
from casegraph.retrieval.index import SLIDE_MEAN
from casegraph.retrieval.results import QueryResult


def query_case_id(result: QueryResult) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    base = result.query_patient_id or "new"
    return f"query-{base}-{stamp}-{uuid.uuid4().hex[:6]}"


def persist_query(store: Store, result: QueryResult) -> tuple[bool, str]:
    """(written?, a note for the result)."""
    if store.read_only:
        return False, "not persisted: the store is open read-only"
    from casegraph.graph import open_graph_store
    from casegraph.graph.records import SimilarEdge

    case_id = query_case_id(result)
    edges = [SimilarEdge(case_id, n.patient_id, n.rank, n.weight) for n in result.neighbours]
    properties = {"method": result.method, "risk": result.risk, "n_patches": result.n_patches,
                  "files": ",".join(result.query_files),
                  "query_patient_id": result.query_patient_id or ""}
    with open_graph_store(store) as graph:
        graph.persist_query_case(case_id, result.model_version or SLIDE_MEAN, edges,
                                 properties)
    return True, (f"query case {case_id} and its {len(edges)} edges written to the case "
                  "graph (edges to patients not synced into the graph are skipped)")
