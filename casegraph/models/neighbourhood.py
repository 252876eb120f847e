"""Survival of a neighbourhood: (weighted) Kaplan-Meier, time bins and the neighbour risk.

Pure numpy functions on 1-d arrays of equal length n: ``time`` (n,) float, ``event`` (n,)
bool, ``weight`` (n,) float >= 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def softmax_weights(similarity: npt.ArrayLike, temperature: float = 0.1) -> FloatArray:
    """Edge weights from similarities: softmax(s / temperature), summing to 1."""
    s = np.asarray(similarity, dtype=np.float64)
    if s.size == 0:
        return s
    z = (s - s.max()) / max(temperature, 1e-6)
    w = np.exp(z)
    return np.asarray(w / w.sum(), dtype=np.float64)


def kaplan_meier(
    time: npt.ArrayLike, event: npt.ArrayLike, weight: npt.ArrayLike | None = None
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(distinct times (m,), S just after each (m,), weighted at-risk (m,), weighted events (m,)).

    With weights, ``n_at_risk`` and ``d`` are sums of weights (the weighted product-limit
    estimator); unweighted = all weights 1.
    """
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=bool)
    w = np.ones_like(t) if weight is None else np.asarray(weight, dtype=np.float64)
    if t.size == 0:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    times = np.unique(t)
    at_risk = np.array([w[t >= u].sum() for u in times])
    deaths = np.array([w[(t == u) & e].sum() for u in times])
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(at_risk > 0, 1.0 - deaths / at_risk, 1.0)
    return times, np.cumprod(factor).astype(np.float64), at_risk.astype(np.float64), \
        deaths.astype(np.float64)


def survival_at(times: FloatArray, survival: FloatArray, query: npt.ArrayLike) -> FloatArray:
    """Step function S evaluated at ``query`` times (S = 1 before the first time)."""
    q = np.asarray(query, dtype=np.float64)
    idx = np.searchsorted(times, q, side="right") - 1
    padded = np.concatenate([[1.0], survival])
    return np.asarray(padded[idx + 1], dtype=np.float64)


def median_survival(times: FloatArray, survival: FloatArray) -> float | None:
    below = np.flatnonzero(survival <= 0.5)
    return float(times[below[0]]) if below.size else None


def bin_end_times(time: npt.ArrayLike, event: npt.ArrayLike, n_bins: int = 4) -> FloatArray:
    """End of each of ``n_bins`` time bins: quartiles of the uncensored times (the MCAT
    convention), the last bin ending at the largest observed time. (n_bins,) increasing."""
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=bool)
    source = t[e] if e.any() else t
    if source.size == 0:
        return np.arange(1, n_bins + 1, dtype=np.float64)
    inner = np.quantile(source, np.arange(1, n_bins) / n_bins)
    ends = np.concatenate([inner, [max(float(t.max()), float(inner[-1]) if inner.size else 0.0)]])
    return np.maximum.accumulate(ends)


def risk_from_survival(survival: npt.ArrayLike) -> float:
    """-sum of S over the bins (higher = worse), as the models do."""
    return float(-np.sum(np.asarray(survival, dtype=np.float64)))


def neighbour_prediction(
    time: npt.ArrayLike, event: npt.ArrayLike, weight: npt.ArrayLike, bin_ends: FloatArray
) -> tuple[float, FloatArray]:
    """(risk, S at the bin ends) from the weighted Kaplan-Meier curve of the neighbours."""
    times, surv, _, _ = kaplan_meier(time, event, weight)
    s = survival_at(times, surv, bin_ends)
    return risk_from_survival(s), s


def km_confidence_band(
    survival: npt.ArrayLike, at_risk: npt.ArrayLike, deaths: npt.ArrayLike,
    alpha: float = 0.05,
) -> tuple[FloatArray, FloatArray]:
    """(lower (m,), upper (m,)) pointwise ``1 - alpha`` band of a Kaplan-Meier curve: the
    Greenwood variance on the log(-log S) scale (the "exponential Greenwood" band, as
    lifelines draws it), from :func:`kaplan_meier`'s S, at-risk and deaths (m,).

    The band stays inside [0, 1]; where S is still 1 it is (1, 1), where S reached 0 it is
    (0, 0). For a weighted curve pass counts on the scale of the sample, e.g. weights
    rescaled to sum to the effective sample size (sum w)^2 / sum w^2: weights summing to 1
    would claim a sample of one patient.
    """
    from scipy.stats import norm

    s = np.asarray(survival, dtype=np.float64)
    n = np.asarray(at_risk, dtype=np.float64)
    d = np.asarray(deaths, dtype=np.float64)
    z = float(norm.ppf(1.0 - alpha / 2.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where((n > 0) & (n > d), d / (n * (n - d)), 0.0)
        greenwood = np.cumsum(terms)
        log_s = np.log(s)
        spread = z * np.sqrt(greenwood) / log_s  # <= 0 where 0 < S < 1
        inner = np.log(-log_s)
        lower = np.exp(-np.exp(inner - spread))
        upper = np.exp(-np.exp(inner + spread))
    lower = np.where(s >= 1.0, 1.0, np.where(s <= 0.0, 0.0, lower))
    upper = np.where(s >= 1.0, 1.0, np.where(s <= 0.0, 0.0, upper))
    return np.asarray(np.clip(lower, 0.0, 1.0), dtype=np.float64), \
        np.asarray(np.clip(upper, 0.0, 1.0), dtype=np.float64)


def effective_counts(weight: npt.ArrayLike) -> FloatArray:
    """``weight`` (n,) rescaled to sum to its effective sample size (sum w)^2 / sum w^2
    (Kish), so a weighted curve's band has the width its weights deserve; (n,)."""
    w = np.asarray(weight, dtype=np.float64)
    total, squares = float(w.sum()), float((w * w).sum())
    if total <= 0 or squares <= 0:
        return np.zeros_like(w)
    return np.asarray(w * (total / squares), dtype=np.float64)


def greenwood_variance(
    survival: npt.ArrayLike, at_risk: npt.ArrayLike, deaths: npt.ArrayLike
) -> FloatArray:
    """Greenwood's Var[S(t)] (m,) = S^2 * sum_{t_i <= t} d_i / (n_i (n_i - d_i)), from
    :func:`kaplan_meier`'s S, at-risk and deaths (m,); 0 while S is 1, and the terms of
    times where everyone still at risk dies (n = d) are left out (S is 0 from there on)."""
    s = np.asarray(survival, dtype=np.float64)
    n = np.asarray(at_risk, dtype=np.float64)
    d = np.asarray(deaths, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where((n > 0) & (n > d), d / (n * (n - d)), 0.0)
    return np.asarray(s * s * np.cumsum(terms), dtype=np.float64)


def step_points(
    times: npt.ArrayLike, survival: npt.ArrayLike, start: float = 0.0
) -> tuple[FloatArray, FloatArray]:
    """(x (m + 1,), y (m + 1,)) of a right-continuous survival step function that starts at
    S(start) = 1, to draw with ``drawstyle="steps-post"`` (or ``ax.step(where="post")``)."""
    x = np.concatenate([[start], np.asarray(times, dtype=np.float64)])
    y = np.concatenate([[1.0], np.asarray(survival, dtype=np.float64)])
    return x, y


def at_risk_counts(time: npt.ArrayLike, at: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Numbers at risk (m,) at the times ``at`` (m,): patients whose follow-up time is
    >= t (the "numbers at risk" row under a Kaplan-Meier figure)."""
    t = np.sort(np.asarray(time, dtype=np.float64))
    q = np.asarray(at, dtype=np.float64)
    return np.asarray(t.size - np.searchsorted(t, q, side="left"), dtype=np.int64)


def censor_marks(
    time: npt.ArrayLike, event: npt.ArrayLike, weight: npt.ArrayLike | None = None
) -> tuple[FloatArray, FloatArray]:
    """(censoring times (c,), S of the Kaplan-Meier curve at each (c,)): where a figure
    draws its censor ticks (one per distinct censoring time)."""
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=bool)
    times, surv, _, _ = kaplan_meier(t, e, weight)
    censored = np.unique(t[~e])
    return censored, survival_at(times, surv, censored)
