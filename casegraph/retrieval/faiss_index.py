"""Vector indexes over patient embeddings: the :class:`VectorIndex` interface and FAISS.

Vectors are L2-normalised on the way in, so inner product = cosine similarity for every
implementation. Patient ids map to FAISS int64 ids through an append-only id map (the
position in :attr:`FaissIndex.id_map`; a removed patient leaves ``None``), which is saved
next to the FAISS file and survives reloads.

- :class:`FlatIndex`: exact search (``IndexIDMap2(IndexFlatIP)``), used below
  ``exact_threshold`` vectors.
- :class:`IVFIndex`: approximate search (``IndexIVFFlat``, inner product; ``nlist``,
  ``nprobe`` and the training size recorded in ``params``). IVF rather than HNSW because
  FAISS's HNSW cannot remove vectors and IVF can, and new patients are added to the
  trained lists without a rebuild.

Filtered search (:meth:`VectorIndex.search`) always returns ``k`` hits when ``k``
eligible vectors exist: an inclusion set is passed to FAISS as an ``IDSelectorBatch``,
exclusions are over-fetched, and both widen (more results, more IVF lists) until ``k``
are found or the search was exhaustive.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from abc import abstractmethod
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.errors import InputError, StoreError
from casegraph.retrieval.vector_index import FloatArray, Hit, VectorIndex, normalise

__all__ = ["FaissIndex", "FlatIndex", "Hit", "IVFIndex", "VectorIndex", "make_index",
           "normalise"]

DEFAULT_EXACT_THRESHOLD = 50_000
GPU_MAX_K = 2048  # FAISS GPU searches return at most this many hits per query


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees a GPU."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    try:
        return bool(get and get() > 0)
    except RuntimeError:  # pragma: no cover - a GPU build without a driver
        return False


def _use_gpu(requested: bool | None) -> bool:
    """``None``: the GPU when this FAISS build has one; ``True`` without one is an error."""
    if requested is None:
        return gpu_available()
    if requested and not gpu_available():
        raise InputError("use_gpu=True, but this FAISS build has no GPU support or sees no GPU",
                         column="use_gpu",
                         fix="install casegraph[gpu] (faiss-gpu-cu12) on a CUDA machine, or "
                         "leave use_gpu unset")
    return bool(requested)


class FaissIndex(VectorIndex):
    """Shared FAISS plumbing: the id map, add/remove, widening filtered search, save/load.

    GPU: with ``use_gpu`` (default: when the installed FAISS has a GPU) unfiltered searches
    of at most ``GPU_MAX_K`` hits run on a GPU copy of the index, made on the first search
    after a change; filtered and wider searches stay on the CPU index, which remains the
    one that is saved, so a file written on a GPU machine loads anywhere.
    """

    def __init__(self, dim: int, *, use_gpu: bool | None = None) -> None:
        super().__init__(dim)
        self.id_map: list[str | None] = []
        self._pos: dict[str, int] = {}
        self._index: Any = None
        self.use_gpu = _use_gpu(use_gpu)
        self._gpu_copy: Any = None

    # ------------------------------------------------------------------ contents
    def __len__(self) -> int:
        return len(self._pos)

    def __contains__(self, patient_id: object) -> bool:
        return patient_id in self._pos

    def ids(self) -> list[str]:
        return [p for p in self.id_map if p is not None]

    def add(self, patient_ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        ids = [str(p) for p in patient_ids]
        x = normalise(vectors)
        if x.shape != (len(ids), self.dim):
            raise InputError(
                f"expected {len(ids)} vectors of dim {self.dim}, got shape {x.shape}",
                column="embedding",
            )
        dupes = sorted({p for p in ids if p in self._pos} | _repeated(ids))
        if dupes:
            raise InputError(f"patients already in the index: {dupes[:5]}",
                             fix="remove them first to replace their vectors")
        if not ids:
            return
        self._before_add(x)
        start = len(self.id_map)
        int_ids = np.arange(start, start + len(ids), dtype=np.int64)
        self._index.add_with_ids(x, int_ids)
        self._invalidate()
        self.id_map.extend(ids)
        self._pos.update({p: start + i for i, p in enumerate(ids)})

    def _before_add(self, x: FloatArray) -> None:
        """Hook for indexes that must be trained before the first add."""

    def remove(self, patient_ids: Collection[str]) -> int:
        import faiss

        gone = [self._pos[p] for p in set(patient_ids) if p in self._pos]
        if not gone:
            return 0
        keys = np.asarray(gone, dtype=np.int64)  # an array selector works for every index type
        removed = int(self._index.remove_ids(faiss.IDSelectorArray(keys)))
        self._invalidate()
        for i in gone:
            pid = self.id_map[i]
            self.id_map[i] = None
            self._pos.pop(pid, None)  # type: ignore[arg-type]
        return removed

    def vectors(self, patient_ids: Sequence[str]) -> FloatArray:
        """The stored (normalised) vectors of these patients, (n, dim)."""
        missing = [p for p in patient_ids if p not in self._pos]
        if missing:
            raise KeyError(f"not in the index: {missing[:5]}")
        if not patient_ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = np.fromiter((self._pos[p] for p in patient_ids), dtype=np.int64)
        return np.asarray(self._index.reconstruct_batch(keys), dtype=np.float32)

    # ------------------------------------------------------------------ search
    def search(
        self,
        vectors: npt.ArrayLike,
        k: int,
        *,
        allowed: Collection[str] | None = None,
        exclude: Collection[str] = (),
    ) -> list[list[Hit]]:
        queries = normalise(vectors)
        if queries.shape[1] != self.dim:
            raise InputError(f"query has dim {queries.shape[1]}, the index holds dim {self.dim}",
                             column="embedding")
        if k <= 0:
            raise InputError(f"k must be >= 1, got {k}", column="k")
        excluded = {self._pos[p] for p in exclude if p in self._pos}
        allowed_pos: npt.NDArray[np.int64] | None = None
        if allowed is not None:
            allowed_pos = np.fromiter(
                (self._pos[p] for p in set(allowed) if p in self._pos and self._pos[p] not in excluded),
                dtype=np.int64,
            )
            eligible = int(allowed_pos.size)
            excluded = set()
        else:
            eligible = len(self) - len(excluded)
        want = min(k, eligible)
        if want == 0:
            return [[] for _ in range(len(queries))]
        # one batched first pass; only queries short of ``want`` widen, one by one
        fetch = min(len(self), want + len(excluded) + max(8, want))
        scores, ids = self._raw_search(queries, fetch, self._initial_width(), allowed_pos)
        out = []
        for row in range(len(queries)):
            hits = self._hits(scores[row], ids[row], excluded, want)
            if len(hits) < want and not self._exhaustive(fetch, self._initial_width()):
                hits = self._search_one(queries[row: row + 1], want, allowed_pos, excluded,
                                        fetch * 4, self._initial_width() * 4)
            out.append(hits[:want])
        return out

    def _hits(self, scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64],
              excluded: set[int], limit: int) -> list[Hit]:
        """The first ``limit`` valid, not excluded rows as hits. Masks and ``.tolist()``
        instead of a loop over numpy scalars, and no Hit past ``limit`` (a search fetches
        about twice what it returns): at the WSI-only query's 2,000-hit pool search, 4.6
        instead of 16 ms on the shared 2-core box (load 6)."""
        keep = ids >= 0
        if excluded:
            keep &= ~np.isin(ids, np.fromiter(excluded, dtype=np.int64, count=len(excluded)))
        id_map = self.id_map
        return [Hit(id_map[i], s)  # type: ignore[arg-type]
                for i, s in zip(ids[keep][:limit].tolist(), scores[keep][:limit].tolist(),
                                strict=True)]

    def _exhaustive(self, fetch: int, width: int) -> bool:
        return fetch >= len(self) and width >= self._max_width()

    def _search_one(
        self,
        query: FloatArray,
        want: int,
        allowed_pos: npt.NDArray[np.int64] | None,
        excluded: set[int],
        fetch: int,
        width: int,
    ) -> list[Hit]:
        fetch, width = min(len(self), fetch), min(self._max_width(), width)
        while True:
            scores, ids = self._raw_search(query, fetch, width, allowed_pos)
            hits = self._hits(scores[0], ids[0], excluded, want)
            if len(hits) >= want:
                return hits[:want]
            if self._exhaustive(fetch, width):
                return hits  # exhaustive search: fewer are eligible than asked for
            fetch = min(len(self), fetch * 4)
            width = min(self._max_width(), width * 4)

    def _initial_width(self) -> int:
        return 1

    def _max_width(self) -> int:
        return 1

    def _raw_search(
        self,
        query: FloatArray,
        fetch: int,
        width: int,
        allowed_pos: npt.NDArray[np.int64] | None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        import faiss

        params = None
        if allowed_pos is not None:
            params = self._search_parameters(faiss.IDSelectorBatch(allowed_pos), width)
        elif width != self._initial_width():
            params = self._search_parameters(None, width)
        if params is None:  # GPU copies (when present) serve unfiltered searches only
            return self._searcher(fetch).search(query, fetch)  # type: ignore[no-any-return]
        return self._index.search(query, fetch, params=params)  # type: ignore[no-any-return]

    def _searcher(self, fetch: int) -> Any:
        """The index an unfiltered search of ``fetch`` hits runs on: the GPU copy when
        there is a GPU and FAISS's GPU search can return that many, else the CPU index."""
        if not self.use_gpu or fetch > GPU_MAX_K:
            return self._index
        if self._gpu_copy is None:
            self._gpu_copy = _faiss().index_cpu_to_all_gpus(self._index)
        return self._gpu_copy

    def _invalidate(self) -> None:
        """Drop the GPU copy after add/remove (the next search makes a fresh one)."""
        self._gpu_copy = None

    @abstractmethod
    def _search_parameters(self, selector: Any, width: int) -> Any: ...

    # ------------------------------------------------------------------ persistence
    def save(
        self,
        directory: str | Path,
        extra_meta: dict[str, Any] | None = None,
        arrays: dict[str, npt.NDArray[Any]] | None = None,
    ) -> None:
        """Write index.faiss, ids.json, meta.json (and ``<name>.npy`` for each of ``arrays``)
        into ``directory``, replacing it whole."""
        import faiss

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        faiss.write_index(self._index, str(tmp / "index.faiss"))
        (tmp / "ids.json").write_text(json.dumps(self.id_map), encoding="utf-8")
        meta = {**(extra_meta or {}), **self.params, "ntotal": int(self._index.ntotal)}
        for name, array in (arrays or {}).items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        _replace_directory(tmp, directory)

    @staticmethod
    def load(directory: str | Path) -> FaissIndex:
        """Load an index written by :meth:`save` (its type is read from meta.json)."""
        import faiss

        directory = Path(directory)
        try:
            files = _read_index_files(directory)
            meta = json.loads(files["meta.json"])
            id_map = json.loads(files["ids.json"])
            raw = faiss.deserialize_index(np.frombuffer(files["index.faiss"], dtype=np.uint8))
        except (OSError, ValueError, RuntimeError) as exc:
            raise StoreError(f"cannot read vector index {directory}: {exc}; "
                             "run `casegraph index rebuild`") from None
        cls = INDEX_TYPES.get(meta.get("type", ""))
        if cls is None:
            raise StoreError(f"vector index {directory} has unknown type {meta.get('type')!r}")
        index = cls._from_faiss(raw, meta)
        index.id_map = id_map
        index._pos = {p: i for i, p in enumerate(id_map) if p is not None}
        if len(index._pos) != int(raw.ntotal):
            raise StoreError(f"vector index {directory}: id map holds {len(index._pos)} ids, "
                             f"FAISS holds {raw.ntotal}; run `casegraph index rebuild`")
        return index

    @classmethod
    @abstractmethod
    def _from_faiss(cls, raw: Any, meta: dict[str, Any]) -> FaissIndex: ...


_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15)
_AT_FDCWD = -100
_INDEX_FILES = ("meta.json", "ids.json", "index.faiss")


def _replace_directory(new: Path, directory: Path) -> None:
    """Put folder ``new`` in ``directory``'s place. Where Linux can swap two names in one
    step (``renameat2(RENAME_EXCHANGE)``), a reader always finds a whole index there, old
    or new, and two processes saving at once both succeed (the last one wins); elsewhere
    there is a moment with no folder (a reader then retries or builds)."""
    for _ in range(8):
        swapped = _exchange(new, directory)
        if swapped is None:
            break
        if swapped == 0:
            shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old index
            return
        try:  # no folder there yet (ENOENT from the swap)
            os.rename(new, directory)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise  # another save put its folder there meanwhile: swap with that one
    old = directory.with_name(f".{directory.name}.old-{uuid.uuid4().hex[:8]}")
    if directory.exists():
        os.replace(directory, old)
    os.replace(new, directory)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> int | None:
    """Swap the names ``a`` and ``b`` atomically: 0, or the errno (ENOENT: ``b`` is
    missing); None where the system cannot swap."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    if int(renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                     _RENAME_EXCHANGE)) == 0:
        return 0
    code = ctypes.get_errno()
    return None if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP) else code


def _read_index_files(directory: Path, attempts: int = 3) -> dict[str, bytes]:
    """The index's files, all from one folder: opened through one handle on it, so a save
    that swaps the folder meanwhile cannot mix an old file with a new one. A folder deleted
    under the read (its replacement is in place by then) is read again."""
    for attempt in range(attempts):
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                return {name: _read_at(fd, name) for name in _INDEX_FILES}
            finally:
                os.close(fd)
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


class FlatIndex(FaissIndex):
    """Exact cosine search (brute force inner product on normalised vectors)."""

    kind = "flat"

    def __init__(self, dim: int, *, use_gpu: bool | None = None) -> None:
        import faiss

        super().__init__(dim, use_gpu=use_gpu)
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def _search_parameters(self, selector: Any, width: int) -> Any:
        faiss = _faiss()
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    @classmethod
    def _from_faiss(cls, raw: Any, meta: dict[str, Any]) -> FaissIndex:
        index = cls(int(meta["dim"]))
        index._index = raw
        return index


class IVFIndex(FaissIndex):
    """Approximate cosine search with an inverted file (``IndexIVFFlat``, inner product).

    ``nlist`` lists, trained with k-means on the first vectors added (at most
    ``max_train`` of them, sampled with ``seed``); ``nprobe`` lists searched per query.
    """

    kind = "ivf"

    def __init__(self, dim: int, *, nlist: int = 256, nprobe: int = 16,
                 max_train: int = 50_000, seed: int = 0, use_gpu: bool | None = None) -> None:
        import faiss

        super().__init__(dim, use_gpu=use_gpu)
        self.nlist, self.nprobe, self.max_train, self.seed = nlist, nprobe, max_train, seed
        self.trained_on = 0
        self._quantizer = faiss.IndexFlatIP(dim)
        self._index = faiss.IndexIVFFlat(self._quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        self._index.nprobe = nprobe
        self._enable_reconstruct()

    def _enable_reconstruct(self) -> None:
        """A hash-table direct map: reconstruct() by id that survives add and remove."""
        faiss = _faiss()
        if self._index.direct_map.type != faiss.DirectMap.Hashtable:
            self._index.set_direct_map_type(faiss.DirectMap.Hashtable)

    @classmethod
    def for_size(cls, dim: int, n: int, *, seed: int = 0) -> IVFIndex:
        """Parameters scaled to ``n`` vectors: nlist ~ 2 sqrt(n), nprobe = nlist / 32 (>= 8)."""
        nlist = int(min(4096, max(16, 2 * np.sqrt(max(n, 1)))))
        return cls(dim, nlist=nlist, nprobe=max(8, nlist // 32), seed=seed)

    def _before_add(self, x: FloatArray) -> None:
        if self._index.is_trained:
            return
        if x.shape[0] < self.nlist:
            raise InputError(f"an IVF index with nlist={self.nlist} needs at least {self.nlist} "
                             f"vectors to train, got {x.shape[0]}", fix="use a flat index")
        rng = np.random.default_rng(self.seed)
        sample = x if x.shape[0] <= self.max_train else x[
            np.sort(rng.choice(x.shape[0], self.max_train, replace=False))]
        self._index.cp.seed = self.seed
        self._index.train(sample)
        self.trained_on = int(sample.shape[0])

    def _initial_width(self) -> int:
        return self.nprobe

    def _max_width(self) -> int:
        return self.nlist

    def _search_parameters(self, selector: Any, width: int) -> Any:
        faiss = _faiss()
        if selector is None:
            return faiss.SearchParametersIVF(nprobe=width)
        return faiss.SearchParametersIVF(sel=selector, nprobe=width)

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "nlist": self.nlist, "nprobe": self.nprobe,
                "trained_on": self.trained_on, "seed": self.seed}

    @classmethod
    def _from_faiss(cls, raw: Any, meta: dict[str, Any]) -> FaissIndex:
        index = cls(int(meta["dim"]), nlist=int(meta["nlist"]), nprobe=int(meta["nprobe"]),
                    seed=int(meta.get("seed", 0)))
        index._index = raw  # read_index returns the concrete (owning) IndexIVFFlat
        index._index.nprobe = index.nprobe
        index._enable_reconstruct()
        index.trained_on = int(meta.get("trained_on", 0))
        return index


INDEX_TYPES: dict[str, type[FaissIndex]] = {"flat": FlatIndex, "ivf": IVFIndex}


def make_index(dim: int, n: int, *, exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
               seed: int = 0) -> FaissIndex:
    """Exact below ``exact_threshold`` vectors, IVF (sized for ``n``) at or above it."""
    if n < exact_threshold:
        return FlatIndex(dim)
    return IVFIndex.for_size(dim, n, seed=seed)


def _faiss() -> Any:
    """The faiss module, untyped (its stubs miss the keyword arguments of SearchParameters)."""
    import faiss

    return faiss


def _repeated(ids: Sequence[str]) -> set[str]:
    seen: set[str] = set()
    return {p for p in ids if p in seen or seen.add(p)}  # type: ignore[func-returns-value]
