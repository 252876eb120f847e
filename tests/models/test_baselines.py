"""Baselines learn a planted signal clearly better than chance; outputs are well formed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from casegraph.models.base import SurvivalModel
from casegraph.models.metrics import harrell_c
from casegraph.models.registry import build_model, model_names
from tests.models.synthetic import planted_cohort


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _fit_and_score(name: str, bag_dir: Path | None = None, **options: object) -> float:
    data = planted_cohort(160, seed=1, bag_dir=bag_dir)
    train, test = data.subset(range(120)), data.subset(range(120, 160))
    model = build_model(name, **options)
    assert isinstance(model, SurvivalModel)
    pred = model.fit(train).predict(test)
    assert pred.patient_ids == test.patient_ids
    assert pred.survival is not None and pred.bin_edges is not None
    assert pred.survival.shape == (40, len(pred.bin_edges) - 1)
    assert (pred.survival >= 0).all() and (pred.survival <= 1 + 1e-9).all()
    assert (np.diff(pred.survival, axis=1) <= 1e-9).all()
    assert pred.embedding is not None and pred.embedding.shape[0] == 40
    return harrell_c(pred.risk, test.target)


def test_baselines_are_registered() -> None:
    assert {"coxnet", "snn", "abmil", "late_fusion"} <= set(model_names())


def test_snn_beats_chance_on_planted_signal() -> None:
    assert _fit_and_score("snn", epochs=25, lr=1e-3) > 0.7


def test_coxnet_beats_chance_on_planted_signal() -> None:
    assert _fit_and_score("coxnet", n_alphas=10) > 0.7


def test_abmil_beats_chance_on_planted_signal(tmp_path: Path) -> None:
    assert _fit_and_score("abmil", bag_dir=tmp_path, epochs=12, lr=1e-3, max_patches=20) > 0.7


def test_mean_pool_and_late_fusion_run(tmp_path: Path) -> None:
    assert _fit_and_score("abmil", bag_dir=tmp_path, epochs=10, lr=1e-3, pooling="mean") > 0.7
    assert _fit_and_score("late_fusion", bag_dir=tmp_path, epochs=3) > 0.5


def test_selection_modes_record_the_selected_epoch(tmp_path: Path) -> None:
    data = planted_cohort(80, seed=2)
    train, valid = data.subset(range(60)), data.subset(range(60, 80))
    inner = build_model("snn", epochs=4, select="inner").fit(train)
    assert 0 <= inner.selected_epoch_ < 4  # type: ignore[attr-defined]
    on_eval = build_model("snn", epochs=4, select="eval").fit(train, valid)
    assert all("select_c_index" in row for row in on_eval.history_)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="valid"):
        build_model("snn", epochs=1, select="eval").fit(train)
    on_eval.save(tmp_path / "snn.pt")  # type: ignore[attr-defined]
    assert (tmp_path / "snn.pt").stat().st_size > 0


def test_wsi_model_without_slides_says_so() -> None:
    with pytest.raises(ValueError, match="no slide features"):
        build_model("abmil", epochs=1).fit(planted_cohort(20))


def test_given_bin_edges_are_used() -> None:
    edges = np.array([0.0, 1.0, 2.0, np.inf])
    data = planted_cohort(30)
    pred = build_model("snn", epochs=1, bin_edges=edges).fit(data).predict(data)
    assert np.array_equal(pred.bin_edges, edges) and pred.survival.shape == (30, 3)


def test_balanced_sampler_equalises_bin_by_censoring_classes() -> None:
    from casegraph.models.training import _balanced_order

    labels = torch.tensor([0] * 90 + [1] * 10)
    events = torch.ones(100)
    order = _balanced_order(labels, events, np.random.default_rng(0))
    assert len(order) == 100
    assert 30 < (order >= 90).sum() < 70  # the rare class drawn about half the time
    model = build_model("snn", epochs=2, sampler="balanced").fit(planted_cohort(40))
    assert len(model.history_) == 2  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="choose among"):
        build_model("snn", sampler="weighted")
