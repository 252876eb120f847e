"""Vector indexes of a store: one per (model version, embedding kind), kept in step with DuckDB.

An index lives in ``<store>/artifacts/indexes/<version_id>/<kind>/`` (see
:class:`~casegraph.retrieval.faiss_index.FaissIndex` for the files). Its vectors come from

- a model version's ``patient_embeddings`` row (a Parquet file of patient_id + vector,
  kinds ``wsi``, ``genomics``, ``fused``), or
- an MSRL version's GSL metric space (kind ``gsl``: its reference patients as the graph
  learner embeds them; see :mod:`casegraph.retrieval.msrl_adapter`), used to pick the
  candidates of a WSI-only query, or
- the model-free fallback :data:`SLIDE_MEAN`: each patient's mean patch feature (the
  patch-count-weighted mean of its slides' stored mean embeddings), centred on the mean
  over the indexed patients so that cosine similarity is not dominated by what all slides
  share. The centre is saved with the index (``center.npy``) and reused for queries.

:func:`sync_index` adds new patients and removes vanished ones without a rebuild;
:func:`check_indexes` (called by ``casegraph doctor``) lists every disagreement between
the saved indexes and the DuckDB rows; :func:`rebuild_indexes` rebuilds from scratch.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from casegraph import __version__
from casegraph.errors import InputError, StoreError
from casegraph.ingest.store import Store
from casegraph.retrieval import msrl_adapter
from casegraph.retrieval.faiss_index import (
    DEFAULT_EXACT_THRESHOLD,
    FaissIndex,
    FlatIndex,
    Hit,
    IVFIndex,
    VectorIndex,
    make_index,
    normalise,
)

__all__ = [
    "EMBEDDING_KINDS",
    "SLIDE_MEAN",
    "FaissIndex",
    "FlatIndex",
    "Hit",
    "IVFIndex",
    "IndexKey",
    "LoadedIndex",
    "VectorIndex",
    "build_index",
    "check_indexes",
    "derive_index",
    "index_keys",
    "open_index",
    "rebuild_indexes",
    "sync_index",
]

SLIDE_MEAN = "slide-mean"
EMBEDDING_KINDS = ("wsi", "genomics", "fused")
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class IndexKey:
    """Which index: a model version id (or :data:`SLIDE_MEAN`) and an embedding kind."""

    version_id: str
    kind: str = "wsi"

    def directory(self, store: Store) -> Path:
        return store.artifacts_dir / "indexes" / self.version_id / self.kind

    def __str__(self) -> str:
        return f"{self.version_id}/{self.kind}"


@dataclass
class LoadedIndex:
    """An index with its key, saved metadata and (for :data:`SLIDE_MEAN`) query centre."""

    key: IndexKey
    index: FaissIndex
    meta: dict[str, object] = field(default_factory=dict)
    center: FloatArray | None = None

    def prepare_query(self, vectors: npt.ArrayLike) -> FloatArray:
        """Raw query embeddings (q, d) -> what the index compares (centred, normalised)."""
        x = np.asarray(vectors, dtype=np.float32).reshape(-1, self.index.dim)
        return normalise(x - self.center if self.center is not None else x)


# ---------------------------------------------------------------------- sources
def index_keys(store: Store) -> list[IndexKey]:
    """Every index the store's rows call for: one per embeddings row, plus the fallback
    when any slide has a stored summary."""
    keys = [IndexKey(v, kind) for v in store.versions.ids()
            for kind in store.versions.embedding_kinds(v)]
    keys += [IndexKey(v, msrl_adapter.GSL_KIND) for v in msrl_adapter.msrl_versions(store)]
    keys.sort(key=str)
    if _summary_setting(store) is not None:
        keys.append(IndexKey(SLIDE_MEAN, "wsi"))
    return keys


def source_embeddings(store: Store, key: IndexKey) -> tuple[list[str], FloatArray]:
    """(patient ids, raw vectors (n, d)) the store holds for ``key``."""
    if key.version_id == SLIDE_MEAN:
        return slide_mean_embeddings(store)
    if key.kind == msrl_adapter.GSL_KIND:
        return msrl_adapter.reference_vectors(msrl_adapter.load(store, key.version_id))
    if key.kind not in store.versions.embedding_kinds(key.version_id):
        raise StoreError(f"no {key.kind!r} embeddings for model version {key.version_id!r}; "
                         f"stored: {', '.join(map(str, index_keys(store))) or 'none'}")
    return store.versions.embeddings(key.version_id, key.kind)


def _summary_setting(store: Store) -> tuple[int, int] | None:
    """The (k, seed) most slides have summaries for, or None when there are none."""
    return store.summary_setting()


def slide_mean_embeddings(
    store: Store, patient_ids: list[str] | None = None
) -> tuple[list[str], FloatArray]:
    """Per-patient mean patch feature from the stored slide summaries (patients whose slides
    have no current summary are left out)."""
    setting = _summary_setting(store)
    slides = store.slides()
    if patient_ids is not None:
        slides = slides[slides["patient_id"].isin(set(patient_ids))]
    if setting is None or slides.empty:
        return [], np.zeros((0, 0), np.float32)
    summaries = store.slide_summaries(list(slides["slide_id"]), *setting)
    sums: dict[str, FloatArray] = {}
    weights: dict[str, float] = {}
    for sid, pid, n in zip(slides["slide_id"], slides["patient_id"], slides["n_patches"],
                           strict=True):
        if sid not in summaries:
            continue
        w = float(n) if pd.notna(n) and n else 1.0
        mean = summaries[sid][0].astype(np.float32)
        sums[pid] = sums.get(pid, 0.0) + w * mean  # type: ignore[assignment, operator]
        weights[pid] = weights.get(pid, 0.0) + w
    ids = sorted(sums)
    if not ids:
        return [], np.zeros((0, 0), np.float32)
    return ids, np.stack([sums[p] / weights[p] for p in ids]).astype(np.float32)


# ---------------------------------------------------------------------- build / load / sync
def build_index(
    store: Store,
    key: IndexKey,
    *,
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    seed: int = 0,
) -> LoadedIndex:
    """Build ``key``'s index from the store's vectors and save it (replacing any old one)."""
    ids, vectors = source_embeddings(store, key)
    if not ids:
        raise StoreError(f"no vectors to index for {key}; ingest slides (with summaries) or "
                         "train a model version first")
    center = vectors.mean(axis=0).astype(np.float32) if key.version_id == SLIDE_MEAN else None
    index = make_index(vectors.shape[1], len(ids), exact_threshold=exact_threshold, seed=seed)
    loaded = LoadedIndex(key, index, {}, center)
    index.add(ids, vectors - center if center is not None else vectors)
    loaded.meta = {"version_id": key.version_id, "kind": key.kind,
                   "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                   "casegraph_version": __version__, "exact_threshold": exact_threshold}
    save_index(store, loaded)
    return loaded


def save_index(store: Store, loaded: LoadedIndex) -> None:
    arrays = {"center": loaded.center} if loaded.center is not None else None
    meta = {**loaded.meta, "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    loaded.index.save(loaded.key.directory(store), extra_meta=meta, arrays=arrays)


def open_index(store: Store, key: IndexKey, *, build: bool = True) -> LoadedIndex:
    """Load ``key``'s saved index; build it first when missing and ``build`` is True."""
    directory = key.directory(store)
    if not (directory / "meta.json").exists():
        if not build:
            raise StoreError(f"no vector index {key} in {store.root}; run `casegraph index "
                             "rebuild`")
        return derive_index(store, key) or build_index(store, key)
    index = FaissIndex.load(directory)
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    center_file = directory / "center.npy"
    center = np.load(center_file).astype(np.float32) if center_file.exists() else None
    return LoadedIndex(key, index, meta, center)


def derive_index(store: Store, key: IndexKey) -> LoadedIndex | None:
    """A derived version's index as its parent's plus the patients it added (a delta: the
    parent's vectors are not recomputed or re-added); None for a trained version."""
    if key.version_id == SLIDE_MEAN or not store.versions.exists(key.version_id):
        return None
    parent = store.versions.get(key.version_id).parent_id
    if parent is None:
        return None
    loaded = open_index(store, IndexKey(parent, key.kind))
    ids, vectors = source_embeddings(store, key)
    present = set(loaded.index.ids())
    new = [i for i, p in enumerate(ids) if p not in present]
    if new:
        loaded.index.add([ids[i] for i in new], vectors[new])
    loaded.key = key
    loaded.meta = {**loaded.meta, "version_id": key.version_id, "derived_from": parent,
                   "added": len(new)}
    save_index(store, loaded)
    return loaded


def sync_index(store: Store, key: IndexKey) -> tuple[int, int]:
    """Add the store's patients missing from ``key``'s index and remove those no longer in
    the store (no rebuild). Returns (added, removed)."""
    loaded = open_index(store, key, build=False)
    ids, vectors = source_embeddings(store, key)
    present = set(loaded.index.ids())
    wanted = set(ids)
    removed = loaded.index.remove(present - wanted)
    new = [i for i, p in enumerate(ids) if p not in present]
    if new:
        x = vectors[new]
        loaded.index.add([ids[i] for i in new], x - loaded.center if loaded.center is not None
                         else x)
    if removed or new:
        save_index(store, loaded)
    return len(new), removed


def rebuild_indexes(
    store: Store,
    version_id: str | None = None,
    *,
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
) -> list[LoadedIndex]:
    """Rebuild every index the store calls for (or only ``version_id``'s); delete orphans."""
    keys = [k for k in index_keys(store) if version_id in (None, k.version_id)]
    if version_id is not None and not keys:
        raise InputError(f"no embeddings stored for model version {version_id!r}",
                         column="version",
                         fix="choose among: " + ", ".join(sorted({k.version_id for k in
                                                                 index_keys(store)})))
    if version_id is None:
        for orphan in _saved_keys(store) - set(keys):
            shutil.rmtree(orphan.directory(store), ignore_errors=True)
    return [build_index(store, k, exact_threshold=exact_threshold) for k in keys]


def _saved_keys(store: Store) -> set[IndexKey]:
    root = store.artifacts_dir / "indexes"
    if not root.is_dir():
        return set()
    return {IndexKey(v.name, k.name) for v in root.iterdir() if v.is_dir()
            for k in v.iterdir() if k.is_dir() and not k.name.startswith(".")}


# ---------------------------------------------------------------------- check
def check_indexes(store: Store, *, deep: bool = True) -> list[str]:
    """Every disagreement between the saved indexes and the store's rows, one line each
    (empty when consistent). An index not built yet is not a problem (built on first use).

    Ids are always compared with the store's rows, and so are the vectors the store holds
    (embeddings, slide means). A ``gsl`` index's vectors exist only through its MSRL model
    (torch): they are recomputed and compared only when ``deep``; otherwise its ids are
    compared with the version's reference patients, read without the model."""
    problems: list[str] = []
    known = set(index_keys(store))
    patients = {str(p) for p in store.patients()["patient_id"]}
    for key in sorted(_saved_keys(store), key=str):
        if key not in known:
            problems.append(f"index {key}: no embeddings rows for it in the store (orphan); "
                            "run `casegraph index rebuild`")
            continue
        problems.extend(_check_index(store, key, patients, deep))
    return problems


def _check_index(store: Store, key: IndexKey, patients: set[str], deep: bool) -> list[str]:
    fix = f"run `casegraph index rebuild --version {key.version_id}`"
    try:
        loaded = open_index(store, key, build=False)
    except StoreError as exc:
        return [f"index {key}: {exc}"]
    problems: list[str] = []
    indexed = set(loaded.index.ids())
    unknown = sorted(indexed - patients)
    if unknown:
        problems.append(f"index {key}: {len(unknown)} patients not in the patients table "
                        f"(e.g. {unknown[0]}); {fix}")
    vectors: FloatArray | None = None
    try:
        if key.kind == msrl_adapter.GSL_KIND and not deep:
            ids = msrl_adapter.reference_ids(store, key.version_id)
        else:
            ids, vectors = source_embeddings(store, key)
    except (StoreError, OSError, KeyError, ValueError) as exc:
        return [*problems, f"index {key}: {exc}"]
    missing = sorted(set(ids) - indexed)
    if missing:
        problems.append(f"index {key}: {len(missing)} patients with embeddings are not "
                        f"indexed (e.g. {missing[0]}); run `casegraph index sync` or {fix}")
    stale = sorted(indexed - set(ids) - set(unknown))
    if stale:
        problems.append(f"index {key}: {len(stale)} indexed patients have no embedding any "
                        f"more (e.g. {stale[0]}); {fix}")
    if vectors is None or not ids:
        return problems
    if vectors.shape[1] != loaded.index.dim:
        return [*problems, f"index {key}: dim {loaded.index.dim} but the embeddings have "
                           f"dim {vectors.shape[1]}; {fix}"]
    return problems + _changed_vectors(loaded, ids, vectors, indexed, fix)


def _changed_vectors(loaded: LoadedIndex, ids: list[str], vectors: FloatArray,
                     indexed: set[str], fix: str) -> list[str]:
    both = [i for i, p in enumerate(ids) if p in indexed]
    if not both:
        return []
    expected = loaded.prepare_query(vectors[both])
    stored = loaded.index.vectors([ids[i] for i in both])
    changed = np.flatnonzero(np.abs(expected - stored).max(axis=1) > 1e-4)
    if changed.size == 0:
        return []
    return [f"index {loaded.key}: {changed.size} patients' vectors differ from the stored "
            f"embeddings (e.g. {ids[both[int(changed[0])]]}); {fix}"]
