"""Model versions through a real store: train_version, load_version, predict_stored,
new patients (genomics CSV / JSON, coverage), refusals and foreign files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from casegraph.errors import InputError
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.store import Store
from casegraph.ingest.tables import CohortTable
from casegraph.models.coxnet import CoxNetModel
from casegraph.models.data import CohortData
from casegraph.models.versioning import (
    InputSpec,
    cohort_for,
    load_version,
    predict_external,
    predict_stored,
    read_genomics_row,
    train_version,
)
from tests.models.synthetic import planted_cohort, write_to_store

TINY: dict[str, dict[str, Any]] = {"snn": {"epochs": 2, "hidden": 8},
        "abmil": {"epochs": 2, "hidden": 8, "max_patches": 16},  # 12-patch bags: all kept
        "late_fusion": {"epochs": 2, "hidden": 8, "max_patches": 8}}
KINDS = {"snn": "genomics", "abmil": "wsi", "late_fusion": "fused"}
FEATURES = [f"G0G{k}_rnaseq" for k in range(5)] + [f"G1G{k}_rnaseq" for k in range(3)]


def new_store(root: Path) -> Store:
    store = Store.open(root / "store")
    write_to_store(store, planted_cohort(24, bag_dir=root / "bags", n_patches=12))
    return store


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, dict[str, str]]]:
    torch.set_num_threads(1)
    store = new_store(tmp_path_factory.mktemp("versions"))
    ids = {name: train_version(store, "synth", name, fold=0, **options)
           for name, options in TINY.items()}
    yield store, ids
    store.close()


@pytest.mark.parametrize("name", list(TINY))
def test_a_version_stores_and_reloads_its_model(trained: tuple[Store, dict[str, str]],
                                                name: str) -> None:
    store, ids = trained
    version = store.versions.get(ids[name])
    assert version.model == name and version.config["model"] == name
    spec = InputSpec.from_dict(version.config["inputs"])
    assert spec == InputSpec.from_json(spec.to_json())
    assert spec.uses_genomics == (name != "abmil") and spec.uses_slides == (name != "snn")
    assert spec.feature_names == (FEATURES if spec.uses_genomics else [])
    train_ids = set(store.splits("mcat")[0][0])
    assert set(store.versions.fitted_on(version.version_id)) == train_ids
    rows = store.versions.predictions(version.version_id)
    assert len(rows) == 24 and version.counts["skipped"] == 0
    assert version.bin_edges is not None and len(rows["survival"].iloc[0]) == 4
    assert store.versions.embedding_kinds(version.version_id) == [KINDS[name]]
    model, loaded_spec = load_version(store, version.version_id)
    assert loaded_spec == spec and model.name == name
    again = predict_stored(store, version.version_id, list(rows["patient_id"]))
    assert again.survival is not None
    np.testing.assert_allclose(again.risk, rows["risk"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(again.survival, np.stack(rows["survival"].to_list()), rtol=1e-6)


def test_a_version_predicts_the_same_after_the_store_grows(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    store = new_store(tmp_path)
    version = train_version(store, "synth", "snn", fold=None, **TINY["snn"])
    before = predict_stored(store, version, ["P000", "P005"])
    n = 3  # new patients with a feature of a grouped gene the version never saw
    names = [*FEATURES, "G0G0_cnv", "NEWGENE_rnaseq"]
    table = CohortTable(
        source=Path("more.csv"), cohort="more", patient_ids=[f"N{i}" for i in range(n)],
        time=np.array([3.0, 9.0, 20.0]), event=np.array([True, False, True]),
        attributes=[{}] * n, slides=[], feature_names=names,
        feature_genes=[f.rsplit("_", 1)[0] for f in names],
        feature_modalities=["rna"] * 8 + ["cnv", "rna"],
        genomics=np.random.default_rng(3).normal(size=(n, len(names))).astype(np.float32))
    ingest(store, IngestRequest(tables=[table]))
    after = predict_stored(store, version, ["P000", "P005"])
    np.testing.assert_array_equal(after.risk, before.risk)
    np.testing.assert_array_equal(after.survival, before.survival)
    new = predict_stored(store, version, ["N0"])
    assert np.isfinite(new.risk).all()
    store.close()


def test_a_new_patient_from_a_genomics_csv_row_or_json(trained: tuple[Store, dict[str, str]],
                                                      tmp_path: Path) -> None:
    store, ids = trained
    version = ids["snn"]
    matrix, _, _ = store.genomic_matrix(["P003"], FEATURES)
    csv = tmp_path / "patient.csv"
    csv.write_text("case_id,survival_months," + ",".join(FEATURES) + ",OTHER\n"
                   "X1,12.5," + ",".join(f"{v:.9g}" for v in matrix[0]) + ",abc\n",
                   encoding="utf-8")
    values = read_genomics_row(csv)
    assert sorted(values) == sorted(FEATURES)
    prediction, coverage, inferred = predict_external(store, version, [], values)
    stored = predict_stored(store, version, ["P003"])
    np.testing.assert_allclose(prediction.risk, stored.risk, rtol=1e-5)
    assert coverage is not None and not coverage.missing and not inferred
    assert [(g.group, g.given, g.expected) for g in coverage.groups] == [("g0", 5, 5),
                                                                         ("g1", 3, 3)]
    partial = tmp_path / "patient.json"
    partial.write_text(json.dumps({"G0G0_rnaseq": 1.5, "G1G2_rnaseq": None, "FOO_mut": 1}),
                       encoding="utf-8")
    _, coverage, _ = predict_external(store, version, [], read_genomics_row(partial))
    assert coverage is not None
    assert [(g.given, g.expected) for g in coverage.groups] == [(1, 5), (0, 3)]
    assert coverage.missing == [f for f in FEATURES if f != "G0G0_rnaseq"]
    assert coverage.unknown == ["FOO_mut"]
    assert coverage.to_dict()["groups"][0]["fraction"] == pytest.approx(0.2)


def test_missing_genes_are_the_training_mean(trained: tuple[Store, dict[str, str]]) -> None:
    store, ids = trained
    model, _ = load_version(store, ids["snn"])
    mean = np.concatenate(model.preprocessor_.mean_)  # type: ignore[attr-defined]
    given = dict(zip(FEATURES, mean.tolist(), strict=True))
    full, _, _ = predict_external(store, ids["snn"], [], given)
    empty, coverage, _ = predict_external(store, ids["snn"], [], {})
    np.testing.assert_allclose(empty.risk, full.risk, rtol=1e-5)
    assert coverage is not None and len(coverage.missing) == len(FEATURES)


def test_a_new_patient_with_slides(trained: tuple[Store, dict[str, str]]) -> None:
    store, ids = trained
    data = CohortData.from_store(store, "synth")
    bags = data.bags[data.patient_ids.index("P004")]
    prediction, coverage, _ = predict_external(store, ids["abmil"], bags, None)
    stored = predict_stored(store, ids["abmil"], ["P004"])
    np.testing.assert_allclose(prediction.risk, stored.risk, rtol=1e-5)
    assert coverage is None
    with pytest.raises(InputError, match=r"trained without genomics.*drop --genomics"):
        predict_external(store, ids["abmil"], bags, {"G0G0_rnaseq": 1.0})
    with pytest.raises(InputError, match="trained without slides"):
        predict_external(store, ids["snn"], bags, {"G0G0_rnaseq": 1.0})
    with pytest.raises(InputError, match="reads genomics"):
        predict_external(store, ids["late_fusion"], bags, None)


def test_a_patient_that_does_not_fit_is_named(trained: tuple[Store, dict[str, str]]) -> None:
    store, ids = trained
    spec = InputSpec.from_dict(store.versions.get(ids["abmil"]).config["inputs"])
    wrong = InputSpec(spec.group_set, spec.groups, spec.uses_genomics, True, bag_dim=99)
    with pytest.raises(InputError, match="patient P000 has slide features of dimension 8"):
        cohort_for(store, ["P000"], wrong)
    with pytest.raises(InputError, match="'nobody' is not in the store"):
        cohort_for(store, ["nobody"], spec)


def test_a_foreign_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    store = new_store(tmp_path)
    version = train_version(store, "synth", "snn", fold=0, **TINY["snn"])
    weights = store.versions.folder(version) / "weights.pt"
    torch.save({"state_dict": {}}, weights)
    with pytest.raises(InputError, match="not a casegraph weights file"):
        load_version(store, version)
    weights.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a casegraph weights file"):
        load_version(store, version)
    store.close()


def test_bad_genomics_files_name_file_and_column(tmp_path: Path) -> None:
    two = tmp_path / "two.csv"
    two.write_text("A_rnaseq\n1\n2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"two\.csv.*2 data rows"):
        read_genomics_row(two)
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,A_rnaseq\nX,high\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.csv, row 2, column 'A_rnaseq'.*not a number"):
        read_genomics_row(bad)
    inf = tmp_path / "inf.json"
    inf.write_text('{"A_cnv": 1e309}', encoding="utf-8")
    with pytest.raises(InputError, match=r"column 'A_cnv'.*finite"):
        read_genomics_row(inf)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InputError, match="not an object"):
        read_genomics_row(listed)


def test_coxnet_survival_matches_scikit_survival() -> None:
    data = planted_cohort(60, seed=2)
    model = CoxNetModel(n_alphas=5, inner_folds=2).fit(data)
    x = model._x(data)
    estimator = model._estimator(model.alphas_, baseline=True).fit(x, data.target.to_structured())
    prediction = model.predict(data)
    assert prediction.survival is not None
    np.testing.assert_allclose(prediction.risk, estimator.predict(x, alpha=model.alpha_),
                               rtol=1e-10, atol=1e-12)
    grid = np.append(model.edges_[1:-1], model.baseline_times_[-1])
    for i, fn in enumerate(estimator.predict_survival_function(x[:5], alpha=model.alpha_)):
        expected = fn(np.clip(grid, fn.domain[0], fn.domain[1]))
        np.testing.assert_allclose(prediction.survival[i], expected, rtol=1e-10)


def test_unreadable_genomics_files_are_one_line_errors(tmp_path: Path) -> None:
    from casegraph.models.versioning import read_genomics_row

    latin = tmp_path / "latin.csv"
    latin.write_bytes("case_id,TP53_rnaseq\nP\xe9,1.0\n".encode("latin-1"))
    huge = tmp_path / "huge.csv"
    huge.write_text("TP53_rnaseq\n\"" + "1" * 200_000 + "\"\n", encoding="utf-8")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    for path, words in ((latin, "UTF-8"), (huge, "CSV"), (deep, "JSON")):
        with pytest.raises(InputError, match=words):
            read_genomics_row(path)
