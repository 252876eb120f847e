"""Real data: the SNN baseline on TCGA-BLCA (shared MCAT split, fold 0) ranks patients
clearly better than chance. Slow (ingest + a short training run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from casegraph.ingest.pipeline import IngestRequest, ingest
from casegraph.ingest.splits import read_split_dir
from casegraph.ingest.store import Store
from casegraph.ingest.tables import read_mcat_table
from casegraph.models.cv import CVConfig, run_cv, stored_folds
from casegraph.models.data import CohortData


@pytest.mark.slow
def test_snn_on_real_blca_fold0(shared_data: Path, store: Store) -> None:
    torch.set_num_threads(1)
    tcga = shared_data / "tcga"
    ingest(store, IngestRequest(
        tables=[read_mcat_table(tcga / "porpoise" / "tcga_blca_all_clean.csv.zip")],
        split_sets=[read_split_dir(tcga / "splits" / "tcga_blca")]))
    data = CohortData.from_store(store, "blca", group_set="all")
    assert len(data) == 373 and data.group_sizes[0] > 2000
    folds = stored_folds(data, store, "mcat")
    (result,) = run_cv(data, CVConfig(model="snn", cohort="blca", options={"epochs": 10},
                                      folds=[0]), folds)
    assert result.n_train + result.n_eval == 373
    assert result.metrics["c_index"] > 0.55
