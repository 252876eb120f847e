"""Survival losses: hand-computed values, an independent Cox implementation (lifelines),
gradients, and survival-curve shape."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from casegraph.models.losses import (
    cox_ph_loss,
    nll_survival_loss,
    risk_from_survival,
    survival_from_logits,
)

LOG2 = math.log(2.0)


def test_survival_from_zero_logits_halves_each_bin() -> None:
    hazards, surv = survival_from_logits(torch.zeros(1, 4))
    assert torch.allclose(hazards, torch.full((1, 4), 0.5))
    assert torch.allclose(surv, torch.tensor([[0.5, 0.25, 0.125, 0.0625]]))
    assert torch.allclose(risk_from_survival(surv), torch.tensor([-0.9375]))


def test_survival_curves_in_unit_interval_and_non_increasing() -> None:
    logits = torch.randn(64, 6, generator=torch.Generator().manual_seed(0)) * 5
    _, surv = survival_from_logits(logits)
    assert (surv >= 0).all() and (surv <= 1).all()
    assert (surv[:, 1:] <= surv[:, :-1]).all()


def test_nll_hand_computed_values() -> None:
    logits = torch.zeros(4, 4)
    label = torch.tensor([1, 1, 0, 3])
    event = torch.tensor([True, False, True, False])
    per = nll_survival_loss(logits, label, event, reduction="none")
    # uncensored y=1: -log S0 - log h1; censored y=1: -log S1; uncensored y=0: -log h0;
    # censored y=3: -log S3
    expected = torch.tensor([2 * LOG2, 2 * LOG2, LOG2, 4 * LOG2])
    assert torch.allclose(per, expected, atol=1e-6)
    assert torch.isclose(nll_survival_loss(logits, label, event), expected.mean())
    assert torch.isclose(nll_survival_loss(logits, label, event, reduction="sum"), expected.sum())


def test_nll_alpha_weights_uncensored_terms() -> None:
    logits = torch.zeros(2, 4)
    label = torch.tensor([1, 1])
    event = torch.tensor([1.0, 0.0])
    per = nll_survival_loss(logits, label, event, alpha=0.5, reduction="none")
    # uncensored keeps weight 1 ((1-a) + a), censored gets (1-a)
    assert torch.allclose(per, torch.tensor([2 * LOG2, 0.5 * 2 * LOG2]), atol=1e-6)


def test_nll_unknown_reduction() -> None:
    with pytest.raises(ValueError, match="choose among"):
        nll_survival_loss(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([1.0]),
                          reduction="avg")


def test_nll_gradients_flow() -> None:
    logits = torch.randn(5, 4, requires_grad=True)
    loss = nll_survival_loss(logits, torch.tensor([0, 1, 2, 3, 3]),
                             torch.tensor([1, 0, 1, 0, 1]))
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_cox_breslow_hand_computed() -> None:
    risk = torch.tensor([0.0, LOG2, 0.0])
    loss = cox_ph_loss(risk, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 1, 0]))
    # events: t=1 risk set sum 4, t=2 risk set sum 3 -> (log4 - log2 + log3) / 2
    assert loss.item() == pytest.approx(math.log(6.0) / 2)


def test_cox_ties_breslow_vs_efron_hand_computed() -> None:
    risk = torch.tensor([0.0, LOG2, 0.0])
    time = torch.tensor([1.0, 1.0, 2.0])
    event = torch.tensor([True, True, False])
    assert cox_ph_loss(risk, time, event).item() == pytest.approx(1.5 * LOG2)
    # Efron: denominators 4 and 4 - 3/2
    assert cox_ph_loss(risk, time, event, ties="efron").item() == pytest.approx(
        math.log(5.0) / 2)


def test_cox_no_events_is_zero_and_differentiable() -> None:
    risk = torch.randn(3, requires_grad=True)
    loss = cox_ph_loss(risk, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3))
    loss.backward()
    assert loss.item() == 0.0


def test_cox_unknown_ties() -> None:
    with pytest.raises(ValueError, match="choose among"):
        cox_ph_loss(torch.zeros(2), torch.ones(2), torch.ones(2), ties="exact")


def test_cox_efron_matches_lifelines_partial_likelihood() -> None:
    lifelines = pytest.importorskip("lifelines")
    rng = np.random.default_rng(3)
    n = 60
    x = rng.normal(size=n)
    time = np.round(rng.exponential(np.exp(-0.7 * x)) * 4) + 1.0  # rounded: many ties
    event = rng.random(n) < 0.7
    fitter = lifelines.CoxPHFitter().fit(
        pd.DataFrame({"x": x, "T": time, "E": event}), "T", "E")
    beta = float(fitter.params_["x"])
    ours = cox_ph_loss(torch.tensor(beta * x), torch.tensor(time), torch.tensor(event),
                       ties="efron")
    assert -ours.item() * event.sum() == pytest.approx(fitter.log_likelihood_, rel=1e-6)


def _breslow_loop(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    total = 0.0
    for i in np.flatnonzero(event):
        total += risk[i] - np.log(np.exp(risk[time >= time[i]]).sum())
    return -total / event.sum()


def test_cox_breslow_matches_direct_loop_and_has_gradients() -> None:
    rng = np.random.default_rng(4)
    risk = rng.normal(size=40)
    time = rng.integers(1, 10, size=40).astype(float)
    event = rng.random(40) < 0.6
    r = torch.tensor(risk, requires_grad=True)
    loss = cox_ph_loss(r, torch.tensor(time), torch.tensor(event))
    assert loss.item() == pytest.approx(_breslow_loop(risk, time, event))
    loss.backward()
    assert r.grad is not None and torch.isfinite(r.grad).all()
