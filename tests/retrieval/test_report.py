"""The query's KM figure: its numbers are the shared survival module's (weighted KM, log-log
band, censor ticks, predicted curve as steps, numbers at risk), and the PNG is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from casegraph import retrieval
from casegraph.ingest.store import Store
from casegraph.models.neighbourhood import (
    at_risk_counts,
    censor_marks,
    effective_counts,
    kaplan_meier,
    km_confidence_band,
)
from casegraph.models.plots import km_curve
from casegraph.retrieval.report import km_plot_data, plot_km


def test_km_figure_numbers_are_the_shared_modules(tiny_store: Store, tmp_path: Path) -> None:
    result = retrieval.query(tiny_store, patient_id="A05", k=6)
    t = np.asarray([n.time for n in result.neighbours])
    e = np.asarray([n.event for n in result.neighbours], dtype=bool)
    w = np.asarray([n.weight for n in result.neighbours])
    data = km_plot_data(result)
    times, surv, _, _ = kaplan_meier(t, e, w)  # KM does not care about the scale
    assert data.curve.times == pytest.approx(times) and data.curve.survival == pytest.approx(surv)
    _, _, n_eff, d_eff = kaplan_meier(t, e, effective_counts(w))
    lower, upper = km_confidence_band(surv, n_eff, d_eff)
    assert data.curve.lower == pytest.approx(lower) and data.curve.upper == pytest.approx(upper)
    assert np.all(data.curve.lower <= data.curve.survival + 1e-12)
    assert np.all(data.curve.survival <= data.curve.upper + 1e-12)
    assert data.effective_n == pytest.approx(w.sum() ** 2 / (w * w).sum())
    ticks, tick_surv = censor_marks(t, e, w)
    assert data.curve.censor_times == pytest.approx(ticks)
    assert data.curve.censor_survival == pytest.approx(tick_surv)
    # the predicted curve as steps: from (0, 1), one step per bin end
    assert data.predicted_x[0] == 0.0 and data.predicted_y[0] == 1.0
    assert data.predicted_y[1:] == pytest.approx(result.survival.survival)
    assert np.all(np.isfinite(data.predicted_x))
    assert data.at_risk.tolist() == at_risk_counts(t, data.table_times).tolist()
    png = plot_km(result, tmp_path / "km.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_equal_weights_give_the_plain_km_and_its_band(tiny_store: Store) -> None:
    result = retrieval.query(tiny_store, patient_id="A05", k=5)
    equal = 1.0 / len(result.neighbours)
    result = result.model_copy(update={"neighbours": [
        n.model_copy(update={"weight": equal}) for n in result.neighbours]})
    data = km_plot_data(result)
    plain = km_curve([n.time for n in result.neighbours],
                     [n.event for n in result.neighbours], "plain")
    assert data.effective_n == pytest.approx(5.0)
    assert data.curve.survival == pytest.approx(plain.survival)
    assert data.curve.lower == pytest.approx(plain.lower)
    assert data.curve.upper == pytest.approx(plain.upper)
