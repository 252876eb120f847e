"""Delta graph sync benchmark (issue 11 §4): attach 1,000 patients, sync only the delta.

1. A store of N synthetic patients (one ingest batch of a generated cohort table: survival,
   a few RNA features, one slide id each) and a trained version with K neighbours, a
   prediction (risk + survival curve) per patient and a 1,000-patient buffer, written
   through the storage API (no model is trained: this measures the graph sync).
2. Full sync into the embedded graph (and Neo4j with ``--neo4j``).
3. Ingest M more patients as a second batch; a derived version (parent: the trained one)
   with their K neighbours each, their predictions and the FIFO-refreshed buffer — what
   ``casegraph attach`` writes.
4. Delta sync: must write ~M patients, M*K edges, M predictions, the buffer and one node;
   reported with seconds and the ratio delta / full (goal: < 5 %).

Run: ``python -m benchmarks.graph_delta_sync [--n 100000] [--new 1000] [--k 12]
[--neo4j --wipe]``. ``--neo4j`` uses CASEGRAPH_NEO4J_URI and wipes that database: a
throwaway server only (``--wipe`` required).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import print_table, write_json
from casegraph.graph.base import GraphStore
from casegraph.graph.embedded import EmbeddedGraphStore
from casegraph.graph.sync import SyncReport, sync_graph
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table
from casegraph.ingest.versions import NewVersion, PredictionRows

BINS = (6.0, 12.0, 24.0, 48.0)
ROOT = "bench-root"
DERIVED = "bench-root-attach1"


def cohort_table(path: Path, ids: list[str], n_features: int, seed: int) -> Path:
    """An MCAT-style table: one slide per patient, survival, ``n_features`` RNA values."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "case_id": ids, "slide_id": [f"{i}-1.svs" for i in ids],
        "survival_months": rng.exponential(30, len(ids)).round(2),
        "censorship": rng.integers(0, 2, len(ids)),
    })
    genes = pd.DataFrame(rng.normal(size=(len(ids), n_features)).astype(np.float32),
                         columns=[f"G{j}_rnaseq" for j in range(n_features)])
    pd.concat([frame, genes], axis=1).to_csv(path, index=False)
    return path


def neighbour_rows(patients: list[str], pool: list[str], k: int, seed: int) -> pd.DataFrame:
    """k distinct neighbours (not itself) in ``pool`` for each of ``patients``."""
    rng = np.random.default_rng(seed)
    pool_arr = np.asarray(pool, dtype=object)
    position = {p: i for i, p in enumerate(pool)}
    start = np.array([position.get(p, -1) for p in patients])
    n, m = len(patients), len(pool)
    offsets = np.sort(rng.random((n, 3 * k)).argsort(axis=1)[:, :k] + 1, axis=1)
    scale = rng.integers(1, max(2, (m - 1) // (3 * k)), size=(n, 1))
    picks = (np.where(start < 0, 0, start)[:, None] + offsets * scale) % m
    weights = np.sort(rng.random((n, k)), axis=1)[:, ::-1]
    return pd.DataFrame({
        "patient_id": np.repeat(np.asarray(patients, dtype=object), k),
        "neighbour_id": pool_arr[picks.ravel()],
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
        "weight": weights.ravel().astype(np.float64),
    })


def predictions(ids: list[str], seed: int) -> PredictionRows:
    rng = np.random.default_rng(seed)
    survival = np.cumprod(rng.uniform(0.7, 1.0, size=(len(ids), len(BINS))), axis=1,
                          dtype=np.float64)
    return PredictionRows(list(ids), rng.normal(size=len(ids)), survival)


def build_root(store: Store, work: Path, args: argparse.Namespace) -> list[str]:
    ids = [f"B{i:06d}" for i in range(args.n)]
    table = cohort_table(work / "base.csv", ids, args.features, args.seed)
    ingest(store, IngestRequest(tables=[read_mcat_table(table, "bench")]))
    store.versions.create(NewVersion(
        model="bench", cohort="bench", config={"k": args.k}, version_id=ROOT,
        fitted_on=ids, predictions=predictions(ids, args.seed), bin_edges=BINS,
        neighbours=neighbour_rows(ids, ids, args.k, args.seed), buffer=ids[:args.buffer]))
    return ids


def attach(store: Store, work: Path, ids: list[str], args: argparse.Namespace) -> str:
    """Ingest ``--new`` patients as a second batch and write the derived version."""
    new = [f"N{i:06d}" for i in range(args.new)]
    table = cohort_table(work / "new.csv", new, args.features, args.seed + 1)
    report = ingest(store, IngestRequest(tables=[read_mcat_table(table, "bench")]))
    buffer = store.versions.buffer(ROOT)
    refreshed = (buffer + new)[-len(buffer):]  # FIFO: the oldest leave
    store.versions.create(NewVersion(
        model="bench", cohort="bench", config={"k": args.k}, version_id=DERIVED,
        parent_id=ROOT, batches=[str(report.batch_id)], predictions=predictions(new, 9),
        bin_edges=BINS, neighbours=neighbour_rows(new, ids + new, args.k, args.seed + 2),
        buffer=refreshed))
    return DERIVED


def row(backend: str, phase: str, report: SyncReport, full_s: float | None) -> list[Any]:
    ratio = "100%" if full_s is None else f"{report.seconds / full_s:.1%}"
    return [backend, phase, report.patients_written, report.slides_written,
            report.edges_written, report.predictions_written, report.buffer_written,
            report.created, f"{report.seconds:.2f}", ratio]


def as_json(report: SyncReport) -> dict[str, Any]:
    return {"patients_written": report.patients_written, "slides_written": report.slides_written,
            "edges_written": report.edges_written,
            "predictions_written": report.predictions_written,
            "buffer_written": report.buffer_written, "created": report.created,
            "batches": report.batches, "seconds": round(report.seconds, 3),
            "versions_written": report.versions_written}


def neo4j_graph(args: argparse.Namespace) -> GraphStore | None:
    if not args.neo4j:
        return None
    from casegraph.config import neo4j_settings
    from casegraph.graph.neo4j_store import Neo4jGraphStore

    settings = neo4j_settings()
    if settings is None:
        raise SystemExit("--neo4j needs CASEGRAPH_NEO4J_URI (and its password)")
    if not args.wipe:
        raise SystemExit("--neo4j wipes the database: pass --wipe (throwaway servers only)")
    graph = Neo4jGraphStore.connect(settings)
    graph.clear()
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="patients of the first batch")
    parser.add_argument("--new", type=int, default=1_000, help="patients attached")
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--buffer", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neo4j", action="store_true", help="also the Neo4j backend")
    parser.add_argument("--wipe", action="store_true", help="allow wiping the Neo4j database")
    args = parser.parse_args()

    graphs: list[tuple[str, Any]] = [("embedded", None)]
    remote = neo4j_graph(args)
    if remote is not None:
        graphs.append(("neo4j", remote))
    rows: list[list[Any]] = []
    result: dict[str, Any] = {"args": vars(args), "load_at_start": os.getloadavg(),
                              "backends": {}}
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "store") as store:
        ids = build_root(store, Path(tmp), args)
        backends = [(name, g or EmbeddedGraphStore(store)) for name, g in graphs]
        full = {name: sync_graph(store, g, batch_size=args.batch_size) for name, g in backends}
        attach(store, Path(tmp), ids, args)
        for name, graph in backends:
            delta = sync_graph(store, graph, batch_size=args.batch_size)
            again = sync_graph(store, graph, batch_size=args.batch_size)
            rows += [row(name, f"full sync ({args.n} patients)", full[name], None),
                     row(name, f"delta sync ({args.new} attached)", delta,
                         full[name].seconds),
                     row(name, "re-run (nothing new)", again, full[name].seconds)]
            result["backends"][name] = {
                "full": as_json(full[name]), "delta": as_json(delta), "rerun": as_json(again),
                "delta_over_full": round(delta.seconds / full[name].seconds, 4),
                "edge_ratio": round(delta.edges_written / max(1, full[name].edges_written), 4)}
    if remote is not None:
        remote.close()
    print_table(f"Graph sync by deltas: {args.n} patients, then {args.new} attached "
                f"(k = {args.k}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)",
                ["backend", "sync", "patients", "slides", "edges", "predictions", "buffer",
                 "created", "s", "of full"], rows)
    print(f"\nwrote {write_json('graph_delta_sync', result)}")


if __name__ == "__main__":
    main()
