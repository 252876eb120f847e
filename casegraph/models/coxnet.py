"""CoxNet baseline: elastic-net Cox (scikit-survival ``CoxnetSurvivalAnalysis``) on genomics.

Choices (documented in docs/models.md): features are all genomic columns, preprocessed on
the training fold (clip, standardise, clip); ``l1_ratio=0.5`` fixed; the penalty
``alpha`` is chosen on a path of ``n_alphas`` values (from the training fold's own
maximum down to ``alpha_min_ratio`` of it) by an inner ``inner_folds``-fold CV on the
training fold, maximising Harrell's C. Survival curves come from the Breslow baseline and
are reported at the training fold's discrete-time bin edges, so metrics treat CoxNet like
the discrete models; the risk is the linear predictor.

After ``fit`` the model keeps only plain arrays: the coefficients and offset at the chosen
alpha and the Breslow baseline survival (event times, S0). ``predict`` reads those arrays
(never the scikit-survival estimator), so a saved and loaded model predicts identically by
construction and nothing needs pickling.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.models.base import Prediction
from casegraph.models.data import CohortData
from casegraph.models.metrics import harrell_c
from casegraph.models.preprocess import GenomicsPreprocessor
from casegraph.models.targets import bin_edges as compute_bin_edges
from casegraph.models.training import (
    WEIGHTS_FILE,
    constructor_options,
    preprocessor_from_state,
    preprocessor_state,
)
from casegraph.models.weights_file import array, load_weights, save_weights
from casegraph.schema import SurvivalTarget

FloatArray = npt.NDArray[np.float64]


class CoxNetModel:
    """Genomics-only elastic-net Cox (scikit-survival Coxnet), penalty chosen by inner CV."""

    name = "coxnet"
    embedding_kind = "genomics"

    def __init__(self, *, l1_ratio: float = 0.5, n_alphas: int = 30,
                 alpha_min_ratio: float = 0.01, inner_folds: int = 3,
                 alpha: float | None = None, n_bins: int = 4,
                 bin_edges: npt.ArrayLike | None = None, raw_clip: float | None = 10.0,
                 z_clip: float | None = 5.0, max_iter: int = 100_000, seed: int = 0,
                 device: str = "cpu") -> None:
        self.l1_ratio, self.n_alphas, self.alpha_min_ratio = l1_ratio, n_alphas, alpha_min_ratio
        self.inner_folds, self.alpha, self.n_bins = inner_folds, alpha, n_bins
        self.bin_edges = None if bin_edges is None else np.asarray(bin_edges, dtype=np.float64)
        self.raw_clip, self.z_clip, self.max_iter, self.seed = raw_clip, z_clip, max_iter, seed
        self.device = device  # accepted like every family's; scikit-survival fits on the CPU

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
            estimator = self._estimator(self.alphas_, baseline=True).fit(x, y)
        self._keep_arrays(estimator)
        return self

    def _keep_arrays(self, estimator: Any) -> None:
        """Coefficients, offset and Breslow baseline at ``alpha_``, as plain arrays."""
        column = int(np.argmin(np.abs(self.alphas_ - self.alpha_)))
        self.alpha_ = float(self.alphas_[column])
        self.coef_ = np.asarray(estimator.coef_, dtype=np.float64)[:, column].copy()
        self.offset_ = float(np.asarray(estimator.offset_)[column])
        baseline = estimator._get_baseline_model(self.alpha_).baseline_survival_
        self.baseline_times_ = np.asarray(baseline.x, dtype=np.float64).copy()
        self.baseline_survival_ = np.asarray(baseline.y, dtype=np.float64).copy()

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

    def survival_at(self, risk: FloatArray, times: FloatArray) -> FloatArray:
        """S(t | risk) = S0(t) ** exp(risk), (n, len(times)); S0 is the Breslow step
        function, read as scikit-survival's ``StepFunction`` does (times clipped to
        [first event time, last event time])."""
        grid = np.clip(np.asarray(times, dtype=np.float64), self.baseline_times_[0],
                       self.baseline_times_[-1])
        idx = np.searchsorted(self.baseline_times_, grid, side="right") - 1
        return np.power(self.baseline_survival_[idx][None, :], np.exp(risk)[:, None])

    def predict(self, data: CohortData) -> Prediction:
        if not hasattr(self, "coef_"):
            raise RuntimeError("coxnet: predict called before fit")
        x = self._x(data)
        risk = x @ self.coef_ - self.offset_
        finite = self.edges_[1:-1]
        surv = self.survival_at(risk, np.append(finite, self.baseline_times_[-1]))
        used = np.flatnonzero(self.coef_)  # embedding: the selected features' contributions
        return Prediction(patient_ids=list(data.patient_ids), risk=risk, survival=surv,
                          embedding=(x[:, used] * self.coef_[used]).astype(np.float32),
                          bin_edges=self.edges_.copy())

    # ------------------------------------------------------------------ persistence
    def get_options(self) -> dict[str, Any]:
        return constructor_options(self)

    def save(self, path: str | Path) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError("coxnet: save called before fit")
        save_weights(path, self.name, {
            "options": self.get_options(), "edges": self.edges_, "alphas": self.alphas_,
            "alpha": self.alpha_, "coef": self.coef_, "offset": self.offset_,
            "baseline_times": self.baseline_times_,
            "baseline_survival": self.baseline_survival_,
            "preprocessor": preprocessor_state(self.preprocessor_)})

    @classmethod
    def load(cls, path: str | Path) -> CoxNetModel:
        blob = load_weights(path, cls.name)
        model = cls(**blob["options"])
        model.edges_ = array(blob["edges"])
        model.alphas_ = array(blob["alphas"])
        model.alpha_ = float(blob["alpha"])
        model.coef_ = array(blob["coef"])
        model.offset_ = float(blob["offset"])
        model.baseline_times_ = array(blob["baseline_times"])
        model.baseline_survival_ = array(blob["baseline_survival"])
        model.preprocessor_ = preprocessor_from_state(blob["preprocessor"])
        return model

    def save_files(self, folder: Path) -> None:
        self.save(Path(folder) / WEIGHTS_FILE)

    @classmethod
    def load_files(cls, folder: Path) -> CoxNetModel:
        return cls.load(Path(folder) / WEIGHTS_FILE)
