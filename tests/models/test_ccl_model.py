"""CCL end to end on a tiny planted-signal cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from casegraph.ingest.summaries import summarize_features
from casegraph.models.base import SurvivalModel
from casegraph.models.ccl import CCLModel, CCLNet
from casegraph.models.registry import build_model
from tests.models.fusion_data import harrell_c, planted_cohort

TINY = {"dim": 16, "heads": 2, "dropout": 0.0, "k": 3}


def test_ccl_is_registered_and_a_survival_model() -> None:
    model = build_model("ccl", **TINY)
    assert isinstance(model, SurvivalModel) and isinstance(model, CCLModel)
    assert model.encoders == ("pathology", "genomics", "common", "synergy")


@pytest.mark.slow
def test_ccl_trains_loss_falls_ranks_better_than_chance_and_saves_its_state(
        tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = planted_cohort(tmp_path)
    model = CCLModel(**TINY, epochs=8, lr=2e-3, bank_length=4, seed=0).fit(data)
    nll = [h["nll"] for h in model.history_]
    assert nll[-1] < nll[0]
    assert model.centre_sources_ == {"store": 0, "bag": 40}
    pred = model.predict(data)
    assert pred.survival is not None and pred.survival.shape == (40, 4)
    assert pred.embedding is not None and pred.embedding.shape == (40, 16)
    assert harrell_c(pred.risk, data.target) > 0.6
    net = model.net_
    assert isinstance(net, CCLNet)
    state = net.state_dict()
    assert bool(state["anchor.initialised"]) and state["anchor.anchor"].abs().sum() > 0
    assert int(state["bank.count"].sum()) > 0 and not state["bank.memory"].requires_grad
    clone = CCLNet(16, data.group_sizes, 3, 16, 4, model.encoders, True, True, 0.1,
                   "euclidean", 4, 4, heads=2)
    clone.load_state_dict(state)
    assert torch.equal(clone.anchor.anchor, net.anchor.anchor)


def test_precomputed_centres_are_used_when_k_and_seed_match(tmp_path: Path) -> None:
    data = planted_cohort(tmp_path, n=6, patches=(8, 12))
    calls: list[tuple[int, int]] = []

    def lookup(slide_ids, k, seed):  # type: ignore[no-untyped-def]
        calls.append((k, seed))
        if (k, seed) != (3, 0):
            return {}
        return {s: summarize_features(data.load_bag(int(s[5:])), k, seed) for s in slide_ids}

    data.summaries = lookup
    model = CCLModel(**TINY, epochs=1)
    centres = model.patient_centres(data)
    assert model.centre_sources_ == {"store": 6, "bag": 0}
    expected = summarize_features(data.load_bag(2), 3, 0)[1]
    assert np.allclose(centres[2], expected)
    other = CCLModel(**{**TINY, "k": 2}, epochs=1)
    other.patient_centres(data)
    assert other.centre_sources_ == {"store": 0, "bag": 6}
    forced = CCLModel(**TINY, centres="bag")
    forced.patient_centres(data)
    assert forced.centre_sources_ == {"store": 0, "bag": 6}


@pytest.mark.parametrize(
    "options",
    [
        {"use_cca": False}, {"use_mkd": False}, {"use_cgm": False},
        {"use_cca": False, "use_mkd": False, "use_cgm": False},
        {"n_encoders": 1}, {"n_encoders": 2}, {"n_encoders": 3},
        {"bank_includes_censored": True},
    ],
)
def test_ablation_switches_run_a_step(tmp_path: Path, options: dict[str, object]) -> None:
    torch.set_num_threads(1)
    data = planted_cohort(tmp_path, n=8, patches=(6, 9))
    model = CCLModel(**TINY, epochs=2, bank_length=2, **options).fit(data)  # type: ignore[arg-type]
    pred = model.predict(data.subset([0, 1, 2]))
    assert np.isfinite(pred.risk).all()


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="choose among"):
        CCLModel(centres="nope")
    with pytest.raises(ValueError, match="choose among"):
        CCLModel(encoders=("bogus",))
    with pytest.raises(ValueError):
        CCLModel(n_encoders=2, encoders=("common",))


def test_save_and_load_round_trip_keeps_anchor_bank_and_predictions(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = planted_cohort(tmp_path, n=10, patches=(6, 9))
    model = CCLModel(**TINY, epochs=2, bank_length=3).fit(data)
    model.save(tmp_path / "ccl.pt")
    loaded = CCLModel.load(tmp_path / "ccl.pt")
    assert isinstance(loaded, CCLModel) and loaded.encoders == model.encoders
    a, b = model.predict(data), loaded.predict(data)
    assert np.allclose(a.risk, b.risk) and np.allclose(a.embedding, b.embedding)  # type: ignore[arg-type]
    assert torch.equal(loaded.net_.bank.memory, model.net_.bank.memory)
    assert a.bin_edges is not None and np.array_equal(a.bin_edges, model.edges_)
