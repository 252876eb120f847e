"""Discrete-time survival labels (the MCAT / PORPOISE / CCL convention).

Bins are left-closed ``[e_k, e_{k+1})``. Edges are the quartiles (``n_bins`` quantiles) of
the *uncensored* times of the target given, with the outer edges widened to 0 and +inf so
every time (train or evaluation) falls in a bin. Which patients the edges come from is the
caller's choice: the CV runner passes the training fold only (default, no leak) or the
whole cohort (``bins="paper"``, which reproduces the MCAT-family leak).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from casegraph.errors import InputError
from casegraph.schema import SurvivalTarget

BIN_SOURCES = ("train", "paper")


def bin_edges(target: SurvivalTarget, n_bins: int = 4) -> npt.NDArray[np.float64]:
    """(n_bins + 1,) non-decreasing edges: 0, the inner quantiles of uncensored times, +inf.

    Uses linear-interpolated quantiles (as ``pandas.qcut`` does). With no uncensored time
    the quantiles of all times are used instead, so a degenerate fold still gets edges.
    """
    if n_bins < 1:
        raise InputError(f"n_bins must be >= 1, got {n_bins}", column="n_bins")
    if len(target) == 0:
        raise InputError("cannot compute bin edges of an empty target", column="time")
    times = target.time[target.event] if target.event.any() else target.time
    inner = np.quantile(times, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return np.concatenate([[0.0], np.asarray(inner, dtype=np.float64), [np.inf]])


def discretize(
    time: npt.ArrayLike, edges: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """Bin index (n,) int64 in ``[0, n_bins)`` of each time; bins are ``[e_k, e_{k+1})``."""
    t = np.asarray(time, dtype=np.float64)
    n_bins = len(edges) - 1
    labels = np.searchsorted(np.asarray(edges)[1:-1], t, side="right")
    return np.clip(labels, 0, n_bins - 1).astype(np.int64)


def survival_at(
    survival: npt.NDArray[np.float64],
    edges: npt.NDArray[np.float64],
    times: npt.ArrayLike,
) -> npt.NDArray[np.float64]:
    """Evaluate discrete survival curves (n, K) at ``times`` (m,) -> (n, m).

    ``survival[:, k]`` is S after bin k, i.e. S(t) for ``e_{k+1} <= t < e_{k+2}``;
    S(t) = 1 before the first inner edge (a right-continuous step function).
    """
    t = np.asarray(times, dtype=np.float64)
    padded = np.concatenate([np.ones((survival.shape[0], 1)), survival], axis=1)
    col = np.searchsorted(np.asarray(edges)[1:], t, side="right")
    return np.asarray(padded[:, np.clip(col, 0, survival.shape[1])], dtype=np.float64)
