"""Cross-validation results: runs, per-fold metrics, per-patient predictions (kept in the
store's ``cv_*`` tables, owned by :mod:`casegraph.ingest.cv_results`); summaries
(mean +/- std) and the markdown table shaped like the papers' (rows = models, columns =
cohorts, cells = mean +/- std C-index over folds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from casegraph.ingest.cv_results import ALL_METRIC_COLUMNS, FoldRow, RunRow
from casegraph.ingest.store import Store
from casegraph.models.base import Prediction
from casegraph.models.evaluate import METRICS


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
    """Cross-validation runs of one open store: what a run and a fold result are, kept
    in the store's ``cv_*`` tables (:mod:`casegraph.ingest.cv_results`)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tables = store.cv_results

    def start_run(self, run_id: str, config: dict[str, Any]) -> None:
        """Record a run (a :class:`~casegraph.models.cv.CVConfig` as a dict)."""
        self._tables.add_run(RunRow(
            run_id=run_id, model=config["model"], cohort=config["cohort"],
            split_set=config["splits"], selection=config["select"], bins=config["bins"],
            seed=int(config["seed"]), config=config))

    def finished_folds(self, run_id: str) -> set[int]:
        return self._tables.finished_folds(run_id)

    def save_fold(self, run_id: str, result: FoldResult, pred: Prediction,
                  time: np.ndarray, event: np.ndarray) -> None:
        """Fold metrics and its predictions, all-or-nothing (a killed run leaves no half fold)."""
        surv = [None] * len(pred.patient_ids) if pred.survival is None else [
            [float(v) for v in row] for row in pred.survival]
        frame = pd.DataFrame({
            "patient_id": pred.patient_ids, "risk": np.asarray(pred.risk, dtype=np.float64),
            "time": time, "event": np.asarray(event, dtype=bool), "survival": surv})
        self._tables.save_fold(FoldRow(
            run_id=run_id, fold=result.fold, n_train=result.n_train, n_eval=result.n_eval,
            metrics={k: _nullable(result.metrics.get(k)) for k in ALL_METRIC_COLUMNS},
            seconds=result.seconds, selected_epoch=result.selected_epoch,
            note=result.note), frame)

    def runs(self) -> pd.DataFrame:
        return self._tables.runs()

    def fold_results(self, run_id: str) -> pd.DataFrame:
        return self._tables.fold_results(run_id)

    def predictions(self, run_id: str, with_survival: bool = False) -> pd.DataFrame:
        """Out-of-fold predictions (fold, patient_id, risk, time, event[, survival])."""
        return self._tables.predictions(run_id, with_survival)

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
            for k in (m for m in ALL_METRIC_COLUMNS if m in METRICS or m in folds):
                values = folds[k].dropna().to_numpy(dtype=float) if len(folds) else np.array([])
                row[f"{k}_mean"] = float(values.mean()) if values.size else float("nan")
                row[f"{k}_std"] = float(values.std()) if values.size else float("nan")
            rows.append(row)
        return pd.DataFrame(rows)


def _options_label(config: object) -> str:
    """What identifies a run beyond model / cohort / selection / bins / seed: its model
    options (not epochs), a non-default gene-group set and endpoint — never runtime-only options
    such as MSRL's Stage-1 cache path."""
    from casegraph.models.cv import RUNTIME_OPTIONS

    try:
        parsed = json.loads(str(config))
        options = dict(parsed.get("options", {}))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return ""
    parts = [f"{k}={v}" for k, v in sorted(options.items())
             if k != "epochs" and k not in RUNTIME_OPTIONS]
    group_set = parsed.get("group_set")
    if group_set not in (None, "mcat"):
        parts.append(f"group_set={group_set}")
    if parsed.get("endpoint", "OS") != "OS":
        parts.append(f"endpoint={parsed['endpoint']}")
    if parsed.get("label") is not None:
        parts.append(f"label={parsed['label']}")
    return ",".join(parts)


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

    Cells: ``mean ± std`` over folds (the CCL / MurreNet table shape). When several runs
    share a label on a cohort (e.g. the same options on data that changed since), the
    latest is shown and a note under the table names the hidden ones.
    """
    if summary.empty:
        return "(no results)\n"
    cohorts = cohort_order or sorted(summary["cohort"].unique())
    rows: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    shown: dict[tuple[str, str], str] = {}
    hidden: dict[tuple[str, str], list[str]] = {}
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
        if str(r.cohort) in rows.get(label, {}):
            hidden.setdefault((label, str(r.cohort)), []).append(shown[(label, str(r.cohort))])
        shown[(label, str(r.cohort))] = str(r.run_id)
        rows.setdefault(label, {})[str(r.cohort)] = cell
    for (label, cohort), older in sorted(hidden.items()):
        notes.append(f"hidden: {len(older)} older run(s) of {label} on {cohort.upper()} "
                     f"({', '.join(older)}); `casegraph evaluate --run ID` shows one")
    header = "| Model | " + " | ".join(c.upper() for c in cohorts) + " | Mean |"
    lines = [header, "|" + "---|" * (len(cohorts) + 2)]
    for label, cells in rows.items():
        overall = [float(cells[c].split(" ")[0]) for c in cohorts if c in cells]
        mean_cell = f"{np.mean(overall):.3f}" if len(overall) == len(cohorts) else "-"
        lines.append(f"| {label} | " + " | ".join(cells.get(c, "-") for c in cohorts)
                     + f" | {mean_cell} |")
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"
