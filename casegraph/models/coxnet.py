"""CoxNet baseline: elastic-net Cox (scikit-survival ``CoxnetSurvivalAnalysis``) on genomics.

Choices (documented in docs/models.md): features are all genomic columns, preprocessed on
the training fold (clip, standardise, clip); ``l1_ratio=0.5`` fixed; the penalty
``alpha`` is chosen on a path of ``n_alphas`` values (from the training fold's own
maximum down to ``alpha_min_ratio`` of it) by an inner ``inner_folds``-fold CV on the
training fold, maximising Harrell's C. Survival curves come from the Breslow baseline and
are reported at the training fold's discrete-time bin edges, so metrics treat CoxNet like
the discrete models; the risk is the linear predictor.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.models.base import Prediction
from casegraph.models.data import CohortData
from casegraph.models.metrics import harrell_c
from casegraph.models.preprocess import GenomicsPreprocessor
from casegraph.models.targets import bin_edges as compute_bin_edges
from casegraph.schema import SurvivalTarget


class CoxNetModel:
    """Genomics-only elastic-net Cox (scikit-survival Coxnet), penalty chosen by inner CV."""

    name = "coxnet"

    def __init__(self, *, l1_ratio: float = 0.5, n_alphas: int = 30,
                 alpha_min_ratio: float = 0.01, inner_folds: int = 3,
                 alpha: float | None = None, n_bins: int = 4,
                 bin_edges: npt.ArrayLike | None = None, raw_clip: float | None = 10.0,
                 z_clip: float | None = 5.0, max_iter: int = 100_000, seed: int = 0) -> None:
        self.l1_ratio, self.n_alphas, self.alpha_min_ratio = l1_ratio, n_alphas, alpha_min_ratio
        self.inner_folds, self.alpha, self.n_bins = inner_folds, alpha, n_bins
        self.bin_edges = None if bin_edges is None else np.asarray(bin_edges, dtype=np.float64)
        self.raw_clip, self.z_clip, self.max_iter, self.seed = raw_clip, z_clip, max_iter, seed

    def _estimator(self, alphas: npt.NDArray[np.float64] | None, baseline: bool) -> Any:
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        return CoxnetSurvivalAnalysis(
            l1_ratio=self.l1_ratio, n_alphas=self.n_alphas, alphas=alphas,
            alpha_min_ratio=self.alpha_min_ratio, max_iter=self.max_iter,
            fit_baseline_model=baseline)

    def _x(self, data: CohortData) -> npt.NDArray[np.float64]:
        return np.concatenate(self.preprocessor_.transform(data.genomics), axis=1).astype(np.float64)

    def fit(self, train: CohortData, valid: CohortData | None = None) -> CoxNetModel:
        if not train.genomics:
            raise ValueError("coxnet needs genomic features; the cohort has none")
        self.edges_ = self.bin_edges if self.bin_edges is not None else compute_bin_edges(
            train.target, self.n_bins)
        self.preprocessor_ = GenomicsPreprocessor(self.raw_clip, self.z_clip).fit(train.genomics)
        x, y = self._x(train), train.target.to_structured()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter at the weakest penalties
            path = self._estimator(None, baseline=False).fit(x, y)
            self.alphas_ = np.asarray(path.alphas_, dtype=np.float64)
            self.alpha_ = self.alpha if self.alpha is not None else self._choose_alpha(x, train.target)
            self.estimator_ = self._estimator(self.alphas_, baseline=True).fit(x, y)
        return self

    def _choose_alpha(self, x: npt.NDArray[np.float64], target: SurvivalTarget) -> float:
        from sklearn.model_selection import StratifiedKFold

        folds = StratifiedKFold(self.inner_folds, shuffle=True, random_state=self.seed)
        scores = np.zeros((self.inner_folds, len(self.alphas_)))
        for k, (fit_idx, val_idx) in enumerate(folds.split(x, target.event)):
            est = self._estimator(self.alphas_, baseline=False).fit(
                x[fit_idx], target[fit_idx].to_structured())
            for j, a in enumerate(self.alphas_):
                scores[k, j] = harrell_c(est.predict(x[val_idx], alpha=a), target[val_idx])
        self.inner_scores_ = np.nanmean(scores, axis=0)
        return float(self.alphas_[int(np.nanargmax(self.inner_scores_))])

    def predict(self, data: CohortData) -> Prediction:
        if not hasattr(self, "estimator_"):
            raise RuntimeError("coxnet: predict called before fit")
        x = self._x(data)
        risk = np.asarray(self.estimator_.predict(x, alpha=self.alpha_), dtype=np.float64)
        functions = self.estimator_.predict_survival_function(x, alpha=self.alpha_)
        finite = self.edges_[1:-1]
        surv = np.ones((len(data), len(self.edges_) - 1))
        for i, fn in enumerate(functions):
            grid = np.clip(finite, fn.domain[0], fn.domain[1])
            values = fn(grid)
            surv[i, : len(finite)] = values
            surv[i, -1] = fn(fn.domain[1])
        coef = np.asarray(self.estimator_.coef_)
        column = int(np.argmin(np.abs(self.alphas_ - self.alpha_)))
        weights = coef[:, column] if coef.ndim == 2 else coef
        used = np.flatnonzero(weights)  # embedding: the selected features' contributions
        return Prediction(patient_ids=list(data.patient_ids), risk=risk, survival=surv,
                          embedding=(x[:, used] * weights[used]).astype(np.float32),
                          bin_edges=self.edges_.copy())
