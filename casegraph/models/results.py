"""Cross-validation results in the store's DuckDB: runs, per-fold metrics, per-patient
predictions; summaries (mean +/- std) and the markdown table shaped like the papers'
(rows = models, columns = cohorts, cells = mean +/- std C-index over folds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from casegraph.ingest.store import Store
from casegraph.models.base import Prediction
from casegraph.models.evaluate import METRICS

RESULTS_DDL = """
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
"""


@dataclass
class FoldResult:
    fold: int
    n_train: int
    n_eval: int
    metrics: dict[str, float]
    seconds: float
    selected_epoch: int | None = None
    note: str | None = None  # e.g. a constant risk: its C of 0.5 is no ranking at all


class ResultStore:
    """Reads and writes the cv_* tables of one open store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_schema(RESULTS_DDL)

    def _has_tables(self) -> bool:
        row = self.store.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'cv_runs'"
        ).fetchone()
        return bool(row and row[0])

    def start_run(self, run_id: str, config: dict[str, Any]) -> None:
        with self.store.transaction() as con:
            con.execute(
                "INSERT INTO cv_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [run_id, config["model"], config["cohort"], config["splits"], config["select"],
                 config["bins"], int(config["seed"]), json.dumps(config, sort_keys=True),
                 datetime.now(UTC).replace(tzinfo=None)])

    def finished_folds(self, run_id: str) -> set[int]:
        if not self._has_tables():
            return set()
        rows = self.store.con.execute(
            "SELECT fold FROM cv_fold_results WHERE run_id = ?", [run_id]).fetchall()
        return {int(r[0]) for r in rows}

    def save_fold(self, run_id: str, result: FoldResult, pred: Prediction,
                  time: np.ndarray, event: np.ndarray) -> None:
        """Fold metrics and its predictions, all-or-nothing (a killed run leaves no half fold)."""
        surv = [None] * len(pred.patient_ids) if pred.survival is None else [
            [float(v) for v in row] for row in pred.survival]
        frame = pd.DataFrame({
            "run_id": run_id, "fold": result.fold, "patient_id": pred.patient_ids,
            "risk": np.asarray(pred.risk, dtype=np.float64), "time": time,
            "event": np.asarray(event, dtype=bool), "survival": surv})
        m = result.metrics
        with self.store.transaction() as con:
            con.execute("DELETE FROM cv_predictions WHERE run_id = ? AND fold = ?",
                        [run_id, result.fold])
            con.register("_fold_predictions", frame)
            try:
                con.execute("INSERT INTO cv_predictions SELECT run_id, fold, patient_id, risk, "
                            "time, event, survival FROM _fold_predictions")
            finally:
                con.unregister("_fold_predictions")
            con.execute(
                "INSERT OR REPLACE INTO cv_fold_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, result.fold, result.n_train, result.n_eval,
                 *[_nullable(m.get(k)) for k in METRICS], result.seconds,
                 result.selected_epoch, datetime.now(UTC).replace(tzinfo=None), result.note])

    def runs(self) -> pd.DataFrame:
        if not self._has_tables():
            return pd.DataFrame(columns=["run_id", "model", "cohort", "split_set", "selection",
                                         "bins", "seed", "config", "created_at"])
        return self.store.query_df("SELECT * FROM cv_runs ORDER BY created_at")

    def fold_results(self, run_id: str) -> pd.DataFrame:
        if not self._has_tables():
            return pd.DataFrame()
        return self.store.query_df(
            "SELECT * FROM cv_fold_results WHERE run_id = ? ORDER BY fold", [run_id])

    def predictions(self, run_id: str) -> pd.DataFrame:
        return self.store.query_df(
            "SELECT fold, patient_id, risk, time, event FROM cv_predictions WHERE run_id = ? "
            "ORDER BY fold, patient_id", [run_id])

    def summary(self) -> pd.DataFrame:
        """One row per run: model, cohort, selection, folds, mean and std of every metric."""
        rows = []
        for run in self.runs().itertuples():
            folds = self.fold_results(str(run.run_id))
            row: dict[str, Any] = {"run_id": run.run_id, "model": run.model,
                                   "cohort": run.cohort, "splits": run.split_set,
                                   "selection": run.selection, "bins": run.bins,
                                   "seed": run.seed, "folds": len(folds),
                                   "options": _options_label(run.config),
                                   "noted_folds": _noted_folds(folds)}
            for k in METRICS:
                values = folds[k].dropna().to_numpy(dtype=float) if len(folds) else np.array([])
                row[f"{k}_mean"] = float(values.mean()) if values.size else float("nan")
                row[f"{k}_std"] = float(values.std()) if values.size else float("nan")
            rows.append(row)
        return pd.DataFrame(rows)


def _options_label(config: object) -> str:
    """Model options of a run that change the model, e.g. ``sampler=balanced`` (not epochs)."""
    try:
        options = json.loads(str(config)).get("options", {})
    except (json.JSONDecodeError, AttributeError):
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(options.items()) if k != "epochs")


def _noted_folds(folds: pd.DataFrame) -> str:
    """``"2/5 folds: constant risk ..."`` for folds whose result carries a note, else ``""``."""
    if folds.empty or "note" not in folds:
        return ""
    notes = folds["note"].dropna()
    if notes.empty:
        return ""
    kinds = "; ".join(sorted({str(n) for n in notes}))
    return f"{len(notes)}/{len(folds)} folds: {kinds}"


def _nullable(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def markdown_table(summary: pd.DataFrame, metric: str = "c_index",
                   cohort_order: list[str] | None = None) -> str:
    """Rows = model (with its options, and selection / bins / seed when not the defaults),
    columns = cohorts, plus the mean.

    Cells: ``mean ± std`` over folds (the CCL / MurreNet table shape). When several runs of
    a model on a cohort exist, the latest is shown.
    """
    if summary.empty:
        return "(no results)\n"
    cohorts = cohort_order or sorted(summary["cohort"].unique())
    rows: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    for r in summary.itertuples():
        label = str(r.model)
        if getattr(r, "options", ""):
            label += f" [{r.options}]"
        if r.selection != "last":
            label += f" [select={r.selection}]"
        if r.bins != "train":
            label += f" [bins={r.bins}]"
        if r.seed != 0:
            label += f" [seed={r.seed}]"
        mean, std = getattr(r, f"{metric}_mean"), getattr(r, f"{metric}_std")
        cell = f"{mean:.3f} ± {std:.3f}"
        noted = getattr(r, "noted_folds", "")
        if noted:
            cell += f" † {noted.split(' folds:')[0]}"
            notes.append(f"† {label}, {str(r.cohort).upper()}: {noted}")
        rows.setdefault(label, {})[str(r.cohort)] = cell
    header = "| Model | " + " | ".join(c.upper() for c in cohorts) + " | Mean |"
    lines = [header, "|" + "---|" * (len(cohorts) + 2)]
    for label, cells in rows.items():
        overall = [float(cells[c].split(" ")[0]) for c in cohorts if c in cells]
        mean_cell = f"{np.mean(overall):.3f}" if len(overall) == len(cohorts) else "-"
        lines.append(f"| {label} | " + " | ".join(cells.get(c, "-") for c in cohorts)
                     + f" | {mean_cell} |")
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"
