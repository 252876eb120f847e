"""Retrieval imputation: the simplest form of MSRL's idea, as a WSI-only baseline.

Training: each training patient's slide embedding (its mean patch feature, centred on the
training mean and L2-normalised) is kept as a reference beside its *authentic* genomics,
and a genomics model (``genomics_model``, default CoxNet) is fitted on those genomics.
Prediction from slides alone: the ``k`` most similar reference slides (cosine), their
genomics averaged (``weighting="softmax"`` of similarity / ``temperature``, or
``"uniform"``), and the genomics model scores the imputed profile. A training patient is
never its own neighbour (leave-one-out), so predictions on the training fold are honest.

It answers "does the graph help?": MSRL must beat this to claim that learned message
passing over authentic neighbours adds anything to plain nearest-neighbour imputation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.models.base import Prediction, SurvivalModel
from casegraph.models.data import CohortData
from casegraph.models.inputs import BagSource
from casegraph.models.registry import MODELS
from casegraph.models.weights_file import array, load_weights, save_weights

FloatArray = npt.NDArray[np.float32]
WEIGHTINGS = ("softmax", "uniform")
WEIGHTS_FILE = "weights.pt"
INNER_FOLDER = "genomics_model"


def slide_means(data: CohortData) -> FloatArray:
    """(n, D) each patient's mean patch feature (stored slide means when available)."""
    source = BagSource(data, mean_only=True)
    return np.concatenate([source.bag(i) for i in range(len(data))]).astype(np.float32)


def normalise(x: FloatArray) -> FloatArray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def neighbour_rows(query: FloatArray, references: FloatArray, reference_ids: list[str],
                   query_ids: list[str], k: int, weighting: str, temperature: float
                   ) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """(q, k) rows of the most similar references by cosine (unit rows in, a query never
    its own neighbour) and (q, k) weights summing to 1: uniform or softmax(sim / T)."""
    sims = query @ references.T
    own = {p: j for j, p in enumerate(reference_ids)}
    for i, pid in enumerate(query_ids):
        if pid in own:
            sims[i, own[pid]] = -np.inf
    k = min(k, max(len(reference_ids) - 1, 1))
    rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(sims, rows, axis=1)
    if weighting == "uniform":
        weights = np.ones_like(top)
    else:
        scaled = (top - top[:, :1]) / max(temperature, 1e-6)
        weights = np.exp(np.where(np.isfinite(scaled), scaled, -np.inf))
    weights = weights / weights.sum(axis=1, keepdims=True)
    return rows.astype(np.int64), weights.astype(np.float32)


@MODELS.register("retrieval_impute")
class RetrievalImputationModel:
    """WSI-only baseline: genomics of the K most similar reference slides, averaged, scored
    by a genomics model fitted on authentic genomics (docs/models.md)."""

    name = "retrieval_impute"
    uses_slides = True
    uses_genomics = True  # to train; prediction reads slides only
    genomics_at_inference = False
    embedding_kind = "wsi"

    def __init__(self, *, k: int = 10, weighting: str = "softmax", temperature: float = 0.1,
                 genomics_model: str = "coxnet", genomics_options: dict[str, Any] | None = None,
                 n_bins: int = 4, bin_edges: npt.ArrayLike | None = None,
                 seed: int = 0, device: str = "cpu") -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose among: "
                             f"{', '.join(WEIGHTINGS)}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k, self.weighting, self.temperature = k, weighting, temperature
        self.genomics_model, self.genomics_options = genomics_model, dict(genomics_options or {})
        self.n_bins, self.seed = n_bins, seed
        self.device = device  # the retrieval is NumPy (CPU); the genomics model gets it
        self.bin_edges = None if bin_edges is None else np.asarray(bin_edges, dtype=np.float64)

    def get_options(self) -> dict[str, Any]:
        return {"k": self.k, "weighting": self.weighting, "temperature": self.temperature,
                "genomics_model": self.genomics_model,
                "genomics_options": dict(self.genomics_options), "n_bins": self.n_bins,
                "seed": self.seed, "device": self.device}

    def _inner(self) -> SurvivalModel:
        options: dict[str, Any] = {"n_bins": self.n_bins, "seed": self.seed,
                                   "device": self.device, **self.genomics_options}
        if self.bin_edges is not None:
            options["bin_edges"] = self.bin_edges
        return MODELS.get(self.genomics_model)(**options)

    def fit(self, train: CohortData, valid: CohortData | None = None) -> RetrievalImputationModel:
        if not train.genomics:
            raise ValueError("retrieval_impute needs authentic genomics of its training "
                             "patients; the cohort has none")
        means = slide_means(train)
        self.center_ = means.mean(axis=0).astype(np.float32)
        self.reference_ids_ = list(train.patient_ids)
        self.reference_vectors_ = normalise(means - self.center_)
        self.reference_genomics_ = [np.asarray(g, dtype=np.float32) for g in train.genomics]
        self.genomics_model_ = self._inner().fit(train)
        return self

    def neighbours(self, data: CohortData) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """(n, k) reference rows and (n, k) weights summing to 1 of each patient; a
        reference patient is never its own neighbour."""
        query = normalise(slide_means(data) - self.center_)
        return neighbour_rows(query, self.reference_vectors_, self.reference_ids_,
                              list(data.patient_ids), self.k, self.weighting, self.temperature)

    def impute(self, data: CohortData) -> list[FloatArray]:
        """Per gene group, the (n, g_j) weighted mean of the neighbours' authentic genomics."""
        rows, weights = self.neighbours(data)
        return [np.einsum("nk,nkg->ng", weights, ref[rows]).astype(np.float32)
                for ref in self.reference_genomics_]

    def predict(self, data: CohortData) -> Prediction:
        if not hasattr(self, "genomics_model_"):
            raise RuntimeError("retrieval_impute: predict called before fit")
        imputed = replace(data, groups=list(data.groups) or [f"g{j}" for j in
                                                             range(len(self.reference_genomics_))],
                          genomics=self.impute(data))
        inner = self.genomics_model_.predict(imputed)
        embedding = normalise(slide_means(data) - self.center_)
        return Prediction(patient_ids=list(data.patient_ids), risk=inner.risk,
                          survival=inner.survival, embedding=embedding,
                          bin_edges=inner.bin_edges)

    # ------------------------------------------------------------------ persistence
    def save_files(self, folder: Path) -> None:
        folder = Path(folder)
        inner = folder / INNER_FOLDER
        inner.mkdir(parents=True, exist_ok=True)
        self.genomics_model_.save_files(inner)  # type: ignore[attr-defined]
        save_weights(folder / WEIGHTS_FILE, self.name, {
            "options": self.get_options(), "center": self.center_,
            "reference_ids": self.reference_ids_, "reference_vectors": self.reference_vectors_,
            "reference_genomics": self.reference_genomics_})

    @classmethod
    def load_files(cls, folder: Path) -> RetrievalImputationModel:
        folder = Path(folder)
        blob = load_weights(folder / WEIGHTS_FILE, cls.name)
        model = cls(**blob["options"])
        model.center_ = array(blob["center"], np.float32)
        model.reference_ids_ = [str(p) for p in blob["reference_ids"]]
        model.reference_vectors_ = array(blob["reference_vectors"], np.float32)
        model.reference_genomics_ = [array(g, np.float32) for g in blob["reference_genomics"]]
        model.genomics_model_ = MODELS.get(model.genomics_model).load_files(  # type: ignore[attr-defined]
            folder / INNER_FOLDER)
        return model
