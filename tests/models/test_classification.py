"""Classification through the CV runner: a label column kept at ingest, SNN and ABMIL heads,
accuracy / ROC AUC / macro F1 per fold; a planted label is learnt well above chance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from casegraph.errors import InputError
from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.signatures import GeneGroups
from casegraph.ingest.splits import SplitSet
from casegraph.ingest.store import Store
from casegraph.ingest.tables import CohortTable
from casegraph.models.classification import classification_metrics, stratified_split
from casegraph.models.cv import CVConfig, run_cv, stored_folds
from casegraph.models.data import CohortData
from casegraph.models.results import ResultStore
from tests.models.synthetic import planted_cohort

N = 60


def _grade(data: CohortData) -> list[str]:
    """The planted label: the risk the genomics and the slides carry, above its median."""
    risk = 1.5 * (data.genomics[0][:, 0] - data.genomics[1][:, 0])
    return ["high" if r > np.median(risk) else "low" for r in risk]


@pytest.fixture
def labelled_store(tmp_path: Path) -> Iterator[Store]:
    store = write_labelled_store(tmp_path)
    yield store
    store.close()


def write_labelled_store(tmp_path: Path) -> Store:
    """An open store with the planted cohort "synth": genomics, bags, 3 folds, and a
    ``grade`` column (high / low planted risk) for all but every tenth patient."""
    data = planted_cohort(N, seed=5, bag_dir=tmp_path / "bags", n_patches=12)
    genes = [f"{g.upper()}G{k}" for g, m in zip(data.groups, data.genomics, strict=True)
             for k in range(m.shape[1])]
    grades = _grade(data)
    attributes: list[dict[str, object]] = [
        {"grade": g, "site": "x"} if i % 10 else {"site": "x"}  # every tenth: no grade
        for i, g in enumerate(grades)]
    table = CohortTable(
        source=Path("labelled.csv"), cohort="synth", patient_ids=list(data.patient_ids),
        time=data.target.time, event=data.target.event, attributes=attributes,
        slides=[(f"{p}-S0", p) for p in data.patient_ids],
        feature_names=[f"{g}_rnaseq" for g in genes], feature_genes=genes,
        feature_modalities=["rna"] * len(genes), genomics=data.genomics_flat())
    groups = GeneGroups("mcat", Path("signatures.csv"), {
        g: [f"{g.upper()}G{k}" for k in range(m.shape[1])]
        for g, m in zip(data.groups, data.genomics, strict=True)})
    folds = {f: ([p for i, p in enumerate(data.patient_ids) if i % 3 != f],
                 [p for i, p in enumerate(data.patient_ids) if i % 3 == f]) for f in range(3)}
    store = Store.open(tmp_path / "store")
    ingest(store, IngestRequest(tables=[table], gene_groups=[groups],
                                split_sets=[SplitSet("mcat", Path("splits"), folds)],
                                bag_dirs=[tmp_path / "bags"]))
    return store


def test_labels_come_from_the_table_columns_kept_at_ingest(labelled_store: Store) -> None:
    data = CohortData.from_store(labelled_store, "synth", label="grade")
    assert len(data) == N - N // 10 and data.label_classes == ["high", "low"]
    assert data.labels is not None and set(data.labels.tolist()) == {0, 1}
    first_two = data.subset([0, 1]).labels
    assert first_two is not None and first_two.tolist() == data.labels[:2].tolist()
    with pytest.raises(InputError, match=r"no patient of cohort synth has a value in column "
                                         r"'stage'.*grade, site"):
        CohortData.from_store(labelled_store, "synth", label="stage")


@pytest.mark.parametrize(("model", "options"), [
    ("snn", {"epochs": 60, "hidden": 32, "lr": 3e-3, "dropout": 0.1}),
    ("abmil", {"epochs": 25, "hidden": 16, "lr": 1e-3, "max_patches": 12}),
])
def test_a_planted_label_beats_chance(labelled_store: Store, model: str,
                                      options: dict[str, object]) -> None:
    data = CohortData.from_store(labelled_store, "synth", label="grade",
                                 require_slides=model == "abmil")
    folds = stored_folds(data, labelled_store, "mcat")
    config = CVConfig(model=model, cohort="synth", task="classification", label="grade",
                      select="inner", options=options)
    results = ResultStore(labelled_store)
    out = run_cv(data, config, folds, results=results)
    assert len(out) == 3 and all(r.selected_epoch is not None for r in out)
    accuracy = np.mean([r.metrics["accuracy"] for r in out])
    auc = np.mean([r.metrics["roc_auc"] for r in out])
    assert accuracy > 0.7 and auc > 0.8, (accuracy, auc)
    stored = results.fold_results(config.run_id())
    assert stored["accuracy"].notna().all() and stored["macro_f1"].notna().all()
    assert stored["c_index"].isna().all()
    predictions = results.predictions(config.run_id())
    assert len(predictions) == len(data) and predictions["risk"].between(0, 1).all()
    again = run_cv(data, config, folds, results=results)  # resumable like survival runs
    assert again == []


def test_the_task_and_label_are_part_of_the_run_id(labelled_store: Store) -> None:
    data = CohortData.from_store(labelled_store, "synth", label="grade")
    folds = stored_folds(data, labelled_store, "mcat")
    base = CVConfig(model="snn", cohort="synth", task="classification", label="grade")
    ids = {base.for_data(data, folds).run_id(),
           CVConfig(model="snn", cohort="synth", task="classification",
                    label="site").for_data(data, folds).run_id(),
           CVConfig(model="snn", cohort="synth").for_data(data, folds).run_id()}
    assert len(ids) == 3
    with pytest.raises(InputError, match="--task classification and --label COLUMN go "
                                         "together"):
        CVConfig(model="snn", cohort="synth", task="classification").validate()
    with pytest.raises(InputError, match="classification selects epochs by last or inner"):
        CVConfig(model="snn", cohort="synth", task="classification", label="grade",
                 select="eval").validate()
    with pytest.raises(InputError, match="no classification head here"):
        run_cv(data, CVConfig(model="coxnet", cohort="synth", task="classification",
                              label="grade"), folds, results=ResultStore(labelled_store))
    assert ResultStore(labelled_store).runs().empty


def test_metrics_on_known_inputs() -> None:
    labels = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    metrics = classification_metrics(labels, proba)
    assert metrics["accuracy"] == 0.75 and metrics["roc_auc"] == 1.0
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    three = classification_metrics(np.array([0, 1, 2]), np.eye(3))
    assert three == {"accuracy": 1.0, "roc_auc": 1.0, "macro_f1": 1.0}
    fit, inner = stratified_split(np.array([0] * 10 + [1] * 5), 0.2, np.random.default_rng(0))
    assert len(inner) == 3 and not set(fit) & set(inner)
