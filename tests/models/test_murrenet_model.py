"""MurreNet end to end on a tiny planted-signal cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from casegraph.errors import InputError
from casegraph.models.base import SurvivalModel
from casegraph.models.murrenet import ABLATIONS, MurreNetModel
from casegraph.models.registry import build_model
from tests.models.fusion_data import harrell_c, planted_cohort

TINY = {"dim": 16, "heads": 2, "dropout": 0.0}


def test_murrenet_is_registered_and_a_survival_model() -> None:
    model = build_model("murrenet", **TINY)
    assert isinstance(model, SurvivalModel)
    assert isinstance(model, MurreNetModel) and model.ablation == "F"
    assert (model.alpha, model.beta, model.gamma) == (1e-4, 1e-4, 1.0)


@pytest.mark.slow
def test_murrenet_trains_loss_falls_and_ranks_better_than_chance(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = planted_cohort(tmp_path)
    model = MurreNetModel(**TINY, epochs=6, lr=2e-3, max_patches=32, seed=0).fit(data)
    losses = [h["loss"] for h in model.history_]
    assert losses[-1] < losses[0]
    pred = model.predict(data)
    assert pred.risk.shape == (40,)
    assert pred.survival is not None and pred.survival.shape == (40, 4)
    assert np.all(np.diff(pred.survival, axis=1) <= 1e-12)
    assert pred.embedding is not None and pred.embedding.shape == (40, 32)
    assert harrell_c(pred.risk, data.target) > 0.6


@pytest.mark.parametrize("letter", sorted(ABLATIONS))
def test_every_ablation_row_runs_a_step(tmp_path: Path, letter: str) -> None:
    torch.set_num_threads(1)
    data = planted_cohort(tmp_path, n=8, patches=(5, 9))
    model = MurreNetModel(ablation=letter, **TINY, epochs=1).fit(data)
    pred = model.predict(data.subset([0, 1]))
    assert np.isfinite(pred.risk).all()
    assert set(model.history_[0]) >= {"nll", "loss"}


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="choose among"):
        MurreNetModel(ablation="Z")
    with pytest.raises(ValueError, match="choose among"):
        MurreNetModel(sim_target="nope")


def test_patient_without_slides_is_an_input_error(tmp_path: Path) -> None:
    data = planted_cohort(tmp_path, n=6, patches=(5, 9))
    data.bags[0] = []
    with pytest.raises(InputError, match="p0"):
        MurreNetModel(**TINY, epochs=1).fit(data)


def test_save_load_round_trip_and_given_bin_edges(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = planted_cohort(tmp_path, n=8, patches=(5, 9))
    edges = np.array([0.0, 1.0, 5.0, np.inf])
    model = MurreNetModel(**TINY, ablation="C", epochs=1, bin_edges=edges).fit(data)
    assert model.n_bins == 3
    model.save(tmp_path / "m.pt")
    loaded = MurreNetModel.load(tmp_path / "m.pt")
    assert isinstance(loaded, MurreNetModel) and loaded.ablation == "C"
    a, b = model.predict(data), loaded.predict(data)
    assert a.survival is not None and a.survival.shape == (8, 3)
    assert np.allclose(a.risk, b.risk)


def test_subsample_patches_is_seeded_bounded_and_ordered() -> None:
    from casegraph.models.fusion_common import subsample_patches

    bag = np.arange(20, dtype=np.float32)[:, None]
    a = subsample_patches(bag, 5, np.random.default_rng(0))
    b = subsample_patches(bag, 5, np.random.default_rng(0))
    assert a.shape == (5, 1) and np.array_equal(a, b)
    assert np.all(np.diff(a[:, 0]) > 0)
    assert subsample_patches(bag, None, np.random.default_rng(0)) is bag
    assert subsample_patches(bag, 50, np.random.default_rng(0)) is bag
