"""Risk stratification figure: Kaplan-Meier curves of low/high predicted risk + log-rank p.

Out-of-fold risks from different folds are on different scales, so each patient is
labelled high/low by the median risk *of its own evaluation fold*; the groups are then
pooled over folds (the usual MCAT-family figure). The log-rank test is scikit-survival's
``compare_survival``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from casegraph.schema import SurvivalTarget


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


def km_plot(predictions: pd.DataFrame, path: str | Path, title: str) -> float:
    """Save the KM figure (PNG) of ``predictions`` (columns fold, risk, time, event); return p."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sksurv.nonparametric import kaplan_meier_estimator

    target = SurvivalTarget.from_arrays(predictions["time"].to_numpy(),
                                        predictions["event"].to_numpy(dtype=bool))
    high = high_risk_by_fold(predictions["risk"].to_numpy(), predictions["fold"].to_numpy())
    p = logrank_p(target, high)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for mask, label, colour in ((~high, "low risk", "tab:blue"), (high, "high risk", "tab:red")):
        if not mask.any():
            continue
        t, s = kaplan_meier_estimator(target.event[mask], target.time[mask])
        ax.step(np.concatenate([[0.0], t]), np.concatenate([[1.0], s]), where="post",
                color=colour, label=f"{label} (n={int(mask.sum())})")
    ax.set_xlabel("time (months)")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title}\nlog-rank p = {p:.2e}", fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return p
