"""MurreNet and CCL through the CV runner on a tiny ingested store with simulated bags
(what `casegraph train --model murrenet|ccl` does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from casegraph.ingest.store import Store
from casegraph.models.ccl import CCLModel
from casegraph.models.cv import CVConfig, run_cv, stored_folds
from casegraph.models.data import CohortData
from tests.models.synthetic import ingested_sim_store


@pytest.fixture
def sim_store(tmp_path: Path) -> Store:
    return ingested_sim_store(tmp_path, 30, n_patches=24, dim=8, seed=1, multi_slide=0.3)


def test_ccl_uses_the_stored_centres_of_an_ingested_store(sim_store: Store) -> None:
    data = CohortData.from_store(sim_store, "sim", require_slides=True)
    assert data.slide_ids and data.summaries is not None
    model = CCLModel(dim=8, heads=2)
    centres = model.patient_centres(data)
    assert model.centre_sources_ == {"store": len(data), "bag": 0}
    assert all(c.shape == (6, 8) for c in centres)
    other = CCLModel(dim=8, heads=2, kmeans_seed=5)
    other.patient_centres(data)
    assert other.centre_sources_ == {"store": 0, "bag": len(data)}


@pytest.mark.parametrize("model,options", [
    ("murrenet", {"dim": 8, "heads": 2, "epochs": 1, "max_patches": 16}),
    ("ccl", {"dim": 8, "heads": 2, "epochs": 1}),
])
def test_cv_runner_trains_each_fusion_model(sim_store: Store, model: str,
                                             options: dict[str, object]) -> None:
    torch.set_num_threads(1)
    data = CohortData.from_store(sim_store, "sim", require_slides=True)
    folds = stored_folds(data, sim_store, "mcat")
    config = CVConfig(model=model, cohort="sim", options=options, folds=[0])
    [result] = run_cv(data, config, folds)
    assert np.isfinite(result.metrics["c_index"])
