"""Figures of cross-validation results, and the numbers each one draws.

- Risk groups: Kaplan-Meier curves of low/high predicted risk with censor ticks, log-log 95%
  bands, a numbers-at-risk table under the axis and the log-rank p in the title. Out-of-fold
  risks from different folds are on different scales, so each patient is labelled high/low
  by the median risk *of its own evaluation fold*; the groups are then pooled over folds
  (the usual MCAT-family figure). The log-rank test is scikit-survival's
  ``compare_survival``.
- Predicted survival curves as right-continuous steps (``drawstyle="steps-post"``).
- Time-dependent (cumulative/dynamic) AUC per fold of a run.
- Calibration: mean predicted S(horizon) against the Kaplan-Meier S(horizon) observed in
  groups of patients ordered by their prediction.

Each figure has a ``*_data`` (or ``risk_group_km``) function returning what it draws, so
tests check the numbers, not the pixels. The survival arithmetic is
:mod:`casegraph.models.neighbourhood`'s. ``predictions`` frames are
:meth:`~casegraph.models.results.ResultStore.predictions`' (columns fold, patient_id, risk,
time, event, and survival (a list of S at the end of each time bin, or None) for
calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from casegraph.models.neighbourhood import (
    at_risk_counts,
    censor_marks,
    kaplan_meier,
    km_confidence_band,
    step_points,
    survival_at,
)
from casegraph.schema import SurvivalTarget

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# ------------------------------------------------------------------ Kaplan-Meier by risk group
def high_risk_by_fold(risk: npt.ArrayLike, fold: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """True where the risk is above its fold's median."""
    r, f = np.asarray(risk, dtype=np.float64), np.asarray(fold)
    high = np.zeros(len(r), dtype=bool)
    for k in np.unique(f):
        rows = f == k
        high[rows] = r[rows] > np.median(r[rows])
    return high


def logrank_p(target: SurvivalTarget, high: npt.NDArray[np.bool_]) -> float:
    from sksurv.compare import compare_survival

    if high.all() or not high.any() or not target.event.any():
        return float("nan")
    return float(compare_survival(target.to_structured(), high.astype(int))[1])


@dataclass
class KMCurve:
    """One group's Kaplan-Meier curve: distinct times (m,), S after each (m,), its log-log
    95% band (m,), and the censor ticks (c,) drawn on the curve."""

    label: str
    n: int
    times: FloatArray
    survival: FloatArray
    lower: FloatArray
    upper: FloatArray
    censor_times: FloatArray
    censor_survival: FloatArray


@dataclass
class KMFigure:
    """What the risk-group figure draws: curves, the log-rank p, and the numbers at risk
    (label -> (k,)) at ``table_times`` (k,)."""

    curves: list[KMCurve]
    p_value: float
    table_times: FloatArray
    at_risk: dict[str, IntArray] = field(default_factory=dict)


def km_curve(time: npt.ArrayLike, event: npt.ArrayLike, label: str) -> KMCurve:
    """The (unweighted) Kaplan-Meier curve of ``time``/``event`` (n,) with its band."""
    times, surv, at_risk, deaths = kaplan_meier(time, event)
    lower, upper = km_confidence_band(surv, at_risk, deaths)
    ticks, tick_surv = censor_marks(time, event)
    return KMCurve(label=label, n=int(np.size(time)), times=times, survival=surv, lower=lower,
                   upper=upper, censor_times=ticks, censor_survival=tick_surv)


def table_times(max_time: float, n_ticks: int = 5) -> FloatArray:
    """Round tick times 0 .. <= max_time (the columns of the numbers-at-risk table)."""
    from matplotlib.ticker import MaxNLocator

    ticks = np.asarray(MaxNLocator(nbins=n_ticks, steps=[1, 2, 2.5, 5, 10])
                       .tick_values(0.0, max_time), dtype=np.float64)
    return np.asarray(ticks[(ticks >= 0) & (ticks <= max_time)], dtype=np.float64)


def risk_group_km(predictions: pd.DataFrame) -> KMFigure:
    """Low/high risk groups (by each fold's median risk) of out-of-fold predictions."""
    time = predictions["time"].to_numpy(dtype=np.float64)
    event = predictions["event"].to_numpy(dtype=bool)
    high = high_risk_by_fold(predictions["risk"].to_numpy(), predictions["fold"].to_numpy())
    p = logrank_p(SurvivalTarget.from_arrays(time, event), high)
    columns = table_times(float(time.max()) if time.size else 0.0)
    figure = KMFigure(curves=[], p_value=p, table_times=columns)
    for mask, label in ((~high, "low risk"), (high, "high risk")):
        if mask.any():
            figure.curves.append(km_curve(time[mask], event[mask], label))
            figure.at_risk[label] = at_risk_counts(time[mask], columns)
    return figure


def draw_km(figure: KMFigure, path: str | Path, title: str) -> Path:
    """Save ``figure`` as a PNG: steps, bands, censor ticks, numbers-at-risk table."""
    plt = _pyplot()
    colours = {"low risk": "tab:blue", "high risk": "tab:red"}
    fig, (ax, table) = plt.subplots(2, 1, figsize=(5.5, 4.8), dpi=120, sharex=True,
                                    gridspec_kw={"height_ratios": [4, 1]})
    for curve in figure.curves:
        colour = colours.get(curve.label, "tab:gray")
        x, y = step_points(curve.times, curve.survival)
        _, lo = step_points(curve.times, curve.lower)
        _, hi = step_points(curve.times, curve.upper)
        ax.plot(x, y, drawstyle="steps-post", color=colour,
                label=f"{curve.label} (n={curve.n})")
        ax.fill_between(x, lo, hi, step="post", color=colour, alpha=0.15, linewidth=0)
        ax.plot(curve.censor_times, curve.censor_survival, "|", color=colour, markersize=7)
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}\nlog-rank p = {figure.p_value:.2e}", fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    _draw_at_risk(table, figure, colours)
    fig.tight_layout()
    return _save(fig, path)


def _draw_at_risk(table: Any, figure: KMFigure, colours: dict[str, str]) -> None:
    labels = list(figure.at_risk)
    for row, label in enumerate(labels):
        for t, count in zip(figure.table_times, figure.at_risk[label], strict=True):
            table.text(t, row, str(int(count)), ha="center", va="center", fontsize=7,
                       color=colours.get(label, "black"))
    table.set_ylim(len(labels) - 0.5, -0.5)
    table.set_yticks(range(len(labels)), labels, fontsize=7)
    table.set_xticks(figure.table_times)
    table.set_xlabel("time (months)")
    table.set_title("numbers at risk", fontsize=7, loc="left")
    for side in ("top", "right", "left"):
        table.spines[side].set_visible(False)
    table.tick_params(axis="y", length=0)


def km_plot(predictions: pd.DataFrame, path: str | Path, title: str) -> float:
    """Save the risk-group KM figure (PNG) of ``predictions``; return the log-rank p."""
    figure = risk_group_km(predictions)
    draw_km(figure, path, title)
    return figure.p_value


# ------------------------------------------------------------------ predicted curves
def predicted_curves_plot(times: npt.ArrayLike, survival: npt.ArrayLike, labels: list[str],
                          path: str | Path, title: str = "") -> list[tuple[FloatArray, FloatArray]]:
    """Save predicted survival curves as steps; ``survival`` (n, m) is S from each of the
    ``times`` (m,) on (e.g. the bin ends; an infinite last one is drawn to the largest
    finite time). Returns the (x, y) (m + 1,) drawn per curve."""
    t = np.asarray(times, dtype=np.float64)
    s = np.atleast_2d(np.asarray(survival, dtype=np.float64))
    finite = t[np.isfinite(t)]
    t = np.where(np.isfinite(t), t, finite.max() if finite.size else 1.0)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    drawn = []
    for row, label in zip(s, labels, strict=True):
        x, y = step_points(t, row)
        ax.plot(x, y, drawstyle="steps-post", label=label)
        drawn.append((x, y))
    ax.set_xlabel("time (months)")
    ax.set_ylabel("predicted survival")
    ax.set_ylim(0, 1.02)
    if title:
        ax.set_title(title, fontsize=9)
    if labels:
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return drawn


# ------------------------------------------------------------------ time-dependent AUC
def fold_targets(predictions: pd.DataFrame, fold: int) -> tuple[SurvivalTarget, SurvivalTarget]:
    """(training, evaluation) targets of ``fold``: its training patients are taken to be the
    run's other folds' patients (every patient is evaluated once; the stored run keeps no
    training lists), or the fold itself when it is the only one stored."""
    rows = predictions["fold"].to_numpy() == fold
    time = predictions["time"].to_numpy(dtype=np.float64)
    event = predictions["event"].to_numpy(dtype=bool)
    train = ~rows if (~rows).any() else rows
    return (SurvivalTarget.from_arrays(time[train], event[train]),
            SurvivalTarget.from_arrays(time[rows], event[rows]))


def td_auc_data(predictions: pd.DataFrame) -> pd.DataFrame:
    """Columns fold, time, auc, mean_auc: each fold's cumulative/dynamic AUC over its
    guarded evaluation window (:func:`casegraph.models.metrics.time_dependent_auc`)."""
    from casegraph.models.metrics import time_dependent_auc

    parts = []
    for fold in sorted(predictions["fold"].unique()):
        train, test = fold_targets(predictions, int(fold))
        risk = predictions.loc[predictions["fold"] == fold, "risk"].to_numpy(dtype=np.float64)
        times = _evaluation_times(train, test)
        auc, mean_auc = time_dependent_auc(risk, train, test, times)
        if auc.size:
            parts.append(pd.DataFrame({"fold": int(fold), "time": times, "auc": auc,
                                       "mean_auc": mean_auc}))
    if not parts:
        return pd.DataFrame(columns=["fold", "time", "auc", "mean_auc"])
    return pd.concat(parts, ignore_index=True)


def _evaluation_times(train: SurvivalTarget, test: SurvivalTarget) -> FloatArray:
    from casegraph.models.metrics import evaluation_window

    window = evaluation_window(train, test)
    return np.zeros(0) if window is None else window.times


def td_auc_plot(predictions: pd.DataFrame, path: str | Path, title: str) -> pd.DataFrame:
    """Save the per-fold time-dependent AUC figure; return :func:`td_auc_data`."""
    data = td_auc_data(predictions)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for fold, rows in data.groupby("fold"):
        ax.plot(rows["time"], rows["auc"], "o-", markersize=3,
                label=f"fold {fold} (mean {rows['mean_auc'].iloc[0]:.3f})")
    ax.axhline(0.5, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("time (months)")
    ax.set_ylabel("cumulative/dynamic AUC")
    ax.set_ylim(0, 1.02)
    ax.set_title(title if not data.empty else f"{title}\n(no fold has an AUC window)",
                 fontsize=9)
    if not data.empty:
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return data


# ------------------------------------------------------------------ calibration
@dataclass
class Calibration:
    """Calibration at ``horizon``: per group (rows), n, mean predicted S(horizon), the
    Kaplan-Meier S(horizon) observed and its log-log 95% band."""

    horizon: float
    points: pd.DataFrame  # columns group, n, predicted, observed, lower, upper


def fold_bin_edges(predictions: pd.DataFrame, fold: int, n_bins: int,
                   bins: str = "train") -> FloatArray:
    """Edges (n_bins + 1,) the fold's survival columns refer to, rebuilt as the runner
    builds them (:func:`casegraph.models.targets.bin_edges`): from the fold's training
    patients (see :func:`fold_targets`) for ``bins="train"``, from every patient for
    ``"paper"``."""
    from casegraph.models.targets import bin_edges

    if bins == "paper":
        target = SurvivalTarget.from_arrays(predictions["time"].to_numpy(dtype=np.float64),
                                            predictions["event"].to_numpy(dtype=bool))
    else:
        target = fold_targets(predictions, fold)[0]
    return bin_edges(target, n_bins)


def predicted_survival_at(predictions: pd.DataFrame, horizon: float,
                          bins: str = "train") -> FloatArray:
    """Each patient's predicted S(horizon) (n,), NaN where a row has no survival curve."""
    from casegraph.models.targets import survival_at as binned_survival_at

    out = np.full(len(predictions), np.nan)
    folds = predictions["fold"].to_numpy()
    curves = predictions["survival"].to_list()
    for fold in np.unique(folds):
        rows = np.flatnonzero(folds == fold)
        have = [i for i in rows if curves[i] is not None and len(curves[i])]
        if not have:
            continue
        matrix = np.asarray([np.asarray(curves[i], dtype=np.float64) for i in have])
        edges = fold_bin_edges(predictions, int(fold), matrix.shape[1], bins)
        out[have] = binned_survival_at(matrix, edges, [horizon])[:, 0]
    return out


def default_horizon(predictions: pd.DataFrame) -> float:
    """The median uncensored time of the run's patients (the middle bin edge of 4 bins)."""
    time = predictions["time"].to_numpy(dtype=np.float64)
    event = predictions["event"].to_numpy(dtype=bool)
    return float(np.median(time[event] if event.any() else time))


def calibration_data(predictions: pd.DataFrame, bins: str = "train",
                     horizon: float | None = None, n_groups: int = 5) -> Calibration:
    """Patients ordered by predicted S(horizon), cut into ``n_groups`` groups of (nearly)
    equal size; per group the mean prediction against the Kaplan-Meier estimate."""
    h = default_horizon(predictions) if horizon is None else float(horizon)
    predicted = predicted_survival_at(predictions, h, bins)
    keep = np.flatnonzero(~np.isnan(predicted))
    time = predictions["time"].to_numpy(dtype=np.float64)
    event = predictions["event"].to_numpy(dtype=bool)
    rows = []
    ordered = keep[np.argsort(predicted[keep], kind="stable")]
    sections = min(n_groups, len(ordered))
    for group, members in enumerate(np.array_split(ordered, sections) if sections else []):
        times, surv, at_risk, deaths = kaplan_meier(time[members], event[members])
        lower, upper = km_confidence_band(surv, at_risk, deaths)
        rows.append({"group": group + 1, "n": len(members),
                     "predicted": float(predicted[members].mean()),
                     "observed": float(survival_at(times, surv, [h])[0]),
                     "lower": _band_at(times, lower, h), "upper": _band_at(times, upper, h)})
    return Calibration(horizon=h, points=pd.DataFrame(
        rows, columns=["group", "n", "predicted", "observed", "lower", "upper"]))


def _band_at(times: FloatArray, band: FloatArray, horizon: float) -> float:
    """The band's value at ``horizon`` (1 before the first time, where S is 1)."""
    return float(survival_at(times, band, [horizon])[0])


def calibration_plot(predictions: pd.DataFrame, path: str | Path, title: str,
                     bins: str = "train", horizon: float | None = None,
                     n_groups: int = 5) -> Calibration:
    """Save the calibration figure (observed vs predicted S(horizon), 95% bars)."""
    data = calibration_data(predictions, bins, horizon, n_groups)
    pts = data.points
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=120)
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1, label="ideal")
    if not pts.empty:
        ax.errorbar(pts["predicted"], pts["observed"],
                    yerr=[pts["observed"] - pts["lower"], pts["upper"] - pts["observed"]],
                    fmt="o-", capsize=3, label=f"{len(pts)} groups by prediction")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"predicted S({data.horizon:.1f} months)")
    ax.set_ylabel("observed S (Kaplan-Meier)")
    ax.set_title(title if not pts.empty else f"{title}\n(no survival curves predicted)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    return data


# ------------------------------------------------------------------ matplotlib
def _pyplot() -> Any:
    """pyplot on the Agg backend (files only, never a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    _pyplot().close(fig)
    return target
