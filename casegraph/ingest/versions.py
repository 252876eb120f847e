"""Model versions: the one owner of the model-version tables (no other layer writes them).

A *trained* version is one fitted model: its files (weights, config; written by the model
into the version's folder), the patients it was fitted on, and for stored patients its
prediction (risk, survival curve), embeddings and — for graph models — top-K neighbours
and buffer. A *derived* version (``parent_id`` set) is what ``casegraph attach`` writes:
the same weights, plus rows for patients its parent had not seen. Rows are *deltas*: a
derived version holds only its own new predictions, embeddings and neighbour lists, and a
read with ``own_only=False`` (the default) walks the lineage (the version, its parent,
... the trained root), so a parent stays byte-identical when a child is written.
Buffers are the exception: every version stores its whole buffer (it is small, and a
refresh replaces members).

Tables (all in ``store.duckdb``):

- ``model_versions``: version_id, model, cohort, created_at, config, metrics,
  artifact_dir (folder relative to the store root), parent_id, batches (ingest batch ids
  whose patients this version's own rows cover), counts, bin_edges;
- ``model_fitted_patients``: version_id, patient_id (the training patients);
- ``model_predictions``: version_id, patient_id, risk, survival (DOUBLE[], S(t) at the
  end of each bin of ``bin_edges``; NULL for risk-only models), inferred (the patient's
  genomics were not given and the model inferred them);
- ``model_neighbours``: version_id, patient_id, neighbour_id, rank, weight;
- ``model_buffer``: version_id, position (0 = oldest), patient_id;
- ``patient_embeddings``: version_id, kind, file (Parquet of patient_id + vector), dim, n.

Writes happen in :meth:`ModelVersions.create`: the model's files and the embedding
Parquet files first, under the version's fresh folder, then every row in one
transaction. A killed process leaves at worst an unreferenced folder.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from casegraph.errors import StoreError, UnknownNameError
from casegraph.faults import crash_point
from casegraph.ingest.parquet_files import write_parquet_atomic

if TYPE_CHECKING:
    from casegraph.ingest.store import Store

FloatArray = npt.NDArray[np.float32]

SCHEMA = """
CREATE TABLE IF NOT EXISTS model_fitted_patients (
    version_id VARCHAR NOT NULL, patient_id VARCHAR NOT NULL,
    PRIMARY KEY (version_id, patient_id));
CREATE TABLE IF NOT EXISTS model_predictions (
    version_id VARCHAR NOT NULL, patient_id VARCHAR NOT NULL, risk DOUBLE NOT NULL,
    survival DOUBLE[], inferred BOOLEAN NOT NULL, PRIMARY KEY (version_id, patient_id));
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS parent_id VARCHAR;
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS batches JSON;
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS counts JSON;
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS bin_edges JSON;
"""

_VERSION_COLUMNS = ("version_id, model, cohort, created_at, config, metrics, artifact_dir, "
                    "parent_id, batches, counts, bin_edges")


@dataclass(frozen=True)
class ModelVersion:
    """One row of ``model_versions``, decoded."""

    version_id: str
    model: str
    cohort: str | None
    created_at: datetime
    config: dict[str, Any]
    metrics: dict[str, Any]
    artifact_dir: str | None
    parent_id: str | None
    batches: list[str]
    counts: dict[str, Any]
    bin_edges: list[float] | None

    @property
    def is_derived(self) -> bool:
        return self.parent_id is not None


@dataclass
class PredictionRows:
    """Predictions of n patients: ``risk`` (n,), ``survival`` (n, n_bins) or None,
    ``inferred`` (n,) bool or None (= all False)."""

    patient_ids: list[str]
    risk: npt.NDArray[np.float64]
    survival: npt.NDArray[np.float64] | None = None
    inferred: npt.NDArray[np.bool_] | None = None

    def frame(self, version_id: str) -> pd.DataFrame:
        n = len(self.patient_ids)
        risk = np.asarray(self.risk, dtype=np.float64).reshape(-1)
        if len(risk) != n:
            raise ValueError(f"{len(risk)} risks for {n} patients")
        if not np.isfinite(risk).all():
            bad = self.patient_ids[int(np.flatnonzero(~np.isfinite(risk))[0])]
            raise StoreError(f"model version {version_id}: non-finite risk for patient {bad}")
        survival: list[list[float] | None] = (
            [None] * n if self.survival is None
            else [list(map(float, row)) for row in np.asarray(self.survival, np.float64)])
        inferred = (np.zeros(n, dtype=bool) if self.inferred is None
                    else np.asarray(self.inferred, dtype=bool))
        return pd.DataFrame({"version_id": version_id, "patient_id": self.patient_ids,
                             "risk": risk, "survival": survival, "inferred": inferred})


@dataclass
class NewVersion:
    """Everything one version writes. ``neighbours`` columns: patient_id, neighbour_id,
    rank, weight. ``embeddings``: kind -> (patient ids, (n, d) float32). ``batches``: None
    = every ingest batch in the store (a trained version sees the whole store)."""

    model: str
    cohort: str | None
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    batches: list[str] | None = None
    fitted_on: Sequence[str] = ()
    predictions: PredictionRows | None = None
    bin_edges: Sequence[float] | None = None
    embeddings: dict[str, tuple[list[str], FloatArray]] = field(default_factory=dict)
    neighbours: pd.DataFrame | None = None
    buffer: Sequence[str] | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    version_id: str | None = None  # default: <model>-<cohort|all>-<UTC stamp>-<6 hex>


def new_version_id(model: str, cohort: str | None) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{model}-{cohort or 'all'}-{stamp}-{uuid.uuid4().hex[:6]}"


def embedding_table(ids: Sequence[str], vectors: npt.ArrayLike) -> pa.Table:
    arr = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if arr.ndim != 2 or arr.shape[0] != len(ids):
        raise ValueError(f"embeddings of shape {arr.shape} for {len(ids)} patients")
    flat = pa.array(arr.reshape(-1), type=pa.float32())
    return pa.table({
        "patient_id": pa.array(list(ids), type=pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, arr.shape[1]),
    })


class ModelVersions:
    """The model-version API of one open store (``store.versions``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # ------------------------------------------------------------------ write
    def create(self, new: NewVersion,
               write_files: Callable[[Path], None] | None = None) -> str:
        """Write ``new`` (files first, then rows in one transaction); its version id.

        ``write_files(folder)`` lets the model write its own files (weights, config) into
        the version's fresh folder before any row exists.
        """
        store = self._store
        if new.parent_id is not None:
            self.get(new.parent_id)
        version_id = new.version_id or new_version_id(new.model, new.cohort)
        folder = store.artifacts_dir / version_id
        folder.mkdir(parents=True, exist_ok=False)
        if write_files is not None:
            write_files(folder)
        files = {kind: write_parquet_atomic(embedding_table(ids, vectors), folder,
                                            f"embeddings-{kind}")
                 for kind, (ids, vectors) in new.embeddings.items()}
        rel = folder.relative_to(store.root).as_posix()
        batches = new.batches if new.batches is not None else self._all_batches()
        predictions = None if new.predictions is None else new.predictions.frame(version_id)
        counts = {**new.counts, "fitted_on": len(new.fitted_on),
                  "predictions": 0 if predictions is None else len(predictions),
                  "neighbours": 0 if new.neighbours is None else len(new.neighbours),
                  "buffer": 0 if new.buffer is None else len(new.buffer)}
        with store.transaction() as con:
            con.execute(
                f"INSERT INTO model_versions ({_VERSION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [version_id, new.model, new.cohort, datetime.now(UTC).replace(tzinfo=None),
                 json.dumps(new.config), json.dumps(new.metrics), rel, new.parent_id,
                 json.dumps(batches), json.dumps(counts),
                 None if new.bin_edges is None
                 else json.dumps([float(e) for e in new.bin_edges])])
            if new.fitted_on:
                con.executemany("INSERT INTO model_fitted_patients VALUES (?, ?)",
                                [[version_id, p] for p in new.fitted_on])
            if predictions is not None and len(predictions):
                self._insert_frame(con, "model_predictions", predictions,
                                   "version_id, patient_id, risk, survival, inferred")
            if new.neighbours is not None and len(new.neighbours):
                frame = new.neighbours.assign(version_id=version_id)[
                    ["version_id", "patient_id", "neighbour_id", "rank", "weight"]]
                self._insert_frame(con, "model_neighbours", frame,
                                   "version_id, patient_id, neighbour_id, rank, weight")
            if new.buffer:
                con.executemany("INSERT INTO model_buffer VALUES (?, ?, ?)",
                                [[version_id, i, p] for i, p in enumerate(new.buffer)])
            for kind, name in files.items():
                ids, vectors = new.embeddings[kind]
                con.execute("INSERT INTO patient_embeddings VALUES (?, ?, ?, ?, ?)",
                            [version_id, kind, f"{rel}/{name}", int(np.shape(vectors)[1]),
                             len(ids)])
            crash_point("attach.in_transaction" if new.parent_id else
                        "version.in_transaction")
        return version_id

    @staticmethod
    def _insert_frame(con: Any, table: str, frame: pd.DataFrame, columns: str) -> None:
        con.register("_version_rows", frame)
        try:
            con.execute(f"INSERT INTO {table} SELECT {columns} FROM _version_rows")  # our names
        finally:
            con.unregister("_version_rows")

    def _all_batches(self) -> list[str]:
        rows = self._store.con.execute(
            "SELECT batch_id FROM ingest_batches ORDER BY started_at, batch_id").fetchall()
        return [str(r[0]) for r in rows]

    # ------------------------------------------------------------------ versions
    def all(self, model: str | None = None) -> list[ModelVersion]:
        """Every version (of ``model``), oldest first."""
        sql = f"SELECT {_VERSION_COLUMNS} FROM model_versions"
        params: list[Any] = []
        if model is not None:
            sql += " WHERE model = ?"
            params.append(model)
        rows = self._store.con.execute(sql + " ORDER BY created_at, version_id",
                                       params).fetchall()
        return [_decode(row) for row in rows]

    def ids(self) -> list[str]:
        return [v.version_id for v in self.all()]

    def get(self, version_id: str) -> ModelVersion:
        rows = self._store.con.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE version_id = ?",
            [version_id]).fetchall()
        if not rows:
            raise UnknownNameError("model version", version_id, self.ids())
        return _decode(rows[0])

    def exists(self, version_id: str) -> bool:
        return bool(self._store.con.execute(
            "SELECT count(*) FROM model_versions WHERE version_id = ?",
            [version_id]).fetchall()[0][0])

    def latest(self, model: str | None = None) -> str | None:
        versions = self.all(model)
        return versions[-1].version_id if versions else None

    def lineage(self, version_id: str) -> list[str]:
        """``version_id``, its parent, ..., the trained root."""
        chain = [version_id]
        parent = self.get(version_id).parent_id
        while parent is not None:
            if parent in chain:
                raise StoreError(f"model version lineage loops at {parent}")
            chain.append(parent)
            parent = self.get(parent).parent_id
        return chain

    def root(self, version_id: str) -> ModelVersion:
        """The trained version whose files (weights) ``version_id`` uses."""
        return self.get(self.lineage(version_id)[-1])

    def children(self, version_id: str) -> list[str]:
        rows = self._store.con.execute(
            "SELECT version_id FROM model_versions WHERE parent_id = ? "
            "ORDER BY created_at, version_id", [version_id]).fetchall()
        return [str(r[0]) for r in rows]

    def folder(self, version_id: str) -> Path:
        """The folder holding this version's own files."""
        version = self.get(version_id)
        if version.artifact_dir is None:
            raise StoreError(f"model version {version_id} has no files")
        return self._store.root / version.artifact_dir

    # ------------------------------------------------------------------ rows
    def _scope(self, version_id: str, own_only: bool) -> list[str]:
        return [version_id] if own_only else self.lineage(version_id)

    def _rows(self, sql: str, versions: list[str], extra: Sequence[Any] = ()) -> pd.DataFrame:
        """``sql`` with every ``{versions}`` a list of marks for ``versions``; ``extra``
        parameters follow those of each occurrence in order."""
        marks = ", ".join("?" for _ in versions)
        return self._store.query_df(sql.format(versions=marks), [*versions, *extra])

    def fitted_on(self, version_id: str) -> list[str]:
        """The patients the (root) model was fitted on, sorted."""
        frame = self._rows("SELECT DISTINCT patient_id FROM model_fitted_patients "
                           "WHERE version_id IN ({versions}) ORDER BY patient_id",
                           self.lineage(version_id))
        return [str(p) for p in frame["patient_id"]]

    def predictions(self, version_id: str, own_only: bool = False) -> pd.DataFrame:
        """Columns patient_id, risk, survival (list or None), inferred, version_id (the
        lineage member that wrote the row), sorted by patient id."""
        frame = self._rows("SELECT patient_id, risk, survival, inferred, version_id "
                           "FROM model_predictions WHERE version_id IN ({versions}) "
                           "ORDER BY patient_id", self._scope(version_id, own_only))
        frame["survival"] = [None if s is None or (isinstance(s, float) and np.isnan(s))
                             else [float(x) for x in s] for s in frame["survival"]]
        return frame

    def neighbours(self, version_id: str, own_only: bool = False) -> pd.DataFrame:
        """Columns patient_id, neighbour_id, rank, weight (top-K per patient)."""
        return self._rows("SELECT patient_id, neighbour_id, rank, weight FROM model_neighbours"
                          " WHERE version_id IN ({versions}) ORDER BY patient_id, rank",
                          self._scope(version_id, own_only))

    def buffer(self, version_id: str) -> list[str]:
        """Buffer patient ids in FIFO order (position 0 = oldest); the version's own."""
        rows = self._store.con.execute(
            "SELECT patient_id FROM model_buffer WHERE version_id = ? ORDER BY position",
            [version_id]).fetchall()
        return [str(r[0]) for r in rows]

    def embedding_kinds(self, version_id: str) -> list[str]:
        frame = self._rows("SELECT DISTINCT kind FROM patient_embeddings "
                           "WHERE version_id IN ({versions}) ORDER BY kind",
                           self.lineage(version_id))
        return [str(k) for k in frame["kind"]]

    def embedding_files(self, version_id: str, kind: str, own_only: bool = False
                        ) -> list[tuple[str, str, int]]:
        """(version id, file relative to the store root, dim) along the lineage, newest
        first."""
        scope = self._scope(version_id, own_only)
        frame = self._rows("SELECT version_id, file, dim FROM patient_embeddings "
                           "WHERE version_id IN ({versions}) AND kind = ?", scope, [kind])
        order = {v: i for i, v in enumerate(scope)}
        rows = sorted(zip(frame["version_id"], frame["file"], frame["dim"], strict=True),
                      key=lambda r: order[str(r[0])])
        return [(str(v), str(f), int(d)) for v, f, d in rows]

    def embeddings(self, version_id: str, kind: str, own_only: bool = False
                   ) -> tuple[list[str], FloatArray]:
        """(patient ids, (n, d) vectors) of one kind; a patient's newest row wins."""
        files = self.embedding_files(version_id, kind, own_only)
        if not files:
            raise StoreError(f"no {kind!r} embeddings for model version {version_id!r}")
        seen: set[str] = set()
        ids: list[str] = []
        parts: list[FloatArray] = []
        for _, file, dim in files:
            frame = pd.read_parquet(self._store.root / file)
            keep = [i for i, p in enumerate(frame["patient_id"]) if str(p) not in seen]
            vectors = (np.stack([np.asarray(frame["vector"].iloc[i], dtype=np.float32)
                                 for i in keep]) if keep else np.zeros((0, dim), np.float32))
            new_ids = [str(frame["patient_id"].iloc[i]) for i in keep]
            seen.update(new_ids)
            ids += new_ids
            parts.append(vectors)
        return ids, np.concatenate(parts, axis=0)

    def covered_patients(self, version_id: str) -> set[str]:
        """Patients the version has seen: fitted on, or predicted along its lineage."""
        scope = self.lineage(version_id)
        frame = self._rows("SELECT patient_id FROM model_fitted_patients WHERE version_id IN "
                           "({versions}) UNION SELECT patient_id FROM model_predictions "
                           "WHERE version_id IN ({versions})", scope, scope)
        return {str(p) for p in frame["patient_id"]}

    def unseen_patients(self, version_id: str, cohort: str | None = None) -> list[str]:
        """Store patients (of ``cohort``, or all) the version has not seen, sorted."""
        covered = self.covered_patients(version_id)
        return [str(p) for p in self._store.patients(cohort)["patient_id"]
                if str(p) not in covered]

    def batches_since(self, version_id: str) -> list[str]:
        """Ingest batches none of the lineage's versions covers, oldest first."""
        covered: set[str] = set()
        for member in self.lineage(version_id):
            covered.update(self.get(member).batches)
        return [b for b in self._all_batches() if b not in covered]


def _decode(row: Sequence[Any]) -> ModelVersion:
    (version_id, model, cohort, created_at, config, metrics, artifact_dir, parent_id,
     batches, counts, edges) = row
    return ModelVersion(
        version_id=str(version_id), model=str(model),
        cohort=None if cohort is None else str(cohort),
        created_at=created_at, config=_json(config, {}), metrics=_json(metrics, {}),
        artifact_dir=None if artifact_dir is None else str(artifact_dir),
        parent_id=None if parent_id is None else str(parent_id),
        batches=list(_json(batches, [])), counts=_json(counts, {}),
        bin_edges=None if edges is None else [float(e) for e in _json(edges, [])])


def _json(value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value
