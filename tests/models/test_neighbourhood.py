"""Kaplan-Meier, time bins and the neighbour risk against lifelines / hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from casegraph.models.neighbourhood import (
    bin_end_times,
    kaplan_meier,
    median_survival,
    neighbour_prediction,
    softmax_weights,
    survival_at,
)

TIME = np.array([5.0, 8.0, 8.0, 12.0, 20.0, 25.0, 30.0])
EVENT = np.array([True, True, False, True, False, True, False])


def test_unweighted_km_matches_lifelines() -> None:
    lifelines = pytest.importorskip("lifelines")
    times, surv, at_risk, deaths = kaplan_meier(TIME, EVENT)
    fitter = lifelines.KaplanMeierFitter().fit(TIME, EVENT)
    expected = fitter.survival_function_at_times(times).to_numpy()
    np.testing.assert_allclose(surv, expected)
    assert at_risk.tolist() == [7, 6, 4, 3, 2, 1] and deaths.tolist() == [1, 1, 1, 0, 1, 0]
    assert median_survival(times, surv) == pytest.approx(
        float(fitter.median_survival_time_))


def test_weighted_km_equals_replicated_rows() -> None:
    w = np.array([1, 2, 1, 1, 3, 1, 1], dtype=float)
    _, weighted, _, _ = kaplan_meier(TIME, EVENT, w)
    rep = np.repeat(np.arange(len(TIME)), w.astype(int))
    _, replicated, _, _ = kaplan_meier(TIME[rep], EVENT[rep])
    np.testing.assert_allclose(weighted, replicated)


def test_step_lookup_and_bins() -> None:
    times, surv, _, _ = kaplan_meier(TIME, EVENT)
    np.testing.assert_allclose(survival_at(times, surv, [0, 5, 6, 100]),
                               [1.0, surv[0], surv[0], surv[-1]])
    ends = bin_end_times(TIME, EVENT, n_bins=4)
    assert ends.shape == (4,) and np.all(np.diff(ends) >= 0) and ends[-1] == 30.0
    assert bin_end_times([], [], n_bins=3).tolist() == [1.0, 2.0, 3.0]


def test_softmax_weights_and_prediction() -> None:
    w = softmax_weights([0.9, 0.8, 0.1], temperature=0.1)
    assert w.sum() == pytest.approx(1.0) and w[0] > w[1] > w[2]
    assert softmax_weights([]).size == 0
    ends = np.array([10.0, 20.0])
    risk_early, s_early = neighbour_prediction([2, 3], [True, True], [0.5, 0.5], ends)
    risk_late, s_late = neighbour_prediction([50, 60], [True, False], [0.5, 0.5], ends)
    assert risk_early > risk_late and s_early.tolist() == [0.0, 0.0]
    assert s_late.tolist() == [1.0, 1.0] and risk_late == -2.0
