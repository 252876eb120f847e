"""The cv_* tables through store.cv_results: runs, folds, predictions, old read-only files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from casegraph.ingest.cv_results import METRIC_COLUMNS, RUN_COLUMNS, FoldRow, RunRow
from casegraph.ingest.store import DB_NAME, Store
from casegraph.models.evaluate import METRICS

RUN = RunRow(run_id="r1", model="snn", cohort="tiny", split_set="mcat", selection="last",
             bins="train", seed=0, config={"model": "snn", "epochs": 2})


def _predictions(ids: list[str], survival: bool = False) -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": ids, "risk": [0.5 + i for i in range(len(ids))],
        "time": [10.0] * len(ids), "event": [True] * len(ids),
        "survival": [[0.9, 0.4] if survival else None for _ in ids]})


def _fold(fold: int, c_index: float | None = 0.7, note: str | None = None) -> FoldRow:
    return FoldRow(run_id="r1", fold=fold, n_train=4, n_eval=2,
                   metrics={"c_index": c_index, "ibs": 0.2}, seconds=1.5, note=note)


def test_metric_columns_are_the_models_metrics() -> None:
    assert METRIC_COLUMNS == METRICS


def test_run_folds_and_predictions_round_trip(store: Store) -> None:
    tables = store.cv_results
    tables.add_run(RUN)
    tables.add_run(RunRow(**{**RUN.__dict__, "model": "other"}))  # a resumed run keeps its row
    tables.save_fold(_fold(0), _predictions(["P2", "P1"], survival=True))
    tables.save_fold(_fold(1, c_index=None, note="constant"), _predictions(["P3"]))
    runs = tables.runs()
    assert list(runs["model"]) == ["snn"] and '"epochs": 2' in runs.loc[0, "config"]
    assert tables.finished_folds("r1") == {0, 1} and tables.finished_folds("r2") == set()
    folds = tables.fold_results("r1")
    assert list(folds["fold"]) == [0, 1] and folds.loc[0, "c_index"] == pytest.approx(0.7)
    assert pd.isna(folds.loc[1, "c_index"]) and pd.isna(folds.loc[0, "mean_auc"])
    assert folds.loc[1, "note"] == "constant" and folds.loc[0, "seconds"] == 1.5
    preds = tables.predictions("r1")
    assert list(preds.columns) == ["fold", "patient_id", "risk", "time", "event"]
    assert list(zip(preds["fold"], preds["patient_id"], strict=True)) == [
        (0, "P1"), (0, "P2"), (1, "P3")]


def test_saving_a_fold_again_replaces_it(store: Store) -> None:
    tables = store.cv_results
    tables.add_run(RUN)
    tables.save_fold(_fold(0), _predictions(["P1", "P2"]))
    tables.save_fold(_fold(0, c_index=0.9), _predictions(["P3"]))
    assert list(tables.predictions("r1")["patient_id"]) == ["P3"]
    assert tables.fold_results("r1")["c_index"].tolist() == [pytest.approx(0.9)]


def test_a_failed_fold_write_leaves_nothing(store: Store) -> None:
    tables = store.cv_results
    tables.add_run(RUN)
    bad = _predictions(["P1", "P1"])  # duplicate patient: the primary key refuses it
    with pytest.raises(duckdb.ConstraintException):
        tables.save_fold(_fold(0), bad)
    assert tables.finished_folds("r1") == set() and tables.predictions("r1").empty


def test_a_read_only_file_without_the_tables_holds_no_runs(tmp_path: Path) -> None:
    duckdb.connect(str(tmp_path / DB_NAME)).close()  # a file from before the cv tables
    with Store.open(tmp_path, read_only=True) as store:
        tables = store.cv_results
        assert not tables.exist()
        assert tables.runs().empty and list(tables.runs().columns) == RUN_COLUMNS
        assert tables.finished_folds("r1") == set()
        assert tables.fold_results("r1").empty and tables.predictions("r1").empty


def test_version_links_are_recorded_and_replaced(store: Store) -> None:
    tables = store.cv_results
    assert tables.version_links("v1") == {}
    tables.link_version("v1", "method", "r1")
    tables.link_version("v1", "baseline", "b1")
    tables.link_version("v1", "method", "r2")  # a newer verified run replaces the link
    assert tables.version_links("v1") == {"method": "r2", "baseline": "b1"}
    assert tables.version_links("v2") == {}
    with pytest.raises(ValueError, match="unknown link role"):
        tables.link_version("v1", "other", "r1")


def test_run_overview_counts_finished_folds_and_evaluated_patients(store: Store) -> None:
    tables = store.cv_results
    tables.add_run(RUN)
    tables.add_run(RunRow(**{**RUN.__dict__, "run_id": "r2"}))
    tables.save_fold(_fold(0), _predictions(["P2", "P1"]))
    tables.save_fold(_fold(1), _predictions(["P3"]))
    overview = tables.run_overview().set_index("run_id")
    assert overview.loc["r1", "n_folds_done"] == 2 and overview.loc["r2", "n_folds_done"] == 0
    assert tables.evaluated_patients("r1") == {0: frozenset({"P1", "P2"}), 1: frozenset({"P3"})}
    assert tables.evaluated_patients("r2") == {}


def test_a_read_only_file_without_the_link_table_has_no_links(tmp_path: Path) -> None:
    duckdb.connect(str(tmp_path / DB_NAME)).close()
    with Store.open(tmp_path, read_only=True) as store:
        assert store.cv_results.version_links("v1") == {}
        assert store.cv_results.run_overview().empty
        assert store.cv_results.evaluated_patients("r1") == {}
