"""`casegraph evaluate --csv/--json/--figures` and `casegraph query --csv` through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from casegraph.cli import app
from casegraph.ingest.store import Store
from tests.models.synthetic import planted_cohort, write_to_store
from tests.retrieval.conftest import build_store

runner = CliRunner()


@pytest.fixture
def trained_store(tmp_path: Path) -> Path:
    """A synthetic cohort (45 patients, 3 stored folds) with an snn and a coxnet run."""
    root = tmp_path / "store"
    with Store.open(root) as store:
        write_to_store(store, planted_cohort(45, bag_dir=tmp_path / "bags", n_patches=12))
    for model, extra in (("snn", ["--epochs", "2"]), ("coxnet", [])):
        trained = runner.invoke(app, ["train", "--store", str(root), "--model", model,
                                      "--cohort", "synth", "--threads", "1", *extra])
        assert trained.exit_code == 0, trained.output
    return root


def test_evaluate_writes_csv_and_figures(trained_store: Path, tmp_path: Path) -> None:
    exports, figures = tmp_path / "csv", tmp_path / "figures"
    result = runner.invoke(app, ["evaluate", "--store", str(trained_store), "--csv",
                                 str(exports), "--figures", str(figures)])
    assert result.exit_code == 0, result.output
    folds = pd.read_csv(exports / "folds.csv")
    assert list(folds.columns[:3]) == ["run_id", "model", "cohort"]
    assert len(folds) == 6 and set(folds["model"]) == {"snn", "coxnet"}
    assert {"fold", "n_train", "n_eval", "c_index"} <= set(folds.columns)
    predictions = pd.read_csv(exports / "predictions.csv")
    assert list(predictions.columns[:6]) == ["run_id", "fold", "patient_id", "risk", "time",
                                             "event"]
    assert len(predictions) == 2 * 45 and predictions["risk"].notna().all()
    snn_run = folds.loc[folds["model"] == "snn", "run_id"].iloc[0]
    snn = predictions[predictions["run_id"] == snn_run]
    assert {f"survival_{k}" for k in range(1, 5)} <= set(predictions.columns)
    assert snn["survival_1"].between(0, 1).all()
    assert (snn["survival_1"] >= snn["survival_4"]).all()
    pngs = sorted(p.name for p in figures.glob("*.png"))
    assert len(pngs) == 6
    for kind in ("_km.png", "_td_auc.png", "_calibration.png"):
        assert f"{snn_run}{kind}" in pngs
    assert all(p.stat().st_size > 5_000 for p in figures.glob("*.png"))
    assert "calibration in 5 groups" in result.output


def test_evaluate_json_holds_the_csv_tables(trained_store: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--store", str(trained_store), "--csv",
                                 str(tmp_path / "csv"), "--json", str(tmp_path / "json")])
    assert result.exit_code == 0, result.output
    for name in ("folds", "predictions"):
        records = json.loads((tmp_path / "json" / f"{name}.json").read_text())
        from_csv = pd.read_csv(tmp_path / "csv" / f"{name}.csv")
        assert isinstance(records, list) and len(records) == len(from_csv)
        from_json = pd.DataFrame.from_records(records)
        assert list(from_json.columns) == list(from_csv.columns)
        times = [c for c in from_csv if c.endswith("_at")]  # ISO 8601 in JSON
        for column in times:
            assert (pd.to_datetime(from_json[column]).dt.tz_localize(None)
                    == pd.to_datetime(from_csv[column])).all()
        left, right = from_json.drop(columns=times), from_csv.drop(columns=times)
        assert (left.isna().to_numpy() == right.isna().to_numpy()).all()  # null in JSON
        filled = left.mask(left.isna(), 0).infer_objects(), right.mask(right.isna(), 0)
        pd.testing.assert_frame_equal(*filled, check_dtype=False, atol=1e-9)


def test_query_writes_neighbours_csv(tmp_path: Path) -> None:
    root = build_store(tmp_path / "retrieval")
    table = tmp_path / "out" / "neighbours.csv"
    result = runner.invoke(app, ["query", "--store", str(root), "--patient", "A03", "--k",
                                 "3", "--csv", str(table)])
    assert result.exit_code == 0, result.output
    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["rank", "patient_id", "cohort", "similarity", "weight", "time",
                             "event"]
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert "A03" not in {r["patient_id"] for r in rows}
    assert sum(float(r["weight"]) for r in rows) == pytest.approx(1.0, abs=1e-6)
