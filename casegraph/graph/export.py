"""The case graph for notebooks and desktop tools: networkx, and GraphML (Gephi, Cytoscape).

``to_networkx(graph, version, patients, hops, k)`` walks a version's ``SIMILAR_TO`` edges
(lineage-aware, as :meth:`GraphStore.neighbours`) breadth-first from ``patients``, up to
``hops`` hops and ``k`` neighbours a node. Nodes carry cohort, time, event (0/1) and
modalities (comma separated); edges rank and weight; the graph's ``version`` attribute
names the version. GraphML needs scalar attributes, hence the flat values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from casegraph.errors import InputError

if TYPE_CHECKING:
    import networkx as nx

    from casegraph.graph.base import GraphStore

MAX_HOPS = 3


def to_networkx(graph: GraphStore, version_id: str, patients: Sequence[str], hops: int = 1,
                k: int = 10) -> nx.DiGraph:
    """The ``hops``-hop ``SIMILAR_TO`` neighbourhood of ``patients`` under ``version_id``."""
    import networkx as nx

    if not patients:
        raise InputError("no patients to start from", column="--patient",
                         fix="give at least one patient id")
    if not 1 <= hops <= MAX_HOPS:
        raise InputError(f"hops must be 1..{MAX_HOPS}, got {hops}", column="--hops")
    if version_id not in graph.synced_versions():
        raise InputError(f"version {version_id!r} is not in the case graph", column="--version",
                         fix="run `casegraph graph sync` first, or choose among: "
                             + ", ".join(sorted(graph.synced_versions())))
    out = nx.DiGraph(version=version_id)
    frontier = list(dict.fromkeys(patients))
    out.add_nodes_from(frontier, seed=1)
    for _ in range(hops):
        reached: list[str] = []
        for pid in frontier:
            for n in graph.neighbours(pid, version_id, k=k):
                if n.patient_id not in out:
                    reached.append(n.patient_id)
                out.add_node(n.patient_id, cohort=n.cohort, time=float(n.time),
                             event=int(n.event), modalities=",".join(n.modalities))
                out.add_edge(pid, n.patient_id, rank=int(n.rank), weight=float(n.weight))
        frontier = reached
    undescribed = [n for n, data in out.nodes(data=True) if "cohort" not in data]
    if undescribed:  # start patients no edge points to: one read of the graph's patients
        known = {p.patient_id: p for p in graph.dump().patients}
        for node in undescribed:
            record = known.get(node)
            if record is None:
                raise InputError(f"patient {node!r} is not in the case graph",
                                 column="--patient",
                                 fix="give an id listed by `casegraph info`, after graph sync")
            out.nodes[node].update(cohort=record.cohort, time=float(record.time),
                                   event=int(record.event),
                                   modalities=",".join(record.modalities))
    for _, data in out.nodes(data=True):
        data.setdefault("seed", 0)
    return out


def write_graphml(g: nx.DiGraph, path: str | Path) -> Path:
    """Write ``g`` as GraphML (UTF-8); the path."""
    import networkx as nx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nx.write_graphml(g, path)
    return path
