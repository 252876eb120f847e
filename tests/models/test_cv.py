"""CV runner: folds never leak, results land in the store, finished folds are skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from casegraph.errors import InputError, StoreError
from casegraph.ingest.store import Store
from casegraph.models.cv import CVConfig, check_no_leak, kfold_folds, run_cv, stored_folds
from casegraph.models.data import CohortData
from casegraph.models.results import ResultStore, markdown_table
from tests.models.synthetic import planted_cohort, write_to_store


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_kfold_partitions_patients_without_leak() -> None:
    data = planted_cohort(50)
    folds = kfold_folds(data, n_folds=5, seed=3)
    evaluated = np.concatenate([ev for _, ev in folds.values()])
    assert sorted(evaluated.tolist()) == list(range(50))
    for train, ev in folds.values():
        assert not set(train) & set(ev) and len(train) + len(ev) == 50
    check_no_leak(folds, data.patient_ids)
    assert kfold_folds(data, 5, seed=3).keys() == folds.keys()
    assert all(np.array_equal(kfold_folds(data, 5, 3)[k][1], folds[k][1]) for k in folds)


def test_leak_is_refused() -> None:
    ids = ["a", "b", "c"]
    with pytest.raises(StoreError, match="leaks"):
        check_no_leak({0: (np.array([0, 1]), np.array([1, 2]))}, ids)


def test_stored_folds_map_ids_and_drop_unknown(store: Store) -> None:
    data = planted_cohort(12)
    write_to_store(store, data, n_folds=3)
    loaded = CohortData.from_store(store, "synth")
    everything = CohortData.from_store(store, "synth", group_set="all")
    assert everything.groups == ["all"] and everything.group_sizes == [8]
    folds = stored_folds(loaded.subset(range(9)), store, "mcat")
    assert set(folds) == {0, 1, 2}
    for train, ev in folds.values():
        assert max(train.max(), ev.max()) < 9 and not set(train) & set(ev)
    with pytest.raises(InputError, match="no split set"):
        stored_folds(loaded, store, "other")


def test_run_cv_stores_results_and_resume_skips_finished_folds(store: Store) -> None:
    data = planted_cohort(60)
    write_to_store(store, data, n_folds=3)
    loaded = CohortData.from_store(store, "synth")
    assert loaded.group_sizes == [5, 3]
    folds = stored_folds(loaded, store, "mcat")
    results = ResultStore(store)
    config = CVConfig(model="snn", cohort="synth", options={"epochs": 2}, folds=[0, 1])
    first = run_cv(loaded, config, folds, results=results)
    assert [r.fold for r in first] == [0, 1]
    messages: list[str] = []
    config.folds = None  # same run id: folds 0 and 1 are done, only 2 runs
    second = run_cv(loaded, config, folds, results=results, log=messages.append)
    assert [r.fold for r in second] == [2]
    assert sum("skipped" in m for m in messages) == 2
    assert len(results.fold_results(config.run_id())) == 3
    preds = results.predictions(config.run_id())
    assert len(preds) == 60 and preds["patient_id"].is_unique
    summary = results.summary()
    assert summary.loc[0, "folds"] == 3 and 0.0 <= summary.loc[0, "c_index_mean"] <= 1.0
    table = markdown_table(summary)
    assert table.startswith("| Model | SYNTH | Mean |") and "| snn |" in table


def test_paper_bins_and_selection_are_labelled(store: Store) -> None:
    data = planted_cohort(30)
    folds = kfold_folds(data, 3, seed=0)
    results = ResultStore(store)
    config = CVConfig(model="snn", cohort="synth", splits="k-fold", bins="paper",
                      select="eval", options={"epochs": 1}, folds=[0])
    run_cv(data, config, folds, results=results)
    table = markdown_table(results.summary())
    assert "snn [select=eval] [bins=paper]" in table
    run_cv(data, CVConfig(model="snn", cohort="synth", splits="k-fold", seed=3,
                          options={"epochs": 1, "sampler": "balanced"}, folds=[0]),
           folds, results=results)
    assert "| snn [sampler=balanced] [seed=3] |" in markdown_table(results.summary())
    with pytest.raises(InputError, match="no epoch selection"):
        run_cv(data, CVConfig(model="coxnet", cohort="synth", select="inner"), folds)


def test_unknown_bins_rejected() -> None:
    with pytest.raises(InputError, match="choose among"):
        CVConfig(model="snn", cohort="x", bins="all").validate()


def test_a_fold_with_constant_risk_is_flagged_in_results_and_tables(store: Store) -> None:
    data = planted_cohort(40)
    folds = kfold_folds(data, 2, seed=0)
    results = ResultStore(store)
    # a one-point path holds only the largest penalty, where every coefficient is zero
    config = CVConfig(model="coxnet", cohort="synth", splits="k-fold",
                      options={"n_alphas": 1})
    out = run_cv(data, config, folds, results=results)
    assert all(r.note and "constant risk" in r.note for r in out)
    assert all(r.metrics["c_index"] == pytest.approx(0.5) for r in out)
    stored = results.fold_results(config.run_id())
    assert stored["note"].str.contains("null model").all()
    table = markdown_table(results.summary())
    assert "† 2/2" in table and "constant risk" in table.splitlines()[-1]
    run_cv(data, CVConfig(model="snn", cohort="synth", splits="k-fold",
                          options={"epochs": 1}, folds=[0]), folds, results=results)
    snn_row = next(line for line in markdown_table(results.summary()).splitlines()
                   if line.startswith("| snn"))
    assert "†" not in snn_row


def test_labels_name_what_identifies_a_run_and_hidden_runs_are_listed() -> None:
    import json

    import pandas as pd

    from casegraph.models.results import _options_label

    config = json.dumps({"options": {"stage1_cache": "/x/cache", "stage": "all", "epochs": 3,
                                     "k": 8}, "group_set": "all"})
    assert _options_label(config) == "k=8,group_set=all"
    base = {"model": "snn", "cohort": "blca", "selection": "last", "bins": "train", "seed": 0,
            "options": "", "noted_folds": "", "c_index_mean": 0.6, "c_index_std": 0.01}
    summary = pd.DataFrame([{**base, "run_id": "snn-blca-old"},
                            {**base, "run_id": "snn-blca-new", "c_index_mean": 0.7}])
    table = markdown_table(summary)
    assert "0.700 ± 0.010" in table and "0.600" not in table.split("hidden")[0]
    assert "hidden: 1 older run(s) of snn on BLCA (snn-blca-old)" in table
