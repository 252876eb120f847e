"""Bag registration benchmark (issue 13 target 4, issue 15 §1).

Registration = read the file once, hash it (xxh3_128; sha256 as stores before it did),
validate, mean embedding, k-means centres (k=6 on <= 2,048 sampled patches), coords and
provenance, i.e. :func:`casegraph.ingest.summaries.register_bag` on every slide, run by
an executor (:mod:`casegraph.ingest.executors`). Compared in the same run with plain
h5py reading of ``features`` and ``coords`` of the same files (the floor), in two cache
states:

- cold: every file evicted from the page cache (``posix_fadvise(DONTNEED)`` after
  ``sync``) before each pass, so every method reads from the disk;
- warm: every file already in the page cache (only the slides that fit in half of the
  available memory take part).

First a profile of one slide's phases (median CPU and wall ms over ``--profile-slides``
warm slides), then the throughput table. ``--dask`` adds a real Dask LocalCluster of 1
and 2 worker processes (one thread each) on 127.0.0.1 (cluster start not timed).

Goal: registration throughput >= 0.5 x plain-read throughput, cold and warm.

Run: ``python -m benchmarks.bags [--n-slides 30 --patches 10000 --dim 1024 --dask]``
(30 x 10,000 x 1024 float32 = 1.2 GB of files, written under --dir and deleted after).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, print_table, write_json
from casegraph.ingest.bags import parse_bag
from casegraph.ingest.executors import DaskExecutor, Executor, LocalExecutor, SlideTask
from casegraph.ingest.simulate import BagSettings, simulate_bags
from casegraph.ingest.summaries import (
    DEFAULT_MAX_POINTS,
    available_cores,
    kmeans,
    register_bag,
    summarize_features,
)


def write_slides(folder: Path, n_slides: int, patches: int, dim: int) -> list[Path]:
    rng = np.random.default_rng(0)
    ids = [f"BENCH-{i:04d}" for i in range(n_slides)]
    settings = BagSettings(n_patches=patches, dim=dim, signal=0.5, seed=0)
    result = simulate_bags(rng.standard_normal((n_slides, 32)), ids, [[i] for i in ids], folder,
                           settings=settings)
    return [result.paths[i] for i in ids]


def evict(paths: list[Path]) -> None:
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


def plain_read(paths: list[Path]) -> None:
    import h5py

    for path in paths:
        with h5py.File(path, "r") as handle:
            handle["features"][()]
            handle["coords"][()]


def raw_read(threads: int) -> Callable[[list[Path]], None]:
    """The bytes alone (np.fromfile), ``threads`` files at a time: the I/O ceiling."""
    def run(paths: list[Path]) -> None:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(lambda p: np.fromfile(p, np.uint8).size, paths):
                pass

    return run


def registration(executor: Executor, algorithm: str = "xxh3_128") -> Callable[[list[Path]], None]:
    def run(paths: list[Path]) -> None:
        tasks = [SlideTask(p.stem, str(p), 6, 0, (algorithm,)) for p in paths]
        for _ in executor.register(tasks):
            pass

    return run


def fits_in_memory(paths: list[Path]) -> list[Path]:
    """The longest prefix of ``paths`` whose total size is <= half of MemAvailable."""
    available = 0
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    budget, chosen = available // 2, []
    for path in paths:
        budget -= path.stat().st_size
        if budget < 0:
            break
        chosen.append(path)
    return chosen


def measure(paths: list[Path], fn: Callable[[list[Path]], None], cache: str) -> float:
    (evict if cache == "cold" else warm)(paths)
    start = time.perf_counter()
    fn(paths)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- profile
def _timed(fn: Callable[..., Any], *args: Any) -> tuple[float, float, Any]:
    cpu, wall = time.thread_time(), time.perf_counter()
    out = fn(*args)
    return time.thread_time() - cpu, time.perf_counter() - wall, out


def _sample(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = features.shape[0]
    return features[np.sort(rng.choice(n, size=min(DEFAULT_MAX_POINTS, n), replace=False))]


def _sha256(buffer: np.ndarray) -> str:
    return hashlib.sha256(buffer.data).hexdigest()


def _xxh3(buffer: np.ndarray) -> str:
    import xxhash

    return str(xxhash.xxh3_128(buffer.data).hexdigest())


def _mean(features: np.ndarray) -> np.ndarray:
    return features.mean(axis=0, dtype=np.float32)


def profile(paths: list[Path]) -> dict[str, dict[str, float]]:
    """Median CPU / wall ms of each phase of one slide's registration (warm, one thread)."""
    from threadpoolctl import threadpool_limits

    phases: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        cpu, wall, out = _timed(fn, *args)
        phases.setdefault(name, []).append((cpu, wall))
        return out

    warm(paths)
    with threadpool_limits(1, "blas"):
        for path in paths:
            add("plain h5py read (floor)", plain_read, [path])
            buffer = add("read into one buffer", np.fromfile, path, np.uint8)
            add("sha256 (old hash)", _sha256, buffer)
            add("xxh3_128 (new hash)", _xxh3, buffer)
            bag = add("parse + validate (column sums)", parse_bag, buffer, path)
            add("mean (old: a second pass)", _mean, bag.features)
            rng = np.random.default_rng(0)
            sample = add("sample 2,048 patches", _sample, bag.features, rng)
            add("k-means k=6 (Lloyd, k-means++)", kmeans, sample, 6, rng)
            add("summaries (mean pass + sample + k-means)", summarize_features,
                bag.features, 6, 0)
            add("register_bag (all of it; hash overlapped with the read)", register_bag, path)
    return {name: {"cpu_ms": 1000 * float(np.median([c for c, _ in v])),
                   "wall_ms": 1000 * float(np.median([w for _, w in v]))}
            for name, v in phases.items()}


def _same_as_local(paths: list[Path], executor: Executor) -> bool:
    tasks = [SlideTask(p.stem, str(p), 6, 0, ("xxh3_128",)) for p in paths]
    local = list(LocalExecutor(1).register(tasks))
    other = list(executor.register(tasks))
    return all(a.mean.tobytes() == b.mean.tobytes() and a.centres.tobytes() == b.centres.tobytes()
               and a.content_hash == b.content_hash for a, b in zip(local, other, strict=True))


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-slides", type=int, default=30)
    parser.add_argument("--patches", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--profile-slides", type=int, default=5)
    parser.add_argument("--dask", action="store_true", help="also a LocalCluster of 1, 2 workers")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the slides")
    parser.add_argument("--keep", action="store_true", help="keep the slide files")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="casegraph-bags-", dir=args.dir))
    clusters: list[Any] = []
    try:
        start = time.perf_counter()
        paths = write_slides(folder, args.n_slides, args.patches, args.dim)
        t_write = time.perf_counter() - start
        total_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"wrote {len(paths)} slides ({args.patches} x {args.dim} float32, "
              f"{total_mb:.0f} MB) in {t_write:.1f} s")
        load_before = os.getloadavg()
        phases = profile(paths[: args.profile_slides])
        print_table(f"One slide's registration by phase (median of {args.profile_slides} warm "
                    "slides, one thread, BLAS 1 thread)", ["phase", "CPU ms", "wall ms"],
                    [[n, f"{v['cpu_ms']:.1f}", f"{v['wall_ms']:.1f}"] for n, v in phases.items()])
        cores = available_cores()
        methods: dict[str, Callable[[list[Path]], None]] = {
            "plain h5py read": plain_read,
            f"raw read, {cores} threads": raw_read(cores),
            "register, 1 thread": registration(LocalExecutor(1)),
            f"register, {cores} threads, sha256 (before)": registration(LocalExecutor(cores), "sha256"),
            f"register, {cores} threads (default)": registration(LocalExecutor()),
        }
        identical: dict[str, bool] = {}
        if args.dask:
            from distributed import LocalCluster

            for workers in (1, 2):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
                clusters.append(cluster)
                executor = DaskExecutor(cluster.scheduler_address)
                name = f"register, Dask {workers} worker(s) x 1 thread"
                methods[name] = registration(executor)
                identical[name] = _same_as_local(paths[:3], executor)
        results: dict[str, dict[str, float]] = {}
        rows = []
        for cache in ("cold", "warm"):
            subset = paths if cache == "cold" else fits_in_memory(paths)
            mb = sum(p.stat().st_size for p in subset) / 1e6
            times = {name: measure(subset, fn, cache) for name, fn in methods.items()}
            floor = times["plain h5py read"]
            for name, seconds in times.items():
                results[f"{cache}/{name}"] = {
                    "slides": len(subset), "seconds": seconds,
                    "slides_per_s": len(subset) / seconds, "mb_per_s": mb / seconds,
                    "throughput_vs_plain_read": floor / seconds}
                rows.append([cache, len(subset), name, f"{seconds:.2f}",
                             f"{len(subset) / seconds:.1f}", f"{mb / seconds:.0f}",
                             f"{floor / seconds:.2f}"])
        load_after = os.getloadavg()
        print_table(f"Bag registration, {len(paths)} slides of {args.patches} x {args.dim} "
                    "float32 (k-means k=6 on <= 2048 patches)",
                    ["cache", "slides", "method", "s", "slides/s", "MB/s",
                     "throughput / plain read"], rows)
        if identical:
            print(f"Dask summaries byte-identical to the local pool: {identical}")
        print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f} "
              f"on {os.cpu_count()} CPUs ({cores} usable)")
        path = write_json("bags", {
            "machine": machine(), "n_slides": len(paths), "patches": args.patches,
            "dim": args.dim, "total_mb": total_mb, "simulate_seconds": t_write,
            "profile_ms": phases, "results": results, "dask_identical_to_local": identical,
            "load_average_1min": {"before": load_before[0], "after": load_after[0]},
            "goal": "registration throughput >= 0.5 x plain h5py read throughput"})
        print(f"\nwrote {path}")
    finally:
        for cluster in clusters:
            cluster.close()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
