"""Cross-validation results: the one owner of the ``cv_*`` tables (``store.cv_results``).

Tables (all in ``store.duckdb``):

- ``cv_runs``: run_id, model, cohort, split_set, selection, bins, seed, config (JSON),
  created_at;
- ``cv_fold_results``: run_id, fold, n_train, n_eval, the metric columns
  (:data:`METRIC_COLUMNS`; :data:`CLASS_METRIC_COLUMNS` for classification), seconds,
  selected_epoch, finished_at, note;
- ``cv_predictions``: run_id, fold, patient_id, risk, time, event, survival (DOUBLE[] or
  NULL);
- ``cv_version_links``: version_id, role (``method``: the run of the version's own model,
  options, cohort and folds; ``baseline``: the simplest WSI-only model under the same
  folds), run_id, linked_at: the runs ``casegraph versions track-record`` verified for a
  model version (docs/retrieval.md, *Track record*).

What a run or a fold result *means* (metrics, summaries, tables) is the models layer's
(:mod:`casegraph.models.results`); this module only stores and reads the rows. A store
opened read-only from a file that predates these tables reads as holding no runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from casegraph.ingest.store import Store

METRIC_COLUMNS = ("c_index", "c_index_uno", "mean_auc", "ibs")
CLASS_METRIC_COLUMNS = ("accuracy", "roc_auc", "macro_f1")  # classification runs' folds
ALL_METRIC_COLUMNS = METRIC_COLUMNS + CLASS_METRIC_COLUMNS
RUN_COLUMNS = ["run_id", "model", "cohort", "split_set", "selection", "bins", "seed",
               "config", "created_at"]
PREDICTION_COLUMNS = ["patient_id", "risk", "time", "event", "survival"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS cv_runs (
    run_id VARCHAR PRIMARY KEY, model VARCHAR NOT NULL, cohort VARCHAR NOT NULL,
    split_set VARCHAR NOT NULL, selection VARCHAR NOT NULL, bins VARCHAR NOT NULL,
    seed INTEGER NOT NULL, config JSON, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS cv_fold_results (
    run_id VARCHAR NOT NULL, fold INTEGER NOT NULL, n_train INTEGER, n_eval INTEGER,
    c_index DOUBLE, c_index_uno DOUBLE, mean_auc DOUBLE, ibs DOUBLE, seconds DOUBLE,
    selected_epoch INTEGER, finished_at TIMESTAMP, PRIMARY KEY (run_id, fold));
CREATE TABLE IF NOT EXISTS cv_predictions (
    run_id VARCHAR NOT NULL, fold INTEGER NOT NULL, patient_id VARCHAR NOT NULL,
    risk DOUBLE NOT NULL, time DOUBLE NOT NULL, event BOOLEAN NOT NULL, survival DOUBLE[],
    PRIMARY KEY (run_id, fold, patient_id));
ALTER TABLE cv_fold_results ADD COLUMN IF NOT EXISTS note VARCHAR;
ALTER TABLE cv_fold_results ADD COLUMN IF NOT EXISTS accuracy DOUBLE;
ALTER TABLE cv_fold_results ADD COLUMN IF NOT EXISTS roc_auc DOUBLE;
ALTER TABLE cv_fold_results ADD COLUMN IF NOT EXISTS macro_f1 DOUBLE;
CREATE TABLE IF NOT EXISTS cv_version_links (
    version_id VARCHAR NOT NULL, role VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
    linked_at TIMESTAMP NOT NULL, PRIMARY KEY (version_id, role));
"""
LINK_ROLES = ("method", "baseline")


@dataclass(frozen=True)
class RunRow:
    """One ``cv_runs`` row; ``config`` is stored as sorted JSON."""

    run_id: str
    model: str
    cohort: str
    split_set: str
    selection: str
    bins: str
    seed: int
    config: Mapping[str, Any]


@dataclass(frozen=True)
class FoldRow:
    """One ``cv_fold_results`` row. ``metrics``: metric column -> value (None = NULL);
    a column of :data:`ALL_METRIC_COLUMNS` missing from it is stored as NULL."""

    run_id: str
    fold: int
    n_train: int
    n_eval: int
    metrics: Mapping[str, float | None]
    seconds: float
    selected_epoch: int | None = None
    note: str | None = None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class CVResultTables:
    """The ``cv_*`` tables of one open store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def exist(self, table: str = "cv_runs") -> bool:
        """False for a read-only store whose file predates the table (one of this
        module's)."""
        row = self._store.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchone()
        return bool(row and row[0])

    # ------------------------------------------------------------------ writes
    def add_run(self, run: RunRow) -> None:
        """Record a run; a run id already there is kept as it was (a resumed run)."""
        with self._store.transaction() as con:
            con.execute(
                "INSERT INTO cv_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [run.run_id, run.model, run.cohort, run.split_set, run.selection, run.bins,
                 int(run.seed), json.dumps(dict(run.config), sort_keys=True), _now()])

    def save_fold(self, fold: FoldRow, predictions: pd.DataFrame) -> None:
        """A fold's metrics and its predictions (columns :data:`PREDICTION_COLUMNS`, one
        row per evaluated patient), all-or-nothing: a killed run leaves no half fold, and
        saving a fold again replaces it."""
        frame = predictions[PREDICTION_COLUMNS].assign(run_id=fold.run_id, fold=fold.fold)
        con = self._store.con
        # registered outside the transaction: unregistering inside an aborted one would
        # raise and hide the error that aborted it
        con.register("_fold_predictions", frame)
        try:
            with self._store.transaction():
                con.execute("DELETE FROM cv_predictions WHERE run_id = ? AND fold = ?",
                            [fold.run_id, fold.fold])
                con.execute("INSERT INTO cv_predictions SELECT run_id, fold, patient_id, "
                            "risk, time, event, survival FROM _fold_predictions")
                con.execute(
                    "INSERT OR REPLACE INTO cv_fold_results (run_id, fold, n_train, n_eval, "
                    f"{', '.join(ALL_METRIC_COLUMNS)}, seconds, selected_epoch, finished_at, "
                    f"note) VALUES ({', '.join(['?'] * (len(ALL_METRIC_COLUMNS) + 8))})",
                    [fold.run_id, fold.fold, fold.n_train, fold.n_eval,
                     *[fold.metrics.get(k) for k in ALL_METRIC_COLUMNS], fold.seconds,
                     fold.selected_epoch, _now(), fold.note])
        finally:
            con.unregister("_fold_predictions")

    def link_version(self, version_id: str, role: str, run_id: str) -> None:
        """Record that ``run_id`` backs ``version_id`` as its ``role`` (:data:`LINK_ROLES`);
        a link of the same role is replaced (a newer verified run)."""
        if role not in LINK_ROLES:
            raise ValueError(f"unknown link role {role!r}; choose among: {', '.join(LINK_ROLES)}")
        with self._store.transaction() as con:
            con.execute("INSERT OR REPLACE INTO cv_version_links VALUES (?, ?, ?, ?)",
                        [version_id, role, run_id, _now()])

    # ------------------------------------------------------------------ reads
    def version_links(self, version_id: str) -> dict[str, str]:
        """role -> run id of the runs recorded for ``version_id`` (empty when none)."""
        if not self.exist("cv_version_links"):
            return {}
        rows = self._store.con.execute(
            "SELECT role, run_id FROM cv_version_links WHERE version_id = ?",
            [version_id]).fetchall()
        return {str(role): str(run) for role, run in rows}

    def run_overview(self) -> pd.DataFrame:
        """Every run (columns :data:`RUN_COLUMNS`) with ``n_folds_done``, its number of
        finished folds, oldest run first: what a track-record lookup filters."""
        if not self.exist():
            return pd.DataFrame(columns=[*RUN_COLUMNS, "n_folds_done"])
        return self._store.query_df(
            "SELECT r.*, count(f.fold) AS n_folds_done FROM cv_runs r "
            "LEFT JOIN cv_fold_results f USING (run_id) "
            "GROUP BY ALL ORDER BY r.created_at, r.run_id")

    def evaluated_patients(self, run_id: str) -> dict[int, frozenset[str]]:
        """fold -> the patients the run evaluated in it: two runs evaluated "under the same
        folds" exactly when these are equal."""
        if not self.exist():
            return {}
        rows = self._store.con.execute(
            "SELECT fold, patient_id FROM cv_predictions WHERE run_id = ?", [run_id]).fetchall()
        out: dict[int, set[str]] = {}
        for fold, patient in rows:
            out.setdefault(int(fold), set()).add(str(patient))
        return {fold: frozenset(ids) for fold, ids in out.items()}

    def finished_folds(self, run_id: str) -> set[int]:
        if not self.exist():
            return set()
        rows = self._store.con.execute(
            "SELECT fold FROM cv_fold_results WHERE run_id = ?", [run_id]).fetchall()
        return {int(r[0]) for r in rows}

    def runs(self) -> pd.DataFrame:
        """Columns :data:`RUN_COLUMNS`, oldest run first (config as JSON text)."""
        if not self.exist():
            return pd.DataFrame(columns=RUN_COLUMNS)
        return self._store.query_df("SELECT * FROM cv_runs ORDER BY created_at")

    def fold_results(self, run_id: str) -> pd.DataFrame:
        """Every ``cv_fold_results`` column of the run's folds, by fold (empty, without
        columns, when there are no tables)."""
        if not self.exist():
            return pd.DataFrame()
        return self._store.query_df(
            "SELECT * FROM cv_fold_results WHERE run_id = ? ORDER BY fold", [run_id])

    def predictions(self, run_id: str, with_survival: bool = False) -> pd.DataFrame:
        """Columns fold, patient_id, risk, time, event (and survival, a list per row or
        None, when ``with_survival``), by fold and patient."""
        columns = ["fold", "patient_id", "risk", "time", "event"]
        if with_survival:
            columns.append("survival")
        if not self.exist():
            return pd.DataFrame(columns=columns)
        return self._store.query_df(
            f"SELECT {', '.join(columns)} FROM cv_predictions WHERE run_id = ? "
            "ORDER BY fold, patient_id", [run_id])
