"""The figures render to PNG files, and the numbers they draw match lifelines / hand counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from casegraph.models.neighbourhood import (
    at_risk_counts,
    censor_marks,
    greenwood_variance,
    kaplan_meier,
    step_points,
)
from casegraph.models.plots import (
    calibration_data,
    calibration_plot,
    fold_bin_edges,
    km_plot,
    predicted_curves_plot,
    risk_group_km,
    td_auc_data,
    td_auc_plot,
)
from casegraph.models.targets import bin_edges
from casegraph.schema import SurvivalTarget

lifelines = pytest.importorskip("lifelines")

TIME = np.array([5.0, 8.0, 8.0, 12.0, 20.0, 25.0, 30.0])
EVENT = np.array([True, True, False, True, False, True, False])
MIN_PNG_BYTES = 5_000


def _predictions(n: int = 40, n_folds: int = 2, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold predictions where a higher risk means an earlier time; survival =
    exp(-risk-scaled hazard) at 4 bins, decreasing."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = np.round(rng.exponential(20.0 * np.exp(-risk)) + 1.0, 1)
    event = rng.random(n) < 0.7
    survival = [list(np.exp(-np.exp(r) * np.array([0.1, 0.3, 0.6, 1.0]))) for r in risk]
    return pd.DataFrame({"fold": np.arange(n) % n_folds, "patient_id": [f"p{i}" for i in
                         range(n)], "risk": risk, "time": time, "event": event,
                         "survival": survival})


def test_greenwood_variance_and_steps_match_lifelines() -> None:
    times, surv, at_risk, deaths = kaplan_meier(TIME, EVENT)
    fitter = lifelines.KaplanMeierFitter().fit(TIME, EVENT)
    var = greenwood_variance(surv, at_risk, deaths)
    # lifelines keeps Greenwood's sum for its band: Var = S^2 * sum d / (n (n - d))
    by_hand = surv ** 2 * np.cumsum(deaths / (at_risk * (at_risk - deaths)))
    np.testing.assert_allclose(var, by_hand)
    assert var[0] == pytest.approx((6 / 7) ** 2 * 1 / (7 * 6))
    x, y = step_points(times, surv)
    assert x[0] == 0.0 and y[0] == 1.0 and len(x) == len(times) + 1
    expected = fitter.event_table["at_risk"]
    assert at_risk_counts(TIME, expected.index).tolist() == expected.tolist()
    assert at_risk_counts(TIME, [0.0, 9.0, 31.0]).tolist() == [7, 4, 0]
    ticks, tick_surv = censor_marks(TIME, EVENT)
    assert ticks.tolist() == [8.0, 20.0, 30.0]
    np.testing.assert_allclose(tick_surv, fitter.survival_function_at_times(ticks).to_numpy())


def test_risk_group_km_numbers_match_lifelines(tmp_path: Path) -> None:
    from lifelines.statistics import logrank_test

    pred = _predictions()
    figure = risk_group_km(pred)
    high = np.zeros(len(pred), dtype=bool)
    for _, rows in pred.groupby("fold"):
        high[rows.index] = rows["risk"] > rows["risk"].median()
    test = logrank_test(pred["time"][high], pred["time"][~high], pred["event"][high],
                        pred["event"][~high])
    assert figure.p_value == pytest.approx(test.p_value, rel=1e-6)
    for curve, mask in zip(figure.curves, (~high, high), strict=True):
        fitter = lifelines.KaplanMeierFitter().fit(pred["time"][mask], pred["event"][mask])
        np.testing.assert_allclose(
            curve.survival, fitter.survival_function_at_times(curve.times).to_numpy())
        band = fitter.confidence_interval_.loc[curve.times]
        np.testing.assert_allclose(curve.lower, band.iloc[:, 0].to_numpy(), atol=1e-9)
        np.testing.assert_allclose(curve.upper, band.iloc[:, 1].to_numpy(), atol=1e-9)
        counts = [(pred["time"][mask] >= t).sum() for t in figure.table_times]
        assert figure.at_risk[curve.label].tolist() == counts
    assert figure.table_times[0] == 0 and figure.table_times[-1] <= pred["time"].max()
    png = tmp_path / "km.png"
    assert km_plot(pred, png, "synthetic") == pytest.approx(figure.p_value)
    assert png.stat().st_size > MIN_PNG_BYTES


def test_predicted_curves_are_steps(tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    drawn = predicted_curves_plot([3.0, 6.0, np.inf], [[0.9, 0.7, 0.4], [0.8, 0.5, 0.1]],
                                  ["a", "b"], png)
    assert png.stat().st_size > MIN_PNG_BYTES
    x, y = drawn[1]
    assert x.tolist() == [0.0, 3.0, 6.0, 6.0] and y.tolist() == [1.0, 0.8, 0.5, 0.1]


def test_td_auc_per_fold_matches_scikit_survival(tmp_path: Path) -> None:
    from sksurv.metrics import cumulative_dynamic_auc

    pred = _predictions()
    data = td_auc_data(pred)
    assert set(data["fold"]) == {0, 1} and data["auc"].between(0, 1).all()
    rows = pred["fold"] == 0
    train = SurvivalTarget.from_arrays(pred["time"][~rows], pred["event"][~rows])
    test = SurvivalTarget.from_arrays(pred["time"][rows], pred["event"][rows])
    fold0 = data[data["fold"] == 0]
    tau = min(train.time.max(), test.time.max())
    clipped = SurvivalTarget.from_arrays(np.minimum(test.time, tau), test.event)
    auc, _ = cumulative_dynamic_auc(train.to_structured(), clipped.to_structured(),
                                    pred["risk"][rows].to_numpy(), fold0["time"].to_numpy())
    np.testing.assert_allclose(fold0["auc"], auc)
    assert fold0["auc"].mean() > 0.5  # risks were planted
    png = tmp_path / "auc.png"
    td_auc_plot(pred, png, "synthetic")
    assert png.stat().st_size > MIN_PNG_BYTES


def test_calibration_points_match_lifelines(tmp_path: Path) -> None:
    from casegraph.models.targets import survival_at as binned

    pred = _predictions(n=50)
    horizon = 10.0
    cal = calibration_data(pred, horizon=horizon, n_groups=5)
    points = cal.points
    assert points["n"].tolist() == [10] * 5 and cal.horizon == horizon
    predicted = np.empty(len(pred))
    for fold in (0, 1):
        rows = (pred["fold"] == fold).to_numpy()
        edges = bin_edges(SurvivalTarget.from_arrays(pred["time"][~rows], pred["event"][~rows]))
        np.testing.assert_allclose(fold_bin_edges(pred, fold, 4), edges)
        predicted[rows] = binned(np.vstack(pred["survival"][rows]), edges, [horizon])[:, 0]
    order = np.argsort(predicted, kind="stable")
    for group, members in enumerate(np.array_split(order, 5)):
        point = points.iloc[group]
        assert point["predicted"] == pytest.approx(predicted[members].mean())
        fitter = lifelines.KaplanMeierFitter().fit(pred["time"][members],
                                                   pred["event"][members])
        assert point["observed"] == pytest.approx(
            float(fitter.survival_function_at_times([horizon]).iloc[0]))
        assert point["lower"] <= point["observed"] <= point["upper"]
    assert points["predicted"].is_monotonic_increasing
    png = tmp_path / "calibration.png"
    calibration_plot(pred, png, "synthetic", horizon=horizon)
    assert png.stat().st_size > MIN_PNG_BYTES


def test_calibration_without_survival_curves_is_empty(tmp_path: Path) -> None:
    pred = _predictions().assign(survival=None)
    cal = calibration_plot(pred, tmp_path / "c.png", "coxnet")
    assert cal.points.empty and (tmp_path / "c.png").stat().st_size > MIN_PNG_BYTES
