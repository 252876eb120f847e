"""Per-slide summaries: the mean patch embedding and k-means cluster centres (for CCL).

- :func:`summarize_features`: mean (D,) over all patches + k-means centres (k, D) fitted
  with Lloyd's algorithm and k-means++ init on a seeded subsample of at most
  ``max_points`` patches. Deterministic for a seed; centres sorted by cluster size
  (largest first, ties by the init order).
- :func:`register_bag`: reads a bag file's bytes once, hashes them (xxh3_128 by default,
  :mod:`casegraph.ingest.hashes`; overlapped with the read) and parses the same bytes,
  then summarises: one pass over the disk. It also keeps the patch coords (int32) and
  the file's provenance attributes.
- :func:`write_summary_file` / :func:`read_summary_rows`: the store's Parquet files of
  summaries (``summaries/<batch_id>-<random>.parquet``), referenced from the
  ``slide_summaries`` table by (file, row_index).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.errors import InputError, StoreError
from casegraph.faults import crash_point
from casegraph.ingest.bags import parse_bag
from casegraph.ingest.hashes import DEFAULT_ALGORITHM, READ_CHUNK, new_hasher

Float32Array = npt.NDArray[np.float32]

DEFAULT_K = 6
DEFAULT_MAX_POINTS = 2048
DEFAULT_MAX_ITER = 20
SUMMARY_ROW_GROUP = 64  # rows per Parquet row group: one slide's coords are read alone


# --------------------------------------------------------------------------- k-means
def summarize_features(
    features: npt.ArrayLike,
    k: int = DEFAULT_K,
    seed: int = 0,
    *,
    max_points: int = DEFAULT_MAX_POINTS,
    max_iter: int = DEFAULT_MAX_ITER,
    column_sums: Float32Array | None = None,
) -> tuple[Float32Array, Float32Array]:
    """Mean embedding (D,) and k-means centres (k, D) of a bag ``features`` (N, D).

    k-means runs on ``min(N, max_points)`` patches drawn without replacement with
    ``numpy.random.default_rng(seed)``. When N < k the N (or fewer distinct) centres are
    repeated cyclically to fill k rows, so the output shape is always (k, D).
    ``column_sums`` (the float32 sums of ``features`` over N, e.g.
    :attr:`~casegraph.ingest.bags.Bag.column_sums`) saves a pass: the mean is then the
    same bytes as without them (numpy's float32 mean is that sum divided by N).
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be (N>0, D), got shape {x.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    with np.errstate(over="ignore"):
        mean = (x.mean(axis=0, dtype=np.float32) if column_sums is None
                else np.true_divide(column_sums, x.shape[0], dtype=np.float32))
    if not np.isfinite(mean).all():  # float32 overflow of huge (finite) values
        mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    sample = x[np.sort(rng.choice(n, size=max_points, replace=False))] if n > max_points else x
    k_fit = min(k, sample.shape[0])
    with _single_threaded_blas:
        centres = kmeans(sample, k_fit, rng, max_iter=max_iter)
    if k_fit < k:
        centres = centres[np.arange(k) % k_fit]
    return mean, np.ascontiguousarray(centres, dtype=np.float32)


class _SingleThreadedBlas:
    """BLAS limited to one thread while any k-means runs (reference counted, so that
    concurrent callers do not restore the limit under each other).

    k-means products are thin (m x D times D x k, k ~ 6): BLAS threads gain little there
    and lose 4x when the cores are shared with other work (measured on 2 shared cores).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limit: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                from threadpoolctl import threadpool_limits

                self._limit = threadpool_limits(limits=1, user_api="blas")
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limit is not None:
                self._limit.restore_original_limits()
                self._limit = None


_single_threaded_blas = _SingleThreadedBlas()


def kmeans(
    x: Float32Array, k: int, rng: np.random.Generator, *, max_iter: int = DEFAULT_MAX_ITER
) -> Float32Array:
    """Lloyd's k-means on ``x`` (m, D) with k-means++ init; centres (k, D), largest first.

    The cluster sums are kept (float64) and moved by the points that changed cluster, so
    that after the first iterations (when few points move) an iteration costs one
    distance product instead of two (measured in docs/benchmarks.md).
    """
    x_sq = np.einsum("ij,ij->i", x, x)
    centres = _kmeans_pp(x, x_sq, k, rng)
    labels = np.full(x.shape[0], -1, dtype=np.int64)
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    for _ in range(max_iter):
        dist = _sq_distances(x, x_sq, centres)
        new_labels = dist.argmin(axis=1)
        moved = np.flatnonzero(new_labels != labels)
        if moved.size == 0:
            break
        sums = _cluster_sums(x, new_labels, labels, moved, sums)
        labels = new_labels
        centres = _centres(x, sums, labels, dist)
    sizes = np.bincount(labels, minlength=k)
    order = np.argsort(-sizes, kind="stable")
    return centres[order]


FULL_SUMS_FRACTION = 4  # recompute every cluster sum when over 1/4 of the points moved


def _cluster_sums(x: Float32Array, labels: npt.NDArray[np.int64], old: npt.NDArray[np.int64],
                  moved: npt.NDArray[np.intp], sums: npt.NDArray[np.float64]
                  ) -> npt.NDArray[np.float64]:
    """(k, D) float64 sums of ``x`` per cluster of ``labels``, from ``sums`` (those of
    ``old``) plus the ``moved`` points, or afresh when many moved (or at the start)."""
    k, m = sums.shape[0], x.shape[0]
    if moved.size * FULL_SUMS_FRACTION > m or old[0] < 0:
        one_hot = np.zeros((k, m), dtype=np.float32)
        one_hot[labels, np.arange(m)] = 1.0
        return (one_hot @ x).astype(np.float64)
    delta = np.zeros((k, moved.size), dtype=np.float64)
    delta[labels[moved], np.arange(moved.size)] = 1.0
    delta[old[moved], np.arange(moved.size)] -= 1.0
    return sums + delta @ x[moved].astype(np.float64)


def _sq_distances(x: Float32Array, x_sq: Float32Array, centres: Float32Array) -> Float32Array:
    c_sq = np.einsum("ij,ij->i", centres, centres)
    dist = x_sq[:, None] - 2.0 * (x @ centres.T) + c_sq[None, :]
    return np.maximum(dist, 0.0, out=dist)


def _kmeans_pp(x: Float32Array, x_sq: Float32Array, k: int, rng: np.random.Generator) -> Float32Array:
    m = x.shape[0]
    chosen = [int(rng.integers(m))]
    closest = _sq_distances(x, x_sq, x[chosen])[:, 0]
    for _ in range(1, k):
        total = float(closest.sum(dtype=np.float64))
        if total <= 0.0:  # fewer distinct points than k: any remaining point will do
            idx = int(rng.integers(m))
        else:
            cumulative = np.cumsum(closest, dtype=np.float64)
            idx = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
            idx = min(idx, m - 1)
        chosen.append(idx)
        np.minimum(closest, _sq_distances(x, x_sq, x[[idx]])[:, 0], out=closest)
    return x[chosen].copy()


def _centres(x: Float32Array, sums: npt.NDArray[np.float64], labels: npt.NDArray[np.int64],
             dist: Float32Array) -> Float32Array:
    """Cluster means (k, D) float32; an empty cluster re-seeded with the point farthest
    from its centre (the next farthest for the next empty one)."""
    sizes = np.bincount(labels, minlength=sums.shape[0])
    centres = (sums / np.maximum(sizes, 1)[:, None]).astype(np.float32)
    empty = np.flatnonzero(sizes == 0)
    if empty.size:
        farthest = np.argsort(-dist[np.arange(x.shape[0]), labels], kind="stable")
        centres[empty] = x[farthest[: empty.size]]
    return centres


# --------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class BagRecord:
    """What the store keeps about one bag file: its content hash (``hashes`` holds the
    digest of every algorithm asked for, ``content_hash`` that of ``hash_algorithm``),
    shape, summary, patch ``coords`` ((N, W) int32, W = 2 for (x, y); None without) and
    provenance attributes (:attr:`casegraph.ingest.bags.Bag.attrs`)."""

    content_hash: str
    hash_algorithm: str
    n_patches: int
    dim: int
    mean: Float32Array
    centres: Float32Array
    coords: npt.NDArray[np.int32] | None = None
    provenance: dict[str, object] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)


def read_and_hash(
    path: str | Path, algorithms: Sequence[str] = (DEFAULT_ALGORITHM,),
    chunk_size: int = READ_CHUNK,
) -> tuple[npt.NDArray[np.uint8], dict[str, str]]:
    """The file's bytes (a uint8 array) and their digest with each of ``algorithms``,
    hashing chunk i in a second thread while chunk i+1 is read."""
    path = Path(path)
    hashers = {name: new_hasher(name) for name in algorithms}

    def update(chunk: memoryview) -> None:
        for hasher in hashers.values():
            hasher.update(chunk)

    try:
        size = path.stat().st_size
        buffer = np.empty(size, dtype=np.uint8)
        view = memoryview(buffer.data)
        with open(path, "rb", buffering=0) as handle, ThreadPoolExecutor(1) as hasher:
            pending = None
            pos = 0
            while pos < size:
                n = handle.readinto(view[pos : pos + chunk_size])
                if not n:
                    raise InputError(f"file shrank while reading ({pos} of {size} bytes)",
                                     file=path, fix="do not modify bag files during ingest")
                if pending is not None:
                    pending.result()
                pending = hasher.submit(update, view[pos : pos + n])
                pos += n
            if pending is not None:
                pending.result()
    except FileNotFoundError:
        raise InputError("patch-feature file not found", file=path,
                         fix="check the path, or re-run ingest with the moved files") from None
    except IsADirectoryError:
        raise InputError("expected a patch-feature file, found a directory", file=path) from None
    return buffer, {name: h.hexdigest() for name, h in hashers.items()}


def register_bag(path: str | Path, k: int = DEFAULT_K, seed: int = 0,
                 algorithms: Sequence[str] = (DEFAULT_ALGORITHM,)) -> BagRecord:
    """Hash, validate and summarise one bag file, reading it from disk once.

    The record's ``content_hash`` is the digest of ``algorithms[0]``; the others are
    in ``hashes`` (to compare with a slide stored under an older algorithm).
    """
    crash_point("register.slide")
    buffer, digests = read_and_hash(path, algorithms)
    bag = parse_bag(buffer, Path(path))
    mean, centres = summarize_features(bag.features, k=k, seed=seed,
                                       column_sums=bag.column_sums)
    return BagRecord(content_hash=digests[algorithms[0]], hash_algorithm=algorithms[0],
                     n_patches=bag.n_patches, dim=bag.dim, mean=mean, centres=centres,
                     coords=compact_coords(bag.coords, Path(path)), provenance=bag.attrs,
                     hashes=digests)


def compact_coords(coords: npt.NDArray[np.int64] | None, path: Path
                   ) -> npt.NDArray[np.int32] | None:
    """``coords`` as int32 (patch positions in level-0 pixels fit with room to spare)."""
    if coords is None:
        return None
    info = np.iinfo(np.int32)
    if coords.size and (coords.min() < info.min or coords.max() > info.max):
        raise InputError("coords beyond the int32 range", file=path, column="coords",
                         fix="write patch positions in level-0 pixels")
    return np.ascontiguousarray(coords, dtype=np.int32)


def register_bags(
    paths: Iterable[str | Path], k: int = DEFAULT_K, seed: int = 0, *,
    threads: int | None = None, algorithms: Sequence[Sequence[str]] | None = None,
) -> Iterator[BagRecord]:
    """:func:`register_bag` over many files, ``threads`` at a time (default: every core
    this process may use), results in input order; ``algorithms[i]`` for ``paths[i]``.

    Reading, hashing and the numpy work release the GIL, so the threads keep the disk
    and the cores busy. The first :class:`InputError` is raised in input order. BLAS
    is limited to one thread until the generator finishes.
    """
    path_list = list(paths)
    per_file = list(algorithms) if algorithms is not None else [(DEFAULT_ALGORITHM,)] * len(path_list)
    workers = threads or available_cores()
    # One BLAS limit for the whole batch: toggling OpenBLAS's thread count per file while
    # other threads run made two threads 5x slower than one (measured).
    with _single_threaded_blas:
        if workers <= 1:
            for p, algs in zip(path_list, per_file, strict=True):
                yield register_bag(p, k, seed, algs)
            return
        with ThreadPoolExecutor(workers) as pool:
            pending: deque[Future[BagRecord]] = deque()
            for p, algs in zip(path_list, per_file, strict=True):
                pending.append(pool.submit(register_bag, p, k, seed, algs))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def limit_blas_for_this_process() -> None:
    """Keep BLAS at one thread for the rest of this process (a registration worker)."""
    _single_threaded_blas.__enter__()


# --------------------------------------------------------------------------- Parquet
@dataclass(frozen=True)
class SummaryRow:
    """One row of a summaries Parquet file: the summary and the slide's patch coords."""

    slide_id: str
    content_hash: str
    k: int
    seed: int
    mean: Float32Array
    centres: Float32Array
    hash_algorithm: str = DEFAULT_ALGORITHM
    coords: npt.NDArray[np.int32] | None = None

    @classmethod
    def from_record(cls, slide_id: str, record: BagRecord, k: int, seed: int) -> SummaryRow:
        return cls(slide_id, record.content_hash, k, seed, record.mean, record.centres,
                   record.hash_algorithm, record.coords)


def write_summary_file(summaries_dir: str | Path, batch_id: str, rows: Sequence[SummaryRow]) -> str:
    """Write ``rows`` to a fresh Parquet file; return its name (relative to summaries_dir).

    Written under a temporary name, flushed to disk and renamed, so a reader (or a
    crash) never sees a partial file. Row i of the file is ``rows[i]``. Coords are a
    flat int32 list (N x ``coords_width``, null without coords) in row groups of
    ``SUMMARY_ROW_GROUP`` rows, so that one slide's coords are read without the rest.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(summaries_dir)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{batch_id}-{uuid.uuid4().hex[:8]}.parquet"
    dims = [int(r.mean.shape[0]) for r in rows]
    for r, d in zip(rows, dims, strict=True):
        if r.centres.shape != (r.k, d):
            raise ValueError(f"slide {r.slide_id}: centres {r.centres.shape} != (k={r.k}, {d})")
    table = pa.table({
        "slide_id": pa.array([r.slide_id for r in rows], pa.string()),
        "content_hash": pa.array([r.content_hash for r in rows], pa.string()),
        "hash_algorithm": pa.array([r.hash_algorithm for r in rows], pa.string()),
        "k": pa.array([r.k for r in rows], pa.int32()),
        "seed": pa.array([r.seed for r in rows], pa.int64()),
        "dim": pa.array(dims, pa.int32()),
        "mean": _list_column([r.mean for r in rows]),
        "centres": _list_column([r.centres.reshape(-1) for r in rows]),
        "coords_width": pa.array([0 if r.coords is None else int(r.coords.shape[1])
                                  for r in rows], pa.int32()),
        "coords": _coords_column([r.coords for r in rows]),
    })
    tmp = directory / f".{name}.tmp"
    pq.write_table(table, tmp, row_group_size=SUMMARY_ROW_GROUP)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, directory / name)
    return name


def _list_column(vectors: Sequence[npt.NDArray[np.float32]]):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    lengths = np.array([v.shape[0] for v in vectors], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = (np.concatenate([np.asarray(v, np.float32) for v in vectors])
            if vectors else np.empty(0, np.float32))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32()))


def _coords_column(coords: Sequence[npt.NDArray[np.int32] | None]):  # type: ignore[no-untyped-def]
    """A large_list<int32> column (64-bit offsets: a batch may hold > 2^31 coordinates)."""
    import pyarrow as pa

    present = [c.reshape(-1) for c in coords if c is not None]
    lengths = np.array([0 if c is None else c.size for c in coords], dtype=np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    flat = np.concatenate(present).astype(np.int32) if present else np.empty(0, np.int32)
    mask = pa.array([c is None for c in coords], pa.bool_())
    return pa.LargeListArray.from_arrays(offsets, pa.array(flat, pa.int32()), mask=mask)


def read_coords(summaries_dir: str | Path, file: str, row: int, slide_id: str
                ) -> npt.NDArray[np.int32] | None:
    """Row ``row`` of a summaries file's coords as (N, W) int32, or None when the slide
    has none or the file predates coords. Reads only the row group holding the row."""
    import pyarrow.parquet as pq

    path = Path(summaries_dir) / file
    handle = pq.ParquetFile(path)
    if "coords" not in handle.schema_arrow.names:
        return None
    group, first = 0, 0
    while group < handle.num_row_groups and first + handle.metadata.row_group(group).num_rows <= row:
        first += handle.metadata.row_group(group).num_rows
        group += 1
    if group == handle.num_row_groups:
        raise StoreError(f"{path}: no summary row {row} for slide {slide_id!r}; "
                         "run `casegraph doctor`")
    table = handle.read_row_group(group, columns=["slide_id", "coords_width", "coords"])
    if table.column("slide_id")[row - first].as_py() != slide_id:
        raise StoreError(f"{path}: summary row {row} is not slide {slide_id!r}; "
                         "run `casegraph doctor`")
    cell = table.column("coords")[row - first]
    if not cell.is_valid:
        return None
    width = int(table.column("coords_width")[row - first].as_py())
    flat = np.asarray(cell.values.to_numpy(zero_copy_only=False), dtype=np.int32)
    return flat.reshape(-1, width)


def read_summary_rows(
    summaries_dir: str | Path, refs: Iterable[tuple[str, str, int]]
) -> dict[str, tuple[Float32Array, Float32Array]]:
    """{slide_id: (mean (D,), centres (k, D))} for refs ``(slide_id, file, row_index)``."""
    import pyarrow.parquet as pq

    by_file: dict[str, list[tuple[str, int]]] = {}
    for slide_id, file, row in refs:
        by_file.setdefault(file, []).append((slide_id, int(row)))
    out: dict[str, tuple[Float32Array, Float32Array]] = {}
    for file, wanted in by_file.items():
        path = Path(summaries_dir) / file
        table = pq.read_table(path, columns=["slide_id", "k", "dim", "mean", "centres"])
        ks = table.column("k").to_numpy()
        dims = table.column("dim").to_numpy()
        means = table.column("mean").combine_chunks()
        centres = table.column("centres").combine_chunks()
        slide_ids = table.column("slide_id").to_pylist()
        for slide_id, row in wanted:
            if row >= table.num_rows or slide_ids[row] != slide_id:
                raise StoreError(f"{path}: summary row {row} is not slide {slide_id!r}; "
                                 "run `casegraph doctor`")
            mean = np.asarray(means[row].values.to_numpy(zero_copy_only=False), np.float32)
            flat = np.asarray(centres[row].values.to_numpy(zero_copy_only=False), np.float32)
            out[slide_id] = (mean, flat.reshape(int(ks[row]), int(dims[row])))
    return out
