"""The model-version contract, over every registered model: a tiny fit, predictions that
are survival curves, and save -> load -> identical predictions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from casegraph.ingest.store import Store
from casegraph.models.base import VersionedModel
from casegraph.models.data import CohortData
from casegraph.models.registry import build_model, model_names
from casegraph.models.versioning import is_msrl
from tests.models.synthetic import planted_cohort, write_to_store

MSRL_TINY = {"dim": 16, "proj_dim": 8, "batch_size": 8, "pretrain_steps": 2, "epochs": 1}
TINY: dict[str, dict[str, Any]] = {
    "snn": {"epochs": 2, "hidden": 8},
    "coxnet": {"n_alphas": 5, "inner_folds": 2},
    "abmil": {"epochs": 2, "hidden": 8, "max_patches": 8},
    "late_fusion": {"epochs": 2, "hidden": 8, "max_patches": 8},
    "murrenet": {"dim": 8, "heads": 2, "epochs": 1, "max_patches": 16},
    "ccl": {"dim": 8, "heads": 2, "epochs": 1},
    "retrieval_impute": {"k": 3},
    "neighbour_km": {"k": 3},
}


def tiny_options(name: str) -> dict[str, Any]:
    if is_msrl(name):
        from casegraph.models.msrl import ABLATIONS

        return {k: v for k, v in MSRL_TINY.items() if k not in ABLATIONS.get(name, {})}
    return dict(TINY.get(name, {"epochs": 1}))


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("contract")
    store = Store.open(root / "store")
    write_to_store(store, planted_cohort(24, bag_dir=root / "bags", n_patches=12))
    yield store
    store.close()


def save_and_load(model: Any, store: Store, folder: Path) -> Any:
    if is_msrl(model.name):
        version = model.save_version(store, "synth")
        return type(model).load_version(store, version)
    folder.mkdir()
    assert isinstance(model, VersionedModel)
    model.save_files(folder)
    return type(model).load_files(folder)


@pytest.mark.parametrize("name", model_names())
def test_every_model_keeps_the_version_contract(name: str, tiny_store: Store,
                                                tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = CohortData.from_store(tiny_store, "synth", require_slides=True)
    train = data.subset(range(18))
    model = build_model(name, **tiny_options(name)).fit(train)
    prediction = model.predict(data)
    assert prediction.patient_ids == data.patient_ids
    assert np.isfinite(prediction.risk).all() and prediction.risk.shape == (len(data),)
    if prediction.survival is not None:
        surv = prediction.survival
        assert surv.shape[0] == len(data)
        assert ((surv >= 0) & (surv <= 1)).all()
        assert (np.diff(surv, axis=1) <= 1e-12).all()
    loaded = save_and_load(model, tiny_store, tmp_path / "files")
    again = loaded.predict(data)
    np.testing.assert_allclose(again.risk, prediction.risk, rtol=1e-6, atol=1e-12)
    if prediction.survival is not None:
        np.testing.assert_allclose(again.survival, prediction.survival, rtol=1e-6, atol=1e-12)
    if prediction.embedding is not None:
        np.testing.assert_allclose(again.embedding, prediction.embedding, rtol=1e-6, atol=1e-7)
