"""Survival metrics (scikit-survival) with the guards its time-range checks need.

- Harrell's C: ``concordance_index_censored`` on the risk (risk = -sum S for discrete
  models, the MCAT-family convention).
- Uno's C (IPCW), cumulative/dynamic time-dependent AUC and the integrated Brier score
  weight by the censoring distribution estimated on the *training* fold. That estimate is
  only defined up to the last training time where it is still positive, and sksurv
  requires evaluation times inside the test follow-up. So we cut at
  ``tau = min(last time with G > 0 on train, max train time, max test time)``: evaluation
  times are the 10th..80th percentiles of the test times inside ``[lo, tau)`` (``lo`` = the
  first test event, so each time has cases), and test times beyond ``tau`` are clipped to
  ``tau`` for the weight computation only (they then never count as the earlier member of
  a pair, so the clipping changes nothing else).
A metric that cannot be computed on a fold (no events, too few times) is NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from casegraph.schema import SurvivalTarget

FloatArray = npt.NDArray[np.float64]
EVAL_QUANTILES = np.linspace(0.1, 0.8, 8)


def harrell_c(risk: npt.ArrayLike, target: SurvivalTarget) -> float:
    """Harrell's concordance of ``risk`` (n,) (higher = earlier event) with ``target``."""
    from sksurv.metrics import concordance_index_censored

    r = np.asarray(risk, dtype=np.float64)
    if not target.event.any():
        return float("nan")
    return float(concordance_index_censored(target.event, target.time, r)[0])


@dataclass(frozen=True)
class EvaluationWindow:
    """Where the IPCW metrics are defined for one train/test pair."""

    tau: float
    times: FloatArray  # evaluation times for AUC and Brier, strictly inside [lo, tau)
    test_clipped: SurvivalTarget  # test times capped at tau (for the IPCW weights)


def evaluation_window(train: SurvivalTarget, test: SurvivalTarget) -> EvaluationWindow | None:
    """The guarded time window, or None when it is empty (e.g. no training events)."""
    from sksurv.nonparametric import CensoringDistributionEstimator

    if not train.event.any() or not test.event.any():
        return None
    cens = CensoringDistributionEstimator().fit(train.to_structured())
    positive = np.asarray(cens.unique_time_)[np.asarray(cens.prob_) > 0]
    if positive.size == 0:
        return None
    tau = float(min(positive.max(), train.time.max(), test.time.max()))
    # every time needs a test event at or before it (else the AUC there is undefined)
    lo = float(max(train.time.min(), test.time.min(), test.time[test.event].min()))
    times = np.unique(np.quantile(test.time, EVAL_QUANTILES))
    times = times[(times >= lo) & (times < tau)]
    clipped = SurvivalTarget(time=np.minimum(test.time, tau), event=test.event.copy())
    return EvaluationWindow(tau=tau, times=times, test_clipped=clipped)


def uno_c(risk: npt.ArrayLike, train: SurvivalTarget, test: SurvivalTarget) -> float:
    from sksurv.metrics import concordance_index_ipcw

    window = evaluation_window(train, test)
    if window is None:
        return float("nan")
    try:
        return float(concordance_index_ipcw(
            train.to_structured(), window.test_clipped.to_structured(),
            np.asarray(risk, dtype=np.float64), tau=window.tau)[0])
    except (ValueError, ZeroDivisionError):
        return float("nan")


def time_dependent_auc(
    risk: npt.ArrayLike, train: SurvivalTarget, test: SurvivalTarget,
    times: npt.ArrayLike | None = None,
) -> tuple[FloatArray, float]:
    """Cumulative/dynamic AUC at ``times`` (default: the guarded window) and its mean."""
    from sksurv.metrics import cumulative_dynamic_auc

    window = evaluation_window(train, test)
    if window is None:
        return np.array([]), float("nan")
    t = window.times if times is None else np.asarray(times, dtype=np.float64)
    if t.size == 0:
        return t, float("nan")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            auc, mean_auc = cumulative_dynamic_auc(
                train.to_structured(), window.test_clipped.to_structured(),
                np.asarray(risk, dtype=np.float64), t)
    except ValueError:
        return t, float("nan")
    return np.asarray(auc, dtype=np.float64), float(mean_auc)


def integrated_brier(
    survival_at_times: npt.NDArray[np.floating], times: npt.ArrayLike,
    train: SurvivalTarget, test: SurvivalTarget,
) -> float:
    """Integrated Brier score of survival probabilities (n, m) at ``times`` (m,)."""
    from sksurv.metrics import integrated_brier_score

    t = np.asarray(times, dtype=np.float64)
    if t.size < 2:
        return float("nan")
    follow_up = float(train.time.max())
    if t.max() < follow_up:
        # a test case beyond every time is a control there, weighted by G(t); sksurv would
        # still look up G at its own time and refuse one past the training follow-up
        test = SurvivalTarget(time=np.minimum(test.time, follow_up), event=test.event.copy())
    try:
        return float(integrated_brier_score(
            train.to_structured(), test.to_structured(),
            np.asarray(survival_at_times, dtype=np.float64), t))
    except ValueError:
        return float("nan")
