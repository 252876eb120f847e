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


def test_km_band_matches_lifelines_log_log_band() -> None:
    from casegraph.models.neighbourhood import km_confidence_band

    lifelines = pytest.importorskip("lifelines")
    times, surv, at_risk, deaths = kaplan_meier(TIME, EVENT)
    lower, upper = km_confidence_band(surv, at_risk, deaths)
    band = lifelines.KaplanMeierFitter().fit(TIME, EVENT).confidence_interval_.loc[times]
    np.testing.assert_allclose(lower, band.iloc[:, 0].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(upper, band.iloc[:, 1].to_numpy(), atol=1e-12)
    assert np.all(lower <= surv) and np.all(surv <= upper)


def test_weighted_km_band_matches_lifelines_with_weights() -> None:
    from casegraph.models.neighbourhood import km_confidence_band

    lifelines = pytest.importorskip("lifelines")
    weight = np.array([2.0, 1.0, 3.0, 1.0, 2.0, 1.0, 1.0])
    times, surv, at_risk, deaths = kaplan_meier(TIME, EVENT, weight)
    lower, upper = km_confidence_band(surv, at_risk, deaths, alpha=0.1)
    fitter = lifelines.KaplanMeierFitter(alpha=0.1).fit(TIME, EVENT, weights=weight)
    band = fitter.confidence_interval_.loc[times]
    np.testing.assert_allclose(surv, fitter.survival_function_at_times(times).to_numpy())
    np.testing.assert_allclose(lower, band.iloc[:, 0].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(upper, band.iloc[:, 1].to_numpy(), atol=1e-12)


def test_km_band_edges_stay_in_the_unit_interval() -> None:
    from casegraph.models.neighbourhood import effective_counts, km_confidence_band

    # no death before 3: S = 1 and a band of (1, 1); the last patient dies: S = 0 -> (0, 0)
    _, surv, at_risk, deaths = kaplan_meier([1.0, 2.0, 3.0, 4.0],
                                           [False, False, True, True])
    lower, upper = km_confidence_band(surv, at_risk, deaths)
    assert lower.tolist()[:2] == [1.0, 1.0] and upper.tolist()[:2] == [1.0, 1.0]
    assert lower[-1] == 0.0 and upper[-1] == 0.0
    assert 0.0 < lower[2] < surv[2] < upper[2] < 1.0
    np.testing.assert_allclose(effective_counts([0.25, 0.25, 0.25, 0.25]), [1.0] * 4)
    assert effective_counts([0.9, 0.1]).sum() == pytest.approx(1.0 / (0.81 + 0.01))
    assert effective_counts([0.0, 0.0]).tolist() == [0.0, 0.0]
