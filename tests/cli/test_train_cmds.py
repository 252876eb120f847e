"""`casegraph train` and `casegraph evaluate` end to end on a tiny ingested cohort."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from casegraph.cli import app
from casegraph.ingest.store import Store
from tests.models.synthetic import planted_cohort, write_to_store


@pytest.fixture
def synth_store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    with Store.open(root) as store:
        write_to_store(store, planted_cohort(45, bag_dir=tmp_path / "bags", n_patches=12))
    return root


def test_train_then_evaluate(synth_store: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["train", "--store", str(synth_store), "--model", "snn", "--cohort", "synth",
            "--epochs", "2", "--out", str(out), "--threads", "1"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "c_index:" in first.output and "over 3 folds" in first.output
    assert list(out.glob("*_km.png")) and list((out / "checkpoints").rglob("fold_*.pt"))
    again = runner.invoke(app, args)  # same configuration: every fold is skipped
    assert again.exit_code == 0 and again.output.count("skipped") == 3
    wsi = runner.invoke(app, ["train", "--store", str(synth_store), "--model", "abmil",
                              "--cohort", "synth", "--epochs", "1", "--select-on-eval",
                              "--option", "max_patches=8", "--threads", "1"])
    assert wsi.exit_code == 0, wsi.output
    assert "OPTIMISTIC" in wsi.output
    table = tmp_path / "results.md"
    report = runner.invoke(app, ["evaluate", "--store", str(synth_store), "--markdown",
                                 str(table), "--km-dir", str(tmp_path / "km")])
    assert report.exit_code == 0, report.output
    assert "SELECTED ON EVALUATION FOLD" in report.output
    text = table.read_text(encoding="utf-8")
    assert "| snn |" in text and "abmil [max_patches=8] [select=eval]" in text
    assert len(list((tmp_path / "km").glob("*.png"))) == 2


def test_train_input_errors(synth_store: Path) -> None:
    runner = CliRunner()
    base = ["train", "--store", str(synth_store), "--cohort", "synth"]
    bad_model = runner.invoke(app, [*base, "--model", "nope"])
    assert "choose among" in str(bad_model.exception)
    bad_option = runner.invoke(app, [*base, "--model", "coxnet", "--epochs", "3"])
    assert "has no option 'epochs'" in str(bad_option.exception)
    no_cohort = runner.invoke(app, [*base[:-1], "other", "--model", "snn"])
    assert "no patients" in str(no_cohort.exception)


def test_train_save_version_stores_msrl(synth_store: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--store", str(synth_store), "--model", "msrl",
                                 "--cohort", "synth", "--save-version", "--no-cv", "--threads",
                                 "1", "--option", "epochs=1", "--option", "pretrain_steps=2",
                                 "--option", "dim=16", "--option", "proj_dim=8"])
    assert result.exit_code == 0, result.output
    assert "stored model version msrl-" in result.output
    with Store.open(synth_store) as store:
        version = store.latest_model_version("msrl")
        assert version is not None
        held_out = set(store.splits("mcat")[0][1])
        assert store.model_buffer(version) and not held_out & set(store.model_buffer(version))
    snn = runner.invoke(app, ["train", "--store", str(synth_store), "--model", "snn",
                              "--cohort", "synth", "--save-version", "--no-cv", "--epochs", "1"])
    assert snn.exit_code == 0 and "stored model version snn-" in snn.output  # every model saves


def test_msrl_stages_pretrain_then_finetune(synth_store: Path) -> None:
    runner = CliRunner()
    base = ["train", "--store", str(synth_store), "--model", "msrl", "--cohort", "synth",
            "--threads", "1", "--folds", "0,1", "--option", "epochs=1", "--option",
            "pretrain_steps=2", "--option", "dim=16", "--option", "proj_dim=8"]
    missing = runner.invoke(app, [*base, "--stage", "finetune"])
    assert "--stage pretrain first" in str(missing.exception)
    pretrained = runner.invoke(app, [*base, "--stage", "pretrain"])
    assert pretrained.exit_code == 0, pretrained.output
    assert pretrained.output.count("Stage 1 ready") == 2
    assert len(list((synth_store / "artifacts" / "msrl_stage1").glob("stage1-*.pt"))) == 2
    tuned = runner.invoke(app, [*base, "--stage", "finetune"])
    assert tuned.exit_code == 0, tuned.output
    assert "over 2 folds" in tuned.output
    rerun = runner.invoke(app, base)  # --stage all: same run id, both folds already done
    assert rerun.exit_code == 0 and rerun.output.count("skipped") == 2
    version = runner.invoke(app, [*base, "--stage", "finetune", "--save-version", "--no-cv"])
    assert version.exit_code == 0, version.output  # reuses fold 0's Stage 1
    assert "stored model version msrl-" in version.output
    snn = runner.invoke(app, ["train", "--store", str(synth_store), "--model", "snn",
                              "--cohort", "synth", "--stage", "pretrain"])
    assert "applies to MSRL models" in str(snn.exception)


def test_models_lists_every_registered_model_with_a_line_and_train_help_points_there() -> None:
    from casegraph.models.registry import model_names

    runner = CliRunner()
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0, listed.output
    lines = {line.split()[0]: line for line in listed.output.splitlines() if line.strip()}
    assert set(lines) == set(model_names())
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines.values())  # each described
    helped = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"})
    text = " ".join(helped.output.replace("│", " ").split())
    assert "casegraph models" in text and "--list-models" not in text


def _add_dss(root: Path) -> None:
    """DSS rows for the synthetic cohort's patients (time halved, every fifth without)."""
    import numpy as np

    from casegraph.ingest.outcomes import OutcomeRow
    from casegraph.ingest.pipeline import IngestRequest, ingest
    from casegraph.ingest.tables import CohortTable

    with Store.open(root) as store:
        patients = store.patients("synth")
        ids = list(patients["patient_id"])
        rows = [OutcomeRow(p, "DSS", float(t) / 2, bool(e)) for i, (p, t, e) in enumerate(
            zip(ids, patients["time"], patients["event"], strict=True)) if i % 5]
        ingest(store, IngestRequest(tables=[CohortTable(
            source=Path("dss.csv"), cohort="synth", patient_ids=ids,
            time=patients["time"].to_numpy(), event=patients["event"].to_numpy(),
            attributes=[{} for _ in ids], slides=[], feature_names=[], feature_genes=[],
            feature_modalities=[], genomics=np.zeros((len(ids), 0), np.float32),
            outcomes=rows)]))


def test_train_and_evaluate_by_endpoint(synth_store: Path, tmp_path: Path) -> None:
    _add_dss(synth_store)
    runner = CliRunner()
    info = runner.invoke(app, ["info", "--store", str(synth_store)], env={"COLUMNS": "200"})
    assert info.exit_code == 0 and "OS DSS" in info.output, info.output
    base = ["train", "--store", str(synth_store), "--model", "snn", "--cohort", "synth",
            "--epochs", "1", "--threads", "1"]
    dss = runner.invoke(app, [*base, "--endpoint", "dss"])
    assert dss.exit_code == 0, dss.output
    assert "on synth DSS (36 patients" in dss.output
    os_run = runner.invoke(app, base)
    assert os_run.exit_code == 0 and "on synth OS (45 patients" in os_run.output
    missing = runner.invoke(app, [*base, "--endpoint", "PFI"])
    assert missing.exit_code != 0
    assert "cohort 'synth' has no PFI outcomes (it has: OS, DSS)" in str(missing.exception)
    table = tmp_path / "results.md"
    report = runner.invoke(app, ["evaluate", "--store", str(synth_store), "--markdown",
                                 str(table)])
    assert report.exit_code == 0, report.output
    text = table.read_text(encoding="utf-8")
    assert "| snn [endpoint=DSS] |" in text and "| snn |" in text
    assert " snn synth DSS folds=3" in report.output and " snn synth OS folds=3" in report.output
    only = runner.invoke(app, ["evaluate", "--store", str(synth_store), "--endpoint", "DSS"])
    assert only.exit_code == 0 and "synth DSS" in only.output and "synth OS" not in only.output
    saved = runner.invoke(app, [*base, "--endpoint", "DSS", "--save-version", "--no-cv"])
    assert saved.exit_code == 0, saved.output
    with Store.open(synth_store, read_only=True) as store:
        version = store.latest_model_version("snn")
        assert version is not None and store.versions.get(version).config["endpoint"] == "DSS"
    answer = runner.invoke(app, ["predict", "--store", str(synth_store), "--version", version,
                                 "--patient", "P001"])
    assert answer.exit_code == 0 and "(snn, DSS)" in answer.output, answer.output


def test_train_classification_then_evaluate(tmp_path: Path) -> None:
    from tests.models.test_classification import write_labelled_store

    write_labelled_store(tmp_path).close()
    root = tmp_path / "store"
    runner = CliRunner()
    base = ["train", "--store", str(root), "--model", "snn", "--cohort", "synth", "--task",
            "classification", "--label", "grade", "--threads", "1", "--select", "inner",
            "--epochs", "60", "--option", "lr=0.003", "--option", "dropout=0.1"]
    trained = runner.invoke(app, base)
    assert trained.exit_code == 0, trained.output
    assert "classifies grade on synth (54 patients: high 28, low 26;" in trained.output
    assert "accuracy:" in trained.output and "roc_auc:" in trained.output
    report = runner.invoke(app, ["evaluate", "--store", str(root), "--metric", "accuracy"])
    assert report.exit_code == 0, report.output
    assert "snn synth label=grade folds=3" in report.output
    assert "| snn [dropout=0.1,lr=0.003,label=grade] [select=inner] |" in report.output
    no_label = runner.invoke(app, [*base[:-6], "--label", "stage"])
    assert "has a value in column 'stage'" in str(no_label.exception)
    no_head = runner.invoke(app, [*base[:4], "coxnet", *base[5:]])
    assert "no classification head" in str(no_head.exception)
    bad_option = runner.invoke(app, [*base, "--option", "bins=3"])
    assert "bad option for the snn classifier" in str(bad_option.exception)
    with_endpoint = runner.invoke(app, [*base, "--endpoint", "DSS"])
    assert "--endpoint and --bins apply to survival tasks" in str(with_endpoint.exception)
