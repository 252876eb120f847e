"""Neighbour outcome: the weighted Kaplan-Meier risk of a patient's most similar slides.

The model-free WSI-only answer (what ``embedding-knn`` queries return), as a model in the
CV runner: the ``k`` training patients whose slide embeddings (mean patch feature, centred
and normalised as in :mod:`casegraph.models.retrieval_impute`) are most similar, weighted
by softmax(similarity / ``temperature``) or uniformly, and their weighted KM curve read at
the training fold's bin ends gives S(t) and risk = -sum S. A training patient is never its
own neighbour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.models.base import Prediction
from casegraph.models.data import CohortData
from casegraph.models.neighbourhood import kaplan_meier, survival_at
from casegraph.models.registry import MODELS
from casegraph.models.retrieval_impute import WEIGHTINGS, neighbour_rows, normalise, slide_means
from casegraph.models.targets import bin_edges
from casegraph.models.weights_file import array, load_weights, save_weights

WEIGHTS_FILE = "weights.pt"


@MODELS.register("neighbour_km")
class NeighbourOutcomeModel:
    """WSI-only baseline: the weighted Kaplan-Meier curve of the K most similar training
    slides (the embedding-knn answer, cross-validated)."""

    name = "neighbour_km"
    uses_slides = True
    uses_genomics = False
    embedding_kind = "wsi"

    def __init__(self, *, k: int = 10, weighting: str = "softmax", temperature: float = 0.1,
                 n_bins: int = 4, bin_edges: npt.ArrayLike | None = None, seed: int = 0,
                 device: str = "cpu") -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose among: "
                             f"{', '.join(WEIGHTINGS)}")
        self.k, self.weighting, self.temperature = k, weighting, temperature
        self.n_bins, self.seed = n_bins, seed
        self.device = device  # accepted like every family's; the KM arithmetic is NumPy (CPU)
        self.bin_edges = None if bin_edges is None else np.asarray(bin_edges, dtype=np.float64)

    def get_options(self) -> dict[str, Any]:
        return {"k": self.k, "weighting": self.weighting, "temperature": self.temperature,
                "n_bins": self.n_bins, "seed": self.seed, "device": self.device}

    def fit(self, train: CohortData, valid: CohortData | None = None) -> NeighbourOutcomeModel:
        means = slide_means(train)
        self.center_ = means.mean(axis=0).astype(np.float32)
        self.reference_ids_ = list(train.patient_ids)
        self.reference_vectors_ = normalise(means - self.center_)
        self.reference_time_ = train.target.time.astype(np.float64)
        self.reference_event_ = train.target.event.astype(bool)
        self.edges_ = (self.bin_edges.copy() if self.bin_edges is not None
                       else bin_edges(train.target, self.n_bins))
        return self

    def _bin_ends(self) -> npt.NDArray[np.float64]:
        ends = self.edges_[1:].copy()
        if not np.isfinite(ends[-1]):  # the open last bin ends at the largest follow-up
            ends[-1] = max(float(self.reference_time_.max()), float(self.edges_[-2]))
        return ends

    def predict(self, data: CohortData) -> Prediction:
        if not hasattr(self, "edges_"):
            raise RuntimeError("neighbour_km: predict called before fit")
        query = normalise(slide_means(data) - self.center_)
        rows, weights = neighbour_rows(query, self.reference_vectors_, self.reference_ids_,
                                       list(data.patient_ids), self.k, self.weighting,
                                       self.temperature)
        ends = self._bin_ends()
        survival = np.empty((len(data), len(ends)), dtype=np.float64)
        for i in range(len(data)):
            times, surv, _, _ = kaplan_meier(self.reference_time_[rows[i]],
                                             self.reference_event_[rows[i]], weights[i])
            survival[i] = survival_at(times, surv, ends)
        return Prediction(patient_ids=list(data.patient_ids), risk=-survival.sum(axis=1),
                          survival=survival, embedding=query, bin_edges=self.edges_.copy())

    def save_files(self, folder: Path) -> None:
        save_weights(Path(folder) / WEIGHTS_FILE, self.name, {
            "options": self.get_options(), "center": self.center_,
            "reference_ids": self.reference_ids_, "reference_vectors": self.reference_vectors_,
            "reference_time": self.reference_time_,
            "reference_event": self.reference_event_.astype(np.float64), "edges": self.edges_})

    @classmethod
    def load_files(cls, folder: Path) -> NeighbourOutcomeModel:
        blob = load_weights(Path(folder) / WEIGHTS_FILE, cls.name)
        model = cls(**blob["options"])
        model.center_ = array(blob["center"], np.float32)
        model.reference_ids_ = [str(p) for p in blob["reference_ids"]]
        model.reference_vectors_ = array(blob["reference_vectors"], np.float32)
        model.reference_time_ = array(blob["reference_time"])
        model.reference_event_ = array(blob["reference_event"]) > 0.5
        model.edges_ = array(blob["edges"])
        return model
