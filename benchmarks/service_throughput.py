"""Service throughput (issue 13 target 2): a real ``casegraph serve`` on loopback, 8 clients.

For each ``--workers`` count a fresh ``casegraph serve`` (uvicorn) is started over the
store and, per route, ``--clients`` threads (one httpx client each) send requests
back-to-back for ``--seconds``: ``GET /health`` (the HTTP stack's own ceiling on this
machine), ``GET /patients/{id}``, ``GET /patients/{id}/similar`` for stored patients of the
newest MSRL version (the stored path), and ``POST /query`` with one WSI-only bag upload of
``--patches`` x the version's patch dim (a new patient: the computed path). Patients rotate
over every stored patient with stored neighbour rows. Reported: req/s, p50, p99, errors.

Floors in the same run, in-process and single-threaded (no HTTP): the catalog record, the
stored answer (``QueryEngine.stored_answer``), the same neighbours straight from the store
(the embedded graph backend's one-SQL ``neighbours``, when the store has a synced graph),
the version's stored case graph read once, and the upload's query (``QueryEngine.query``)
and its bag read alone.

Run: ``python -m benchmarks.service_throughput --store DIR [--workers 1,2] [--seconds 10]``
(the store needs a trained MSRL version, e.g. ``casegraph demo --dim 1024``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from benchmarks.common import print_table, write_json

KEY = "bench-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_upload(folder: Path, n: int, dim: int, seed: int = 0) -> Path:
    """One CLAM-style bag of ``n`` x ``dim`` float32 patch features (a new patient)."""
    rng = np.random.default_rng(seed)
    path = folder / f"upload-{n}x{dim}.h5"
    with h5py.File(path, "w") as handle:
        handle["features"] = rng.normal(size=(n, dim)).astype(np.float32)
        handle["coords"] = rng.integers(0, 100_000, size=(n, 2))
    return path


def _stats(latencies: list[float], seconds: float, errors: int) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in latencies)
    return {"requests": len(ms), "errors": errors,
            "req_per_s": len(ms) / seconds if seconds else 0.0,
            "p50_ms": statistics.median(ms) if ms else None,
            "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else None}


def load(base: str, clients: int, seconds: float,
         send: Callable[[Any, int], Any]) -> dict[str, Any]:
    """``clients`` threads calling ``send(client, i)`` back-to-back for ``seconds``."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start_gate = threading.Barrier(clients + 1)
    deadline = [0.0]

    def run(slot: int) -> None:
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120) as client:
            send(client, slot)  # warm the connection (not counted)
            start_gate.wait()
            i = slot
            while time.perf_counter() < deadline[0]:
                t0 = time.perf_counter()
                response = send(client, i)
                if response.status_code == 200:
                    latencies[slot].append(time.perf_counter() - t0)
                else:
                    errors[slot] += 1
                i += clients

    threads = [threading.Thread(target=run, args=(s,)) for s in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + 3600
    start_gate.wait()
    began = time.perf_counter()
    deadline[0] = began + seconds
    for t in threads:
        t.join()
    return _stats([x for lat in latencies for x in lat], time.perf_counter() - began,
                  sum(errors))


def start_server(store: Path, workers: int, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CASEGRAPH_API_KEYS": KEY, "CASEGRAPH_RELOAD_SECONDS": "3600"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from casegraph.cli import main; main()", "serve", "--store",
         str(store), "--port", str(port), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                time.sleep(1.0 * workers)  # the other workers finish their warm-up
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"casegraph serve exited with {process.returncode}")
        time.sleep(0.5)
    stop_server(process)
    raise SystemExit("casegraph serve did not answer /health within 300 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def per_call(fn: Callable[[int], Any], seconds: float) -> dict[str, Any]:
    """In-process floor: ``fn(i)`` back-to-back on one thread for ``seconds``."""
    fn(0)
    latencies, i = [], 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        t0 = time.perf_counter()
        fn(i)
        latencies.append(time.perf_counter() - t0)
        i += 1
    return _stats(latencies, time.perf_counter() - began, 0)


def floors(store_dir: Path, patients: list[str], version: str, upload: Path,
           seconds: float) -> dict[str, dict[str, Any]]:
    from casegraph.graph.embedded import EmbeddedGraphStore
    from casegraph.ingest.bags import read_bag
    from casegraph.ingest.publish import open_published
    from casegraph.retrieval.query import QueryEngine, QueryOptions, StoredGraph

    out: dict[str, dict[str, Any]] = {}
    store, _ = open_published(store_dir)
    try:
        engine = QueryEngine(store)
        opts = QueryOptions(k=10, model_version=version)
        t0 = time.perf_counter()
        StoredGraph.read(store, version)
        out["stored case graph read once"] = {"seconds": time.perf_counter() - t0}
        out["catalog record"] = per_call(
            lambda i: engine.catalog.record(patients[i % len(patients)]), seconds)
        out["stored answer (similar)"] = per_call(
            lambda i: engine.stored_answer(patients[i % len(patients)], opts), seconds)
        graph = EmbeddedGraphStore(store)
        try:  # a read-only snapshot without a synced graph cannot create its tables
            synced = graph.stats().versions.get(version, 0) > 0
        except Exception:  # any failure means: no graph to time
            synced = False
        if synced:
            out["graph neighbours (one SQL)"] = per_call(
                lambda i: graph.neighbours(patients[i % len(patients)], version, 10), seconds)
        out["bag read (upload)"] = per_call(lambda i: read_bag(upload), seconds)
        out["query (upload, in-process)"] = per_call(
            lambda i: engine.query([upload], None, QueryOptions(k=10)), seconds)
    finally:
        store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--patches", type=int, default=10_000)
    parser.add_argument("--json", default="service_throughput")
    parser.add_argument("--routes", default="",
                        help="only routes whose name contains this text, e.g. 'POST /query'")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from casegraph.ingest.publish import open_published
    from casegraph.retrieval import msrl_adapter

    store, _ = open_published(args.store)
    with store:
        version, reason = msrl_adapter.choose_version(store, "msrl", None)
        assert version is not None, reason
        rows = store.versions.neighbours(version)
        patients = sorted(set(rows["patient_id"].astype(str)))
        dim = int(store.versions.get(version).config["inputs"]["bag_dim"])
    folder = Path(tempfile.mkdtemp(prefix="casegraph-bench-"))
    upload = write_upload(folder, args.patches, dim)
    body = upload.read_bytes()
    print(f"store {args.store}: version {version}, {len(patients)} stored patients; upload "
          f"{args.patches} x {dim} ({len(body) / 1e6:.1f} MB)")

    routes: dict[str, Callable[[Any, int], Any]] = {
        "GET /health": lambda c, i: c.get("/health"),
        "GET /patients/{id}": lambda c, i: c.get(f"/patients/{patients[i % len(patients)]}"),
        "GET /patients/{id}/similar": lambda c, i: c.get(
            f"/patients/{patients[i % len(patients)]}/similar", params={"k": 10}),
        f"POST /query ({args.patches} x {dim})": lambda c, i: c.post(
            "/query", files={"files": ("upload.h5", body, "application/octet-stream")},
            data={"k": "10"}),
    }
    routes = {name: send for name, send in routes.items() if args.routes in name}
    served: dict[str, dict[str, Any]] = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        port = _free_port()
        process = start_server(args.store, workers, port)
        try:
            for name, send in routes.items():
                served[f"{name} [workers={workers}]"] = load(
                    f"http://127.0.0.1:{port}", args.clients, args.seconds, send)
        finally:
            stop_server(process)
    floor = floors(args.store, patients, version, upload, min(args.seconds, 5.0))

    def fmt(x: Any, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    print_table(f"{args.clients} clients, {args.seconds:.0f} s per route", [
        "route", "req/s", "p50 ms", "p99 ms", "errors"],
        [[k, fmt(v["req_per_s"], ".1f"), fmt(v["p50_ms"], ".2f"), fmt(v["p99_ms"], ".2f"),
          v["errors"]] for k, v in served.items()])
    print_table("floors: the same reads in-process, one thread", [
        "read", "per s", "p50 ms", "p99 ms"],
        [[k, fmt(v.get("req_per_s"), ".1f"), fmt(v.get("p50_ms", None if "seconds" not in v
                                                         else v["seconds"] * 1000), ".2f"),
          fmt(v.get("p99_ms"), ".2f")] for k, v in floor.items()])
    path = write_json(args.json, {"store": str(args.store), "version": version,
                                  "patients": len(patients), "clients": args.clients,
                                  "seconds": args.seconds, "upload": [args.patches, dim],
                                  "served": served, "floors": floor,
                                  "load": os.getloadavg()})
    upload.unlink()
    folder.rmdir()
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
