"""Bag registration benchmark (issue 2).

Registration = read the file once, sha256 it, validate, mean embedding and k-means
centres (k=6), i.e. :func:`casegraph.ingest.summaries.register_bags`. Compared in the
same run with plain h5py reading of ``features`` and ``coords`` of the same files (the
physical floor), each in two cache states:

- cold: every file evicted from the page cache (``posix_fadvise(DONTNEED)`` after
  ``sync``) before the pass, so both read from the disk;
- warm: every file already in the page cache. Only the first slides that fit in half of
  the available memory take part (more would be evicted while reading them).

Goal: registration throughput >= 0.5 x plain-read throughput.

Run: ``python -m benchmarks.bags [--n-slides 200 --patches 10000 --dim 1024 --dir /tmp/x]``
(200 x 10,000 x 1024 float32 = 8 GB of files, written under --dir and deleted after).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import print_table, write_json
from casegraph.ingest.simulate import BagSettings, simulate_bags
from casegraph.ingest.summaries import register_bags


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


def registration(threads: int) -> Callable[[list[Path]], None]:
    def run(paths: list[Path]) -> None:
        for _ in register_bags(paths, k=6, seed=0, threads=threads):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-slides", type=int, default=200)
    parser.add_argument("--patches", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the slides")
    parser.add_argument("--keep", action="store_true", help="keep the slide files")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="casegraph-bags-", dir=args.dir))
    try:
        start = time.perf_counter()
        paths = write_slides(folder, args.n_slides, args.patches, args.dim)
        t_write = time.perf_counter() - start
        total_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"wrote {len(paths)} slides ({args.patches} x {args.dim} float32, "
              f"{total_mb:.0f} MB) in {t_write:.1f} s ({len(paths) / t_write:.1f} slides/s)")
        methods = {"plain h5py read": plain_read, "register, 1 thread": registration(1),
                   "register, 2 threads": registration(2)}
        results: dict[str, dict[str, float]] = {}
        rows = []
        load_before = os.getloadavg()
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
        print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f} "
              f"on {os.cpu_count()} CPUs")
        path = write_json("bags", {
            "n_slides": len(paths), "patches": args.patches, "dim": args.dim,
            "total_mb": total_mb, "simulate_seconds": t_write, "results": results,
            "load_average_1min": {"before": load_before[0], "after": load_after[0]},
            "goal": "registration throughput >= 0.5 x plain h5py read throughput"})
        print(f"\nwrote {path}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
