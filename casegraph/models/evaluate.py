"""All fold metrics of one prediction: Harrell's C, Uno's C, mean time-dependent AUC, IBS."""

from __future__ import annotations

import numpy as np

from casegraph.models.base import Prediction
from casegraph.models.metrics import (
    evaluation_window,
    harrell_c,
    integrated_brier,
    time_dependent_auc,
    uno_c,
)
from casegraph.models.targets import survival_at
from casegraph.schema import SurvivalTarget

METRICS = ("c_index", "c_index_uno", "mean_auc", "ibs")
METRIC_LABELS = {
    "c_index": "Harrell's C-index",
    "c_index_uno": "Uno's C-index (IPCW)",
    "mean_auc": "mean time-dependent AUC",
    "ibs": "integrated Brier score",
}


def evaluate_prediction(pred: Prediction, train: SurvivalTarget,
                        test: SurvivalTarget) -> dict[str, float]:
    """Metrics of ``pred`` on ``test``; ``train`` provides the censoring distribution.

    The IBS needs survival curves with bin edges (NaN otherwise).
    """
    risk = np.asarray(pred.risk, dtype=np.float64)
    out = {
        "c_index": harrell_c(risk, test),
        "c_index_uno": uno_c(risk, train, test),
        "mean_auc": time_dependent_auc(risk, train, test)[1],
        "ibs": float("nan"),
    }
    window = evaluation_window(train, test)
    if pred.survival is not None and pred.bin_edges is not None and window is not None:
        surv = survival_at(np.asarray(pred.survival), pred.bin_edges, window.times)
        out["ibs"] = integrated_brier(surv, window.times, train, test)
    return out
