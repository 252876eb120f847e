"""The embedded store: one directory = one DuckDB file + Parquet files + artifacts.

Layout of a store directory::

    store.duckdb        tables (see SCHEMA)
    genomics/*.parquet  genomic values, one wide file (patient_id + feature columns) a batch
    summaries/*.parquet per-slide summaries (mean embedding, k-means centres), one file a batch
    artifacts/          model weights, FAISS indexes (written by later layers)

Every write happens inside one DuckDB transaction (:meth:`Store.transaction`). Parquet
files are written under fresh names *before* the commit that references them, so a
killed process leaves at worst an unreferenced file (``casegraph doctor`` lists those),
never a half-visible batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import numpy.typing as npt
import pandas as pd

from casegraph.errors import StoreError
from casegraph.ingest.parquet_files import genomic_file_columns, read_genomic_file

if TYPE_CHECKING:
    from casegraph.ingest.cv_results import CVResultTables
    from casegraph.ingest.outcomes import Outcomes
    from casegraph.ingest.versions import ModelVersions

DB_NAME = "store.duckdb"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS ingest_batches (
    batch_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP,
    casegraph_version VARCHAR, kind VARCHAR, inputs JSON, counts JSON, updates JSON);
CREATE TABLE IF NOT EXISTS cohorts (
    name VARCHAR PRIMARY KEY, source VARCHAR, batch_id VARCHAR);
CREATE TABLE IF NOT EXISTS patients (
    patient_id VARCHAR PRIMARY KEY, cohort VARCHAR NOT NULL, time DOUBLE NOT NULL,
    event BOOLEAN NOT NULL, source_id VARCHAR, attributes JSON, batch_id VARCHAR);
CREATE TABLE IF NOT EXISTS slides (
    slide_id VARCHAR PRIMARY KEY, patient_id VARCHAR NOT NULL, cohort VARCHAR,
    feature_path VARCHAR, sha256 VARCHAR, n_patches INTEGER, feature_dim INTEGER,
    encoder VARCHAR, file_size BIGINT, file_mtime DOUBLE, batch_id VARCHAR);
CREATE TABLE IF NOT EXISTS features (
    feature_id INTEGER PRIMARY KEY, name VARCHAR UNIQUE NOT NULL, gene VARCHAR NOT NULL,
    modality VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS genomic_rows (
    patient_id VARCHAR PRIMARY KEY, file VARCHAR NOT NULL, row_index INTEGER NOT NULL,
    batch_id VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS gene_groups (
    group_set VARCHAR NOT NULL, group_name VARCHAR NOT NULL, gene VARCHAR NOT NULL,
    position INTEGER NOT NULL, PRIMARY KEY (group_set, group_name, gene));
CREATE TABLE IF NOT EXISTS splits (
    split_set VARCHAR NOT NULL, fold INTEGER NOT NULL, patient_id VARCHAR NOT NULL,
    role VARCHAR NOT NULL, PRIMARY KEY (split_set, fold, patient_id));
CREATE TABLE IF NOT EXISTS slide_summaries (
    slide_id VARCHAR NOT NULL, sha256 VARCHAR NOT NULL, k INTEGER NOT NULL,
    seed INTEGER NOT NULL, file VARCHAR NOT NULL, row_index INTEGER NOT NULL,
    PRIMARY KEY (slide_id, sha256, k, seed));
CREATE TABLE IF NOT EXISTS model_versions (
    version_id VARCHAR PRIMARY KEY, model VARCHAR NOT NULL, cohort VARCHAR,
    created_at TIMESTAMP NOT NULL, config JSON, metrics JSON, artifact_dir VARCHAR);
CREATE TABLE IF NOT EXISTS model_buffer (
    version_id VARCHAR NOT NULL, position INTEGER NOT NULL, patient_id VARCHAR NOT NULL,
    PRIMARY KEY (version_id, position));
CREATE TABLE IF NOT EXISTS model_neighbours (
    version_id VARCHAR NOT NULL, patient_id VARCHAR NOT NULL, neighbour_id VARCHAR NOT NULL,
    rank INTEGER NOT NULL, weight DOUBLE NOT NULL,
    PRIMARY KEY (version_id, patient_id, neighbour_id));
CREATE TABLE IF NOT EXISTS patient_embeddings (
    version_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, file VARCHAR NOT NULL,
    dim INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (version_id, kind));
"""

# Added to slides after the first release (old stores gain them on their next read-write
# open; a read-only open of an old store or snapshot reads them as absent). The digest
# column keeps its first name, ``sha256``, so that older snapshots and replicas read
# alike; ``hash_algorithm`` says what it holds (old rows: sha256).
SLIDE_COLUMNS_ADDED = """
ALTER TABLE slides ADD COLUMN IF NOT EXISTS hash_algorithm VARCHAR DEFAULT 'sha256';
ALTER TABLE slides ADD COLUMN IF NOT EXISTS provenance JSON;
"""


class Store:
    """An open store directory. Use :meth:`open` (creates the directory when asked)."""

    def __init__(self, root: Path, con: duckdb.DuckDBPyConnection, read_only: bool) -> None:
        self.root = root
        self.con = con
        self.read_only = read_only
        self._in_transaction = False
        self._committed = False  # a commit since opening: close() publishes a snapshot

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, root: str | Path, *, create: bool = True, read_only: bool = False) -> Store:
        root = Path(root)
        db = root / DB_NAME
        if not db.exists():
            if not create or read_only:
                raise StoreError(
                    f"no casegraph store at {root} (missing {DB_NAME}); "
                    "run `casegraph ingest` or `casegraph demo` to create one"
                )
            root.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(db), read_only=read_only)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open store {db}: {exc}") from None
        store = cls(root, con, read_only)
        if not read_only:
            store._migrate()
        return store

    @classmethod
    def open_snapshot(cls, root: str | Path, snapshot: str | Path) -> Store:
        """A published snapshot file (:mod:`casegraph.ingest.publish`), read-only, as the
        store at ``root`` (relative paths in its rows resolve against ``root``)."""
        try:
            con = duckdb.connect(str(snapshot), read_only=True)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open snapshot {snapshot}: {exc}") from None
        return cls(Path(root), con, read_only=True)

    def close(self) -> None:
        """Close the connection; a writer that committed publishes a snapshot first."""
        if self._committed and not self.read_only:
            self._committed = False
            from casegraph.ingest.publish import publish_snapshot

            try:
                publish_snapshot(self)
            except (StoreError, duckdb.Error) as exc:  # the commits stand; readers keep
                # the older snapshot
                logging.getLogger(__name__).warning("%s", exc)
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        from casegraph.ingest.cv_results import SCHEMA as CV_RESULTS_SCHEMA
        from casegraph.ingest.outcomes import SCHEMA as OUTCOMES_SCHEMA
        from casegraph.ingest.versions import SCHEMA as VERSION_SCHEMA

        self.con.execute(SCHEMA)
        self.con.execute(SLIDE_COLUMNS_ADDED)
        self.con.execute(VERSION_SCHEMA)
        self.con.execute(CV_RESULTS_SCHEMA)
        self.con.execute(OUTCOMES_SCHEMA)
        self.con.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
            [str(SCHEMA_VERSION)],
        )

    def ensure_schema(self, ddl: str) -> None:
        """Let a later layer add its tables (``CREATE TABLE IF NOT EXISTS ...``)."""
        if not self.read_only:
            self.con.execute(ddl)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing block; nested use joins the outer transaction."""
        if self.read_only:
            raise StoreError(f"store {self.root} is open read-only")
        if self._in_transaction:
            yield self.con
            return
        self.con.execute("BEGIN TRANSACTION")
        self._in_transaction = True
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")
            self._committed = True
        finally:
            self._in_transaction = False

    @property
    def versions(self) -> ModelVersions:
        """The model-version tables (:mod:`casegraph.ingest.versions`)."""
        from casegraph.ingest.versions import ModelVersions

        return ModelVersions(self)

    @property
    def cv_results(self) -> CVResultTables:
        """The cross-validation result tables (:mod:`casegraph.ingest.cv_results`)."""
        from casegraph.ingest.cv_results import CVResultTables

        return CVResultTables(self)

    @property
    def outcomes(self) -> Outcomes:
        """The endpoint table (:mod:`casegraph.ingest.outcomes`)."""
        from casegraph.ingest.outcomes import Outcomes

        return Outcomes(self)

    # ----------------------------------------------------------------- paths
    @property
    def summaries_dir(self) -> Path:
        return self.root / "summaries"

    @property
    def genomics_dir(self) -> Path:
        return self.root / "genomics"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    # ----------------------------------------------------------------- reads
    def query_df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        return self.con.execute(sql, params or []).df()

    def cohorts(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT name FROM cohorts ORDER BY name").fetchall()]

    def patients(self, cohort: str | None = None) -> pd.DataFrame:
        """Columns: patient_id, cohort, time, event, source_id, attributes (dict)."""
        sql = "SELECT patient_id, cohort, time, event, source_id, attributes FROM patients"
        df = (
            self.query_df(sql + " WHERE cohort = ? ORDER BY patient_id", [cohort])
            if cohort
            else self.query_df(sql + " ORDER BY patient_id")
        )
        df["attributes"] = [json.loads(a) if isinstance(a, str) else {} for a in df["attributes"]]
        return df

    def slides(self, cohort: str | None = None) -> pd.DataFrame:
        sql = (
            "SELECT slide_id, patient_id, cohort, feature_path, sha256, n_patches, feature_dim,"
            " encoder FROM slides"
        )
        if cohort:
            return self.query_df(sql + " WHERE cohort = ? ORDER BY slide_id", [cohort])
        return self.query_df(sql + " ORDER BY slide_id")

    def feature_table(self) -> pd.DataFrame:
        return self.query_df("SELECT feature_id, name, gene, modality FROM features ORDER BY feature_id")

    def genomic_matrix(
        self, patient_ids: Sequence[str], feature_names: Sequence[str] | None = None
    ) -> tuple[npt.NDArray[np.float32], list[str], npt.NDArray[np.bool_]]:
        """Dense (n_patients, n_features) float32 matrix in the order given.

        Returns (matrix, feature names, present) where ``present[i, j]`` is False for values
        the store does not hold (they are 0 in the matrix). Without ``feature_names``, every
        feature any of these patients has, in feature-id order.
        """
        ids = list(patient_ids)
        refs = self._genomic_refs(ids)
        features = self.feature_table()
        if feature_names is None:
            used: set[str] = set()
            for file in {f for f, _ in refs.values()}:
                used.update(genomic_file_columns(self.genomics_dir / file))
            features = features[features["name"].isin(used)]
            names = list(features["name"])
        else:
            unknown = sorted(set(feature_names) - set(features["name"]))
            if unknown:
                raise StoreError(f"features not in the store: {unknown[:5]}")
            names = list(feature_names)
        col_of = {n: j for j, n in enumerate(names)}
        matrix = np.zeros((len(ids), len(names)), dtype=np.float32)
        present = np.zeros(matrix.shape, dtype=bool)
        by_file: dict[str, list[tuple[int, int]]] = {}
        for pos, pid in enumerate(ids):
            if pid in refs:
                file, row = refs[pid]
                by_file.setdefault(file, []).append((pos, row))
        for file, pairs in by_file.items():
            cols, values = read_genomic_file(self.genomics_dir / file, names)
            positions = np.array([p for p, _ in pairs], dtype=np.int64)
            rows = np.array([r for _, r in pairs], dtype=np.int64)
            target = np.array([col_of[c] for c in cols], dtype=np.int64)
            block = values[rows]
            ok = np.isfinite(block)
            matrix[np.ix_(positions, target)] = np.where(ok, block, 0.0)
            present[np.ix_(positions, target)] = ok
        return matrix, names, present

    def _genomic_refs(self, ids: list[str]) -> dict[str, tuple[str, int]]:
        frame = pd.DataFrame({"patient_id": ids})
        self.con.register("_wanted_patients", frame)
        try:
            rows = self.con.execute(
                "SELECT g.patient_id, g.file, g.row_index FROM genomic_rows g "
                "JOIN _wanted_patients w USING (patient_id)"
            ).fetchall()
        finally:
            self.con.unregister("_wanted_patients")
        return {pid: (file, int(row)) for pid, file, row in rows}

    def gene_group_sets(self) -> list[str]:
        rows = self.con.execute("SELECT DISTINCT group_set FROM gene_groups ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def gene_groups(self, group_set: str) -> dict[str, list[str]]:
        """Group name -> genes, groups in the order of the signature file."""
        rows = self.con.execute(
            "SELECT group_name, gene, position FROM gene_groups WHERE group_set = ? "
            "ORDER BY position, gene",
            [group_set],
        ).fetchall()
        groups: dict[str, list[str]] = {}
        for name, gene, _ in rows:
            groups.setdefault(name, []).append(gene)
        return groups

    def split_sets(self) -> list[str]:
        rows = self.con.execute("SELECT DISTINCT split_set FROM splits ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def splits(self, split_set: str) -> dict[int, tuple[list[str], list[str]]]:
        """fold -> (train patient ids, evaluation patient ids), both sorted."""
        rows = self.con.execute(
            "SELECT fold, role, patient_id FROM splits WHERE split_set = ? ORDER BY fold, patient_id",
            [split_set],
        ).fetchall()
        folds: dict[int, tuple[list[str], list[str]]] = {}
        for fold, role, pid in rows:
            train, val = folds.setdefault(int(fold), ([], []))
            (train if role == "train" else val).append(pid)
        return folds

    def slide_summaries(
        self, slide_ids: Sequence[str], k: int, seed: int
    ) -> dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
        """slide_id -> (mean embedding (D,), k-means centres (k, D)) for the current sha256."""
        frame = pd.DataFrame({"slide_id": list(slide_ids)})
        self.con.register("_wanted_slides", frame)
        try:
            refs = self.con.execute(
                "SELECT s.slide_id, m.file, m.row_index FROM slides s "
                "JOIN _wanted_slides w USING (slide_id) "
                "JOIN slide_summaries m ON m.slide_id = s.slide_id AND m.sha256 = s.sha256 "
                "WHERE m.k = ? AND m.seed = ?",
                [k, seed],
            ).fetchall()
        finally:
            self.con.unregister("_wanted_slides")
        from casegraph.ingest.summaries import read_summary_rows

        return read_summary_rows(self.summaries_dir, refs)

    def slide_coords(self, slide_id: str) -> npt.NDArray[np.int32] | None:
        """The slide's patch coords (N, 2) int32, in the row order of its bag's features,
        as registered for its current content; None when the bag had none, the slide has
        no bag, or it was registered before coords were kept."""
        rows = self.con.execute(
            "SELECT m.file, m.row_index FROM slides s JOIN slide_summaries m "
            "ON m.slide_id = s.slide_id AND m.sha256 = s.sha256 WHERE s.slide_id = ? "
            "ORDER BY m.file, m.row_index LIMIT 1", [slide_id]).fetchall()
        if not rows:
            return None
        from casegraph.ingest.summaries import read_coords

        return read_coords(self.summaries_dir, str(rows[0][0]), int(rows[0][1]), slide_id)

    def slide_provenance(self, slide_id: str) -> dict[str, object]:
        """The bag file's provenance attributes (TRIDENT/CLAM h5 attributes such as
        ``patch_size_level0``, ``patch_size``, ``level0_magnification``, encoder names);
        {} for an unknown slide, one without a bag or one registered before they were kept."""
        if not self._has_column("slides", "provenance"):
            return {}
        rows = self.con.execute("SELECT provenance FROM slides WHERE slide_id = ?",
                                [slide_id]).fetchall()
        if not rows or rows[0][0] is None:
            return {}
        value = json.loads(rows[0][0])
        return value if isinstance(value, dict) else {}

    def slide_hashes(self) -> list[tuple[str, str | None, str | None, str, int | None,
                                         float | None]]:
        """(slide_id, feature_path, digest, hash algorithm, file size, mtime) of every
        slide, sorted; the algorithm of a row from before algorithms were kept is sha256."""
        algorithm = ("coalesce(hash_algorithm, 'sha256')"
                     if self._has_column("slides", "hash_algorithm") else "'sha256'")
        rows = self.con.execute(
            f"SELECT slide_id, feature_path, sha256, {algorithm}, file_size, file_mtime "  # our SQL
            "FROM slides ORDER BY slide_id").fetchall()
        return [(str(r[0]), r[1], r[2], str(r[3]), r[4], r[5]) for r in rows]

    def _has_column(self, table: str, column: str) -> bool:
        return bool(self.con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = ? "
            "AND column_name = ?", [table, column]).fetchall()[0][0])

    def summary_setting(self) -> tuple[int, int] | None:
        """The (k, seed) most slides have summaries for, or None when there are none."""
        rows = self.con.execute(
            "SELECT k, seed FROM slide_summaries GROUP BY k, seed "
            "ORDER BY count(*) DESC, k, seed LIMIT 1").fetchall()
        return None if not rows else (int(rows[0][0]), int(rows[0][1]))

    def model_versions(self, model: str | None = None) -> pd.DataFrame:
        sql = "SELECT * FROM model_versions"
        if model:
            return self.query_df(sql + " WHERE model = ? ORDER BY created_at", [model])
        return self.query_df(sql + " ORDER BY created_at")

    def latest_model_version(self, model: str) -> str | None:
        rows = self.con.execute(
            "SELECT version_id FROM model_versions WHERE model = ? ORDER BY created_at DESC LIMIT 1",
            [model],
        ).fetchall()
        return str(rows[0][0]) if rows else None

    def model_neighbours(self, version_id: str) -> pd.DataFrame:
        """Columns: patient_id, neighbour_id, rank, weight (top-K per patient, along the
        version's lineage)."""
        return self.versions.neighbours(version_id)

    def model_buffer(self, version_id: str) -> list[str]:
        """Buffer patient ids in FIFO order (position 0 = oldest)."""
        return self.versions.buffer(version_id)

    def batches(self) -> pd.DataFrame:
        return self.query_df("SELECT * FROM ingest_batches ORDER BY started_at")

    def counts(self) -> dict[str, int]:
        tables = ["cohorts", "patients", "slides", "features", "genomic_rows", "gene_groups",
                  "splits", "slide_summaries", "ingest_batches", "model_versions",
                  "model_neighbours", "model_predictions"]
        out = {}
        for t in tables:
            out[t] = int(self.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0])  # our names
        return out

    def cohort_sources(self) -> dict[str, str | None]:
        """Cohort name -> the source it was ingested from (None when not recorded)."""
        rows = self.con.execute("SELECT name, source FROM cohorts ORDER BY name").fetchall()
        return {str(n): None if s is None else str(s) for n, s in rows}

    # ------------------------------------------------ reads for the graph sync
    def _of_patients(self, sql: str, patient_ids: Sequence[str] | None) -> pd.DataFrame:
        """``sql`` (our own, over a table aliased ``t``) for every patient or only these."""
        if patient_ids is None:
            return self.query_df(sql.format(join=""))
        self.con.register("_sync_patients", pd.DataFrame({"patient_id": list(patient_ids)},
                                                         dtype=object))
        try:
            return self.query_df(sql.format(join="JOIN _sync_patients w USING (patient_id)"))
        finally:
            self.con.unregister("_sync_patients")

    def patient_outcomes(self, patient_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Columns patient_id, cohort, time, event (of every patient, or these), sorted."""
        return self._of_patients("SELECT t.patient_id, t.cohort, t.time, t.event FROM patients "
                                 "t {join} ORDER BY t.patient_id", patient_ids)

    def patient_ids_with_genomics(self, patient_ids: Sequence[str] | None = None) -> list[str]:
        """Patients (all, or among these) holding a genomic row, sorted."""
        frame = self._of_patients("SELECT t.patient_id FROM genomic_rows t {join} "
                                  "ORDER BY t.patient_id", patient_ids)
        return [str(p) for p in frame["patient_id"]]

    def slide_patient_ids(self, patient_ids: Sequence[str] | None = None) -> list[str]:
        """Patients (all, or among these) with at least one slide, sorted."""
        frame = self._of_patients("SELECT DISTINCT t.patient_id FROM slides t {join} "
                                  "ORDER BY t.patient_id", patient_ids)
        return [str(p) for p in frame["patient_id"]]

    def split_rows(self, patient_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Columns patient_id, split_set, fold, role (of every patient, or these)."""
        return self._of_patients("SELECT t.patient_id, t.split_set, t.fold, t.role FROM splits "
                                 "t {join} ORDER BY ALL", patient_ids)

    def splits_digest(self) -> str:
        """A digest of every split row: changes whenever any split membership does."""
        rows = self.con.execute("SELECT count(*), coalesce(sum(hash(split_set, fold, patient_id, "
                                "role)), 0) FROM splits").fetchall()
        return f"{rows[0][0]}-{rows[0][1]}"

    def patient_batches(self) -> pd.DataFrame:
        """Columns patient_id, batch_id: each ingest batch whose rows (patient, genomics,
        slides) touch the patient; '' for rows without a batch id."""
        return self.query_df(
            "SELECT DISTINCT patient_id, coalesce(batch_id, '') AS batch_id FROM ("
            "SELECT patient_id, batch_id FROM patients UNION ALL "
            "SELECT patient_id, batch_id FROM genomic_rows UNION ALL "
            "SELECT patient_id, batch_id FROM slides)")

    def own_neighbour_counts(self) -> dict[str, int]:
        """Version id -> its own neighbour rows (not its lineage's)."""
        rows = self.con.execute("SELECT version_id, count(*) FROM model_neighbours "
                                "GROUP BY version_id").fetchall()
        return {str(v): int(n) for v, n in rows}
