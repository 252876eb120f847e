"""A run's identity: every input of the data or the CV configuration changes the run id."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from casegraph.models.cv import CVConfig, kfold_folds
from casegraph.models.data import CohortData
from tests.models.synthetic import planted_cohort

DATA = planted_cohort(n=30, seed=1)
FOLDS = kfold_folds(DATA, 3, seed=0)
BASE = CVConfig(model="snn", cohort="synth").for_data(DATA, FOLDS)

CHANGES: dict[str, Any] = {
    "model": "coxnet", "cohort": "other", "splits": "k-fold", "n_folds": 4, "seed": 1,
    "bins": "paper", "n_bins": 5, "select": "inner", "options": {"epochs": 3},
    "group_set": "all", "endpoint": "DSS", "task": "classification", "label": "stage",
}


def test_every_configuration_field_is_part_of_the_run_id() -> None:
    ids = {BASE.run_id()}
    for f in fields(CVConfig):
        if f.name in ("folds", "data"):  # folds: which folds run now; data: tested below
            continue
        changed = replace(BASE, **{f.name: CHANGES[f.name]})
        ids.add(changed.run_id())
    assert len(ids) == len(fields(CVConfig)) - 1
    assert replace(BASE, folds=[0]).run_id() == BASE.run_id()
    assert CVConfig(model="snn", cohort="synth").for_data(DATA, FOLDS).run_id() == BASE.run_id()


def _changed_data(kind: str, row: int, column: int) -> tuple[CohortData, Any]:
    data, folds = DATA, FOLDS
    if kind == "time":
        time = data.target.time.copy()
        time[row] += 0.5
        data = replace(data, target=type(data.target).from_arrays(time, data.target.event))
    elif kind == "event":
        event = data.target.event.copy()
        event[row] = not event[row]
        data = replace(data, target=type(data.target).from_arrays(data.target.time, event))
    elif kind == "genomics":
        values = [g.copy() for g in data.genomics]
        values[0][row, column % values[0].shape[1]] += 1.0
        data = replace(data, genomics=values)
    elif kind == "groups":
        data = replace(data, groups=[f"{g}-renamed" for g in data.groups])
    elif kind == "columns":
        data = replace(data, genomics=[g[:, :-1] for g in data.genomics])
    elif kind == "patients":
        data = data.subset(np.delete(np.arange(len(data)), row))
        folds = kfold_folds(data, 3, seed=0)
    elif kind == "folds":
        folds = kfold_folds(data, 3, seed=1)
    return data, folds


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["time", "event", "genomics", "groups", "columns", "patients",
                             "folds"]),
       row=st.integers(0, len(DATA) - 1), column=st.integers(0, 100))
def test_any_change_of_the_data_changes_the_run_id(kind: str, row: int, column: int) -> None:
    data, folds = _changed_data(kind, row, column)
    changed = CVConfig(model="snn", cohort="synth").for_data(data, folds)
    assert changed.run_id() != BASE.run_id()


def _table(cohort: str, genes: list[str], seed: int) -> Any:
    from pathlib import Path

    from casegraph.ingest.tables import CohortTable

    rng = np.random.default_rng(seed)
    ids = [f"{cohort}-{i}" for i in range(6)]
    return CohortTable(
        source=Path(f"{cohort}.csv"), cohort=cohort, patient_ids=ids,
        time=rng.uniform(1, 50, 6), event=rng.random(6) < 0.5,
        attributes=[{} for _ in ids], slides=[],
        feature_names=[f"{g}_rnaseq" for g in genes], feature_genes=genes,
        feature_modalities=["rna"] * len(genes),
        genomics=rng.normal(size=(6, len(genes))).astype(np.float32))


def test_a_cohorts_columns_do_not_depend_on_what_was_ingested_before(tmp_path: Any) -> None:
    from casegraph.ingest.pipeline import IngestRequest, ingest
    from casegraph.ingest.store import Store

    genes = ["TP53", "EGFR", "KRAS", "MYC"]
    matrices = []
    for name, order in (("first", ["x", "y"]), ("second", ["y", "x"])):
        with Store.open(tmp_path / name) as store:
            for cohort in order:  # cohort y lists the genes in the reverse order
                ingest(store, IngestRequest(tables=[_table(
                    cohort, genes if cohort == "x" else genes[::-1], seed=ord(cohort))]))
            data = CohortData.from_store(store, "x", group_set="all")
            matrices.append((data.groups, data.genomics_flat()))
    assert matrices[0][0] == matrices[1][0]
    np.testing.assert_array_equal(matrices[0][1], matrices[1][1])
