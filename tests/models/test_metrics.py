"""Metrics: perfect and reversed risks, guarded IPCW windows, IBS of a known curve."""

from __future__ import annotations

import numpy as np
import pytest

from casegraph.models.base import Prediction
from casegraph.models.evaluate import evaluate_prediction
from casegraph.models.metrics import (
    evaluation_window,
    harrell_c,
    integrated_brier,
    time_dependent_auc,
    uno_c,
)
from casegraph.schema import SurvivalTarget

TIME = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
EVENT = np.array([1, 1, 0, 1, 1, 0, 1, 0], dtype=bool)


def test_harrell_perfect_and_reversed() -> None:
    target = SurvivalTarget.from_arrays(TIME, EVENT)
    assert harrell_c(-TIME, target) == 1.0
    assert harrell_c(TIME, target) == 0.0
    assert harrell_c(np.zeros(8), target) == 0.5


def test_harrell_without_events_is_nan() -> None:
    assert np.isnan(harrell_c([1.0, 2.0], SurvivalTarget.from_arrays([1.0, 2.0], [0, 0])))


def test_uno_and_auc_perfect_risk() -> None:
    rng = np.random.default_rng(0)
    train = SurvivalTarget.from_arrays(rng.exponential(10, 200), rng.random(200) < 0.7)
    test = SurvivalTarget.from_arrays(rng.exponential(10, 80), rng.random(80) < 0.7)
    assert uno_c(-test.time, train, test) == pytest.approx(1.0)
    aucs, mean_auc = time_dependent_auc(-test.time, train, test)
    assert aucs.size > 0 and mean_auc == pytest.approx(1.0)
    assert uno_c(test.time, train, test) == pytest.approx(0.0)


def test_window_respects_training_and_test_ranges() -> None:
    train = SurvivalTarget.from_arrays([1.0, 2.0, 3.0, 4.0, 5.0], [1, 1, 1, 1, 0])
    test = SurvivalTarget.from_arrays([0.5, 1.5, 2.5, 3.5, 50.0], [1, 1, 0, 1, 1])
    window = evaluation_window(train, test)
    assert window is not None
    assert window.tau <= 5.0  # test times beyond the training follow-up are not used
    assert (window.times < window.tau).all() and (window.times >= 1.0).all()
    assert window.test_clipped.time.max() == window.tau
    # would raise inside sksurv without the guard
    assert not np.isnan(uno_c(-test.time, train, test))


def test_integrated_brier_of_perfect_and_uninformative_curves() -> None:
    rng = np.random.default_rng(1)
    train = SurvivalTarget.from_arrays(rng.exponential(10, 300), np.ones(300, dtype=bool))
    test = SurvivalTarget.from_arrays(rng.exponential(10, 100), np.ones(100, dtype=bool))
    times = np.array([2.0, 5.0, 8.0])
    perfect = (test.time[:, None] > times[None, :]).astype(float)
    assert integrated_brier(perfect, times, train, test) == pytest.approx(0.0)
    half = np.full((100, 3), 0.5)
    assert integrated_brier(half, times, train, test) == pytest.approx(0.25)


def test_evaluate_prediction_reports_all_metrics() -> None:
    rng = np.random.default_rng(2)
    time = rng.exponential(10, 60)
    event = rng.random(60) < 0.7
    target = SurvivalTarget.from_arrays(time, event)
    edges = np.array([0.0, 3.0, 8.0, 15.0, np.inf])
    surv = np.tile([0.9, 0.6, 0.3, 0.1], (60, 1))
    pred = Prediction(patient_ids=[str(i) for i in range(60)], risk=-time, survival=surv,
                      bin_edges=edges)
    out = evaluate_prediction(pred, target, target)
    assert out["c_index"] == 1.0
    assert set(out) == {"c_index", "c_index_uno", "mean_auc", "ibs"}
    assert 0.0 < out["ibs"] < 0.5


def test_auc_times_start_at_the_first_test_event() -> None:
    train = SurvivalTarget.from_arrays(np.arange(1.0, 41.0), np.ones(40, dtype=bool))
    # many early censored test patients: the 10th percentile precedes every test event
    test = SurvivalTarget.from_arrays(
        np.concatenate([np.full(10, 2.0), np.arange(10.0, 30.0)]),
        np.concatenate([np.zeros(10, dtype=bool), np.ones(20, dtype=bool)]))
    window = evaluation_window(train, test)
    assert window is not None and window.times.min() >= 10.0
    assert not np.isnan(time_dependent_auc(-test.time, train, test)[1])
