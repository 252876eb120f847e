"""The interface every survival model implements (baselines, MurreNet, CCL, MSRL).

scikit-survival style: the constructor stores options; ``fit`` acts and sets fitted
state ending in ``_``; stochastic code takes an explicit ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from casegraph.models.data import CohortData


@dataclass
class Prediction:
    """Per-patient outputs for n patients.

    ``risk``: (n,) higher = worse prognosis. ``survival``: (n, n_bins) S(t) at the end of
    each time bin, or None for continuous-risk models. ``embedding``: (n, d) or None.
    ``bin_edges``: (n_bins + 1,) edges of the bins the survival columns refer to (see
    :mod:`casegraph.models.targets`); needed for the integrated Brier score.
    """

    patient_ids: list[str]
    risk: npt.NDArray[np.float64]
    survival: npt.NDArray[np.float64] | None = None
    embedding: npt.NDArray[np.float32] | None = None
    bin_edges: npt.NDArray[np.float64] | None = None


@runtime_checkable
class SurvivalModel(Protocol):
    name: str

    def fit(self, train: CohortData, valid: CohortData | None = None) -> SurvivalModel: ...

    def predict(self, data: CohortData) -> Prediction: ...


@runtime_checkable
class VersionedModel(SurvivalModel, Protocol):
    """A model that stores itself as a model version (:mod:`casegraph.models.versioning`):
    its own files in the version's folder, loaded back without unpickling anything. MSRL
    persists through ``save_version`` / ``load_version`` instead."""

    def save_files(self, folder: Path) -> None: ...

    @classmethod
    def load_files(cls, folder: Path) -> VersionedModel: ...
