"""`casegraph train --save-version`, `casegraph versions` and `casegraph predict` end to end
on a tiny ingested cohort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casegraph.cli import app
from casegraph.ingest.store import Store
from tests.models.synthetic import planted_cohort, write_to_store

FEATURES = [f"G0G{k}_rnaseq" for k in range(5)] + [f"G1G{k}_rnaseq" for k in range(3)]


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli-versions")
    with Store.open(tmp / "store") as store:
        write_to_store(store, planted_cohort(24, bag_dir=tmp / "bags", n_patches=12))
    return tmp / "store"


def save_version(store: Path, model: str, *options: str) -> str:
    result = CliRunner().invoke(app, [
        "train", "--store", str(store), "--model", model, "--cohort", "synth",
        "--save-version", "--no-cv", "--threads", "1", "--epochs", "2",
        "--option", "hidden=8", *options])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("stored model version"))
    assert "predictions 24" in line and "skipped 0" in line
    return line.split()[3]


@pytest.fixture(scope="module")
def versions(synth_store: Path) -> dict[str, str]:
    return {"snn": save_version(synth_store, "snn"),
            "abmil": save_version(synth_store, "abmil", "--option", "max_patches=16")}


def test_versions_lists_every_saved_version(synth_store: Path,
                                            versions: dict[str, str]) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["versions", "--store", str(synth_store)])
    assert listed.exit_code == 0, listed.output
    assert versions["snn"] in listed.output and versions["abmil"] in listed.output
    assert "model=snn" in listed.output and "cohort=synth" in listed.output
    only = runner.invoke(app, ["versions", "--store", str(synth_store), "--model", "abmil",
                               "--json"])
    rows = json.loads(only.output)
    assert [r["version_id"] for r in rows] == [versions["abmil"]]
    assert rows[0]["counts"]["fitted_on"] == 16  # fold 0's training patients


def test_predict_a_stored_patient(synth_store: Path, versions: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["predict", "--store", str(synth_store), "--version",
                                      versions["snn"], "--patient", "P001", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["patient_id"] == "P001" and answer["stored"] and answer["model"] == "snn"
    assert len(answer["survival"]) == 4 and answer["survival"][-1]["time"] is None
    with Store.open(synth_store, read_only=True) as store:
        rows = store.versions.predictions(versions["snn"])
        assert answer["risk"] == pytest.approx(
            float(rows.loc[rows["patient_id"] == "P001", "risk"].iloc[0]))
    text = CliRunner().invoke(app, ["predict", "--store", str(synth_store), "--version",
                                    versions["snn"], "--patient", "P001"])
    assert text.exit_code == 0 and "P001: risk" in text.output and "S(end)" in text.output


def test_predict_a_new_patient_from_slides_and_genomics(synth_store: Path,
                                                        versions: dict[str, str],
                                                        tmp_path: Path) -> None:
    bag = synth_store.parent / "bags" / "P002-S0.h5"
    runner = CliRunner()
    wsi = runner.invoke(app, ["predict", "--store", str(synth_store), "--version",
                              versions["abmil"], "--slide", str(bag), "--json"])
    assert wsi.exit_code == 0, wsi.output
    assert json.loads(wsi.output)["patient_id"] is None
    genomics = tmp_path / "row.csv"
    genomics.write_text("case_id," + ",".join(FEATURES[:6]) + "\nX,1,2,3,4,5,6\n",
                        encoding="utf-8")
    snn = runner.invoke(app, ["predict", "--store", str(synth_store), "--version",
                              versions["snn"], "--genomics", str(genomics)])
    assert snn.exit_code == 0, snn.output
    assert "genomics g0: 5/5" in snn.output and "genomics g1: 1/3" in snn.output
    assert "missing (2, set to the training mean): G1G1_rnaseq, G1G2_rnaseq" in snn.output
    refused = runner.invoke(app, ["predict", "--store", str(synth_store), "--version",
                                  versions["abmil"], "--slide", str(bag), "--genomics",
                                  str(genomics)])
    assert refused.exit_code != 0
    assert "trained without genomics" in str(refused.exception)
    assert "drop --genomics" in str(refused.exception)
