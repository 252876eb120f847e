"""Graph sync benchmark (issue 6), against the local Neo4j (CASEGRAPH_NEO4J_URI).

1. Sync a synthetic 100,000-patient graph with 12 SIMILAR_TO edges each: batched UNWIND +
   MERGE in managed transactions (the path `casegraph graph sync` uses), edges/s.
2. One transaction per edge, the naive path: measured on a sample of edges and
   extrapolated to the whole graph (a full run would take an hour); ratio vs 1 in the same
   run, and both vs the ~70,000 items/s published for batched UNWIND+MERGE.
3. Latency (p50/p95) of every docs/cypher.md cookbook query on that graph.

With ``--writes`` (issue 13 §3) instead: the write ceiling. A store of ``--n`` patients
with a trained version (``--k`` neighbours each, predictions, a buffer), its patients synced;
then, against the same server in the same run, each fastest-known driver-level edge write
(fixed Cypher, no casegraph code: CREATE of known-new edges, flat rows or grouped by
source as lists, at two batch sizes), the old flat UNWIND + MERGE, and casegraph's own
``graph sync`` of the version (edge phase and whole version); each version pruned before the
next. Then ``graph import`` (neo4j-admin's bulk importer) of a ``--import-n``-patient store
into a fresh home, edges/s with and without writing the CSV.

The database is wiped first: run it only against a throwaway server (``--wipe`` required).
Run: ``python -m benchmarks.graph_sync --wipe [--patients 100000] [--k 12]`` or
``python -m benchmarks.graph_sync --wipe --writes [--n 20000] [--import-n 100000]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import print_table, write_json
from casegraph.config import neo4j_settings
from casegraph.graph import source
from casegraph.graph.cypher import cookbook_queries, run_cypher
from casegraph.graph.neo4j_store import (
    CREATE_SIMILAR,
    Neo4jGraphStore,
    edges_by_source,
    similar_lists,
)
from casegraph.graph.records import BufferEntry, ModelVersionRecord, PatientRecord, SimilarEdge
from casegraph.graph.sync import batched, batched_by_source, sync_graph
from casegraph.ingest.store import Store

PUBLISHED_ITEMS_PER_S = 70_000
COOKBOOK = Path(__file__).resolve().parents[1] / "docs" / "cypher.md"
COHORTS = ["blca", "brca", "luad", "ucec"]


def synthetic_graph(n: int, k: int, seed: int) -> tuple[list[PatientRecord], list[SimilarEdge]]:
    """n patients over 4 cohorts; each has k distinct random neighbours (not itself)."""
    rng = np.random.default_rng(seed)
    ids = [f"B{i:06d}" for i in range(n)]
    times = rng.exponential(30.0, n)
    events = rng.random(n) < 0.4
    patients = [PatientRecord(ids[i], COHORTS[i % 4], float(times[i]), bool(events[i]),
                              ("rna", "wsi"), (f"bench/0/{'train' if i % 5 else 'val'}",))
                for i in range(n)]
    offsets = np.sort(rng.random((n, 3 * k)).argsort(axis=1)[:, :k] + 1, axis=1)  # distinct
    scale = rng.integers(1, max(2, (n - 1) // (3 * k)), size=(n, 1))
    neighbours = (np.arange(n)[:, None] + offsets * scale) % n
    weights = np.sort(rng.random((n, k)), axis=1)[:, ::-1]
    edges = [SimilarEdge(ids[i], ids[int(neighbours[i, r])], r + 1, float(weights[i, r]))
             for i in range(n) for r in range(k)]
    return patients, edges


def timed_batches(write: Any, items: list[Any], batch_size: int) -> float:
    start = time.perf_counter()
    for chunk in batched(items, batch_size):
        write(chunk)
    return time.perf_counter() - start


def version(version_id: str) -> ModelVersionRecord:
    return ModelVersionRecord(version_id, "bench", None, "2026-01-01T00:00:00", "{}", "{}")


def sync_benchmark(graph: Neo4jGraphStore, args: argparse.Namespace) -> dict[str, Any]:
    patients, edges = synthetic_graph(args.patients, args.k, args.seed)
    graph.clear()
    graph.ensure_schema()
    t_patients = timed_batches(graph.write_patients, patients, args.batch_size)
    graph.write_model_version(version("bench-v1"))
    graph.write_buffer("bench-v1", [BufferEntry(p.patient_id, i)
                                    for i, p in enumerate(patients[:args.buffer])])
    print(f"patients: {t_patients:.1f} s", flush=True)
    t_edges = timed_batches(lambda c: graph.write_similar("bench-v1", c), edges, args.batch_size)
    print(f"batched edges: {len(edges) / t_edges:.0f}/s", flush=True)
    t_rerun = timed_batches(lambda c: graph.write_similar("bench-v1", c),
                            edges[:args.rerun_sample], args.batch_size)

    sample = edges[:: max(1, len(edges) // args.per_edge_sample)][: args.per_edge_sample]
    graph.write_model_version(version("bench-per-edge"))
    start = time.perf_counter()
    graph.write_similar_one_by_one("bench-per-edge", sample)
    t_one = time.perf_counter() - start
    print(f"one tx per edge: {len(sample) / t_one:.1f}/s", flush=True)
    graph.prune_version("bench-per-edge")

    # a second version on a tenth of the patients, for the version-diff query
    share = edges[: len(edges) // 10]
    graph.write_model_version(version("bench-v2"))
    timed_batches(lambda c: graph.write_similar("bench-v2", c[::-1]), share, args.batch_size)
    batched_rate = len(edges) / t_edges
    per_edge_rate = len(sample) / t_one
    return {
        "patients": len(patients), "edges": len(edges), "batch_size": args.batch_size,
        "patients_s": round(t_patients, 2), "patients_per_s": round(len(patients) / t_patients),
        "batched_edges_s": round(t_edges, 2), "batched_edges_per_s": round(batched_rate),
        "rerun_edges_per_s": round(args.rerun_sample / t_rerun),
        "per_edge_sample": len(sample), "per_edge_sample_s": round(t_one, 2),
        "per_edge_edges_per_s": round(per_edge_rate, 1),
        "per_edge_extrapolated_s": round(len(edges) / per_edge_rate),
        "batched_over_per_edge": round(batched_rate / per_edge_rate, 1),
        "batched_vs_published_70k": round(batched_rate / PUBLISHED_ITEMS_PER_S, 3),
    }


def query_params(name: str, rng: np.random.Generator, n: int) -> dict[str, Any]:
    patient = f"B{int(rng.integers(n)):06d}"
    params: dict[str, dict[str, Any]] = {
        "neighbours": {"patient": patient, "version": "bench-v1", "k": 10},
        "neighbourhood-survival": {"patient": patient, "version": "bench-v1"},
        "cross-cohort": {"version": "bench-v1"},
        "shared-neighbours": {"version": "bench-v1", "min_shared": 3, "limit": 50},
        "buffer-anchors": {"version": "bench-v1", "limit": 20},
        "version-diff": {"old": "bench-v1", "new": "bench-v2", "limit": 50},
        # this graph has no predictions or derived versions: these time the empty case
        "lineage-neighbours": {"patient": patient, "version": "bench-v1", "k": 10},
        "risk-change": {"old": "bench-v1", "new": "bench-v2", "limit": 50},
        "attach-added": {"version": "bench-v2"},
        "lineage": {"version": "bench-v1"},
    }
    return params[name]


def latency_benchmark(graph: Neo4jGraphStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(args.seed + 1)
    out = []
    for name, query in cookbook_queries(COOKBOOK.read_text(encoding="utf-8")).items():
        local = name in ("neighbours", "neighbourhood-survival")
        repeat = args.repeat if local else args.global_repeat
        run_cypher(graph.driver, query, query_params(name, rng, args.patients))  # warm-up
        times = []
        for _ in range(repeat):
            params = query_params(name, rng, args.patients)
            start = time.perf_counter()
            rows = run_cypher(graph.driver, query, params).rows
            times.append(time.perf_counter() - start)
        print(f"{name}: p50 {np.percentile(times, 50) * 1000:.1f} ms", flush=True)
        out.append({"query": name, "runs": repeat, "rows": len(rows),
                    "p50_ms": round(float(np.percentile(times, 50)) * 1000, 1),
                    "p95_ms": round(float(np.percentile(times, 95)) * 1000, 1)})
    return out


FLOOR_FLAT_CREATE = """
UNWIND $rows AS row
MATCH (a:Patient {id: row.a}) MATCH (b:Patient {id: row.b})
CREATE (a)-[:SIMILAR_TO {model_version: $version, rank: row.r, weight: row.w}]->(b)
"""
OLD_FLAT_MERGE = """
UNWIND $rows AS row
MATCH (a:Patient {id: row.a}) MATCH (b:Patient {id: row.b})
MERGE (a)-[r:SIMILAR_TO {model_version: $version}]->(b)
SET r.weight = row.w, r.rank = row.r
"""


def _flat_rows(edges: Sequence[SimilarEdge]) -> dict[str, Any]:
    return {"rows": [{"a": e.patient_id, "b": e.neighbour_id, "r": e.rank, "w": e.weight}
                     for e in edges]}


def _grouped_lists(edges: Sequence[SimilarEdge]) -> dict[str, Any]:
    groups = edges_by_source(edges)
    return similar_lists(groups, list(groups))


def _driver_write(graph: Neo4jGraphStore, version_id: str, edges: list[SimilarEdge],
                  query: str, shape: Any, batch_size: int) -> float:
    """Plain driver writes: one managed transaction per batch; seconds."""
    start = time.perf_counter()
    def work(tx: Any, params: dict[str, Any]) -> None:
        tx.run(query, version=version_id, **params).consume()

    with graph.driver.session(database=graph.database) as session:
        for chunk in batched_by_source(edges, batch_size):
            session.execute_write(work, shape(chunk))
    return time.perf_counter() - start


def write_ceiling(graph: Neo4jGraphStore, args: argparse.Namespace) -> dict[str, Any]:
    """Every driver-level floor, the old MERGE path and casegraph's sync on one store."""
    from benchmarks.graph_delta_sync import ROOT, build_root

    out: dict[str, Any] = {"n": args.n, "k": args.k, "load_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "store") as store:
        build_root(store, Path(tmp), _delta_args(args, args.n))
        graph.clear()
        sync_graph(store, graph, versions=[], batch_size=args.batch_size)  # patients, slides
        edges = source.similar_edges(store, ROOT)
        runs: list[tuple[str, Any]] = [
            ("floor: flat rows, CREATE, batch 10000", lambda v: _driver_write(
                graph, v, edges, FLOOR_FLAT_CREATE, _flat_rows, 10_000)),
            ("floor: grouped lists, CREATE, batch 5000", lambda v: _driver_write(
                graph, v, edges, CREATE_SIMILAR, _grouped_lists, 5_000)),
            ("floor: grouped lists, CREATE, batch 20000", lambda v: _driver_write(
                graph, v, edges, CREATE_SIMILAR, _grouped_lists, 20_000)),
            ("before: flat rows, MERGE, batch 10000 (old write_similar)", lambda v: _driver_write(
                graph, v, edges, OLD_FLAT_MERGE, _flat_rows, 10_000)),
        ]
        rows = []
        for i, (name, run) in enumerate(runs):
            seconds = run(f"floor-{i}")
            rows.append({"path": name, "edges": len(edges), "seconds": round(seconds, 2),
                         "edges_per_s": round(len(edges) / seconds)})
            print(f"{name}: {len(edges) / seconds:.0f} edges/s", flush=True)
            graph.prune_version(f"floor-{i}")
        rows += _ours(graph, store, edges, args)
        graph.clear()
    floor = max(r["edges_per_s"] for r in rows if r["path"].startswith("floor"))
    for r in rows:
        r["of_floor"] = round(r["edges_per_s"] / floor, 3)
    out.update(rows=rows, floor_edges_per_s=floor, load_at_end=os.getloadavg())
    return out


def _ours(graph: Neo4jGraphStore, store: Store, edges: list[SimilarEdge],
          args: argparse.Namespace) -> list[dict[str, Any]]:
    """casegraph's path: the sync's edge loop alone, then a whole `graph sync` of the version."""
    from benchmarks.graph_delta_sync import ROOT

    start = time.perf_counter()
    for chunk in batched_by_source(source.similar_edges(store, ROOT), args.batch_size):
        graph.write_similar("ours-edges", chunk)
    edge_s = time.perf_counter() - start
    print(f"ours, edge loop: {len(edges) / edge_s:.0f} edges/s", flush=True)
    graph.prune_version("ours-edges")
    report = sync_graph(store, graph, batch_size=args.batch_size)
    print(f"ours, graph sync: {report.edges_written / report.seconds:.0f} edges/s", flush=True)
    return [
        {"path": f"ours: sync edge loop (write_similar), batch {args.batch_size}",
         "edges": len(edges), "seconds": round(edge_s, 2),
         "edges_per_s": round(len(edges) / edge_s)},
        {"path": f"ours: whole `graph sync` of the version (+{report.predictions_written} "
                 f"predictions, {report.buffer_written} buffer links, marks)",
         "edges": report.edges_written, "seconds": round(report.seconds, 2),
         "edges_per_s": round(report.edges_written / report.seconds)},
    ]


def _delta_args(args: argparse.Namespace, n: int) -> argparse.Namespace:
    return argparse.Namespace(n=n, k=args.k, features=20, buffer=args.buffer, seed=args.seed)


def import_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """`graph import` of an ``--import-n``-patient store into a fresh Neo4j home."""
    from benchmarks.graph_delta_sync import build_root
    from casegraph.graph.bulk_import import bulk_import

    launcher = ["bash", str(Path(__file__).resolve().parents[1] / "deploy/neo4j/import.sh")]
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "store") as store:
        build_root(store, Path(tmp), _delta_args(args, args.import_n))
        load = os.getloadavg()
        report = bulk_import(store, Path(tmp) / "home", launcher)
    result = {"patients": args.import_n, "nodes": report.nodes,
              "relationships": report.relationships, "edges": report.edges,
              "csv_s": round(report.csv_seconds, 2), "importer_s": round(report.import_seconds, 2),
              "edges_per_s": round(report.edges / report.seconds),
              "relationships_per_s": round(report.relationships / report.seconds),
              "edges_per_s_importer_only": round(report.edges / report.import_seconds),
              "importer_reported_s": report.importer_own_seconds,
              "load_at_start": load, "load_at_end": os.getloadavg()}
    print(f"import: {result}", flush=True)
    return result


def writes_main(args: argparse.Namespace, graph: Neo4jGraphStore) -> None:
    if args.import_only:
        print(f"\nwrote {write_json('graph_import', {'import': import_benchmark(args)})}")
        return
    ceiling = write_ceiling(graph, args)
    imported = import_benchmark(args)
    print_table(f"edge writes into Neo4j, {args.n} patients x {args.k} (same server, one run; "
                f"load {ceiling['load_at_start'][0]:.1f} -> {ceiling['load_at_end'][0]:.1f})",
                ["path", "edges", "seconds", "edges/s", "of floor"],
                [[r["path"], r["edges"], r["seconds"], r["edges_per_s"], r["of_floor"]]
                 for r in ceiling["rows"]])
    print_table(f"graph import (neo4j-admin database import full), {args.import_n} patients",
                ["edges", "relationships", "CSV s", "importer s", "its own report s",
                 "edges/s", "importer only"],
                [[imported["edges"], imported["relationships"], imported["csv_s"],
                  imported["importer_s"], imported["importer_reported_s"],
                  imported["edges_per_s"], imported["edges_per_s_importer_only"]]])
    print(f"\nwrote {write_json('graph_writes', {'ceiling': ceiling, 'import': imported})}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--buffer", type=int, default=1_000)
    parser.add_argument("--per-edge-sample", type=int, default=2_000)
    parser.add_argument("--rerun-sample", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50, help="runs of the per-patient queries")
    parser.add_argument("--global-repeat", type=int, default=5, help="runs of whole-graph queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wipe", action="store_true", help="allow wiping the database")
    parser.add_argument("--writes", action="store_true", help="the write ceiling (issue 13)")
    parser.add_argument("--n", type=int, default=20_000, help="--writes: patients")
    parser.add_argument("--import-n", type=int, default=100_000, help="--writes: imported")
    parser.add_argument("--import-only", action="store_true", help="--writes: the import only")
    args = parser.parse_args()
    settings = neo4j_settings()
    if settings is None or not args.wipe:
        raise SystemExit("needs CASEGRAPH_NEO4J_URI (a throwaway server) and --wipe")
    if args.writes:
        store_graph = Neo4jGraphStore.connect(settings)
        with store_graph:
            writes_main(args, store_graph)
        return
    with Neo4jGraphStore.connect(settings) as graph:
        assert isinstance(graph, Neo4jGraphStore)
        sync = sync_benchmark(graph, args)
        latency = latency_benchmark(graph, args)
        graph.clear()
    print_table("graph sync into Neo4j (edges/s)", ["path", "edges", "seconds", "edges/s"], [
        ["batched UNWIND+MERGE", sync["edges"], sync["batched_edges_s"],
         sync["batched_edges_per_s"]],
        ["batched re-run (all MERGEs match)", args.rerun_sample, "",
         sync["rerun_edges_per_s"]],
        [f"one tx per edge (sample {sync['per_edge_sample']})", sync["per_edge_sample"],
         sync["per_edge_sample_s"], sync["per_edge_edges_per_s"]],
        ["one tx per edge, extrapolated", sync["edges"], sync["per_edge_extrapolated_s"],
         sync["per_edge_edges_per_s"]],
    ])
    print(f"batched / per-edge: {sync['batched_over_per_edge']}x; batched / published 70k "
          f"items/s: {sync['batched_vs_published_70k']}; patients {sync['patients_per_s']}/s")
    print_table("cookbook query latency", ["query", "runs", "rows", "p50 ms", "p95 ms"],
                [[q["query"], q["runs"], q["rows"], q["p50_ms"], q["p95_ms"]] for q in latency])
    path = write_json("graph_sync", {"sync": sync, "latency": latency,
                                     "neo4j": "5.26.0 Community embedded, heap 512m, "
                                              "page cache 256m"})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
