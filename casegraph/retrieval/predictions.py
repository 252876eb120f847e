"""A model version's prediction for one patient, for the REST route and ``casegraph predict``.

A stored patient's answer is the version's stored row (along its lineage) when it has one,
else the loaded model computes it from the inputs the version reads. A new patient gives
patch-feature files and/or genomics (feature -> value); see
:mod:`casegraph.models.versioning` for how missing genes are filled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from casegraph.errors import InputError
from casegraph.ingest.store import Store
from casegraph.models.versioning import predict_external, predict_stored


class SurvivalPoint(BaseModel):
    time: float | None = Field(description="end of the time bin (months); null for the last, "
                               "open-ended bin")
    survival: float


class PredictionResult(BaseModel):
    version_id: str
    model: str
    endpoint: str = Field(default="OS", description="the outcome the version predicts: OS, "
                          "DSS, PFI or DFI")
    patient_id: str | None = Field(default=None, description="null for a new patient")
    risk: float = Field(description="higher = worse prognosis")
    survival: list[SurvivalPoint] = Field(default_factory=list)
    coverage: dict[str, Any] | None = Field(default=None, description="a new patient's genomic "
                                            "coverage: per group given / expected, missing "
                                            "and unknown features")
    inferred: bool = Field(default=False,
                           description="the model inferred the genomics it did not see")
    stored: bool = Field(default=False,
                         description="read from the version's stored predictions")


def _curve(edges: Sequence[float] | None, survival: Sequence[float] | None
           ) -> list[SurvivalPoint]:
    if survival is None:
        return []
    ends: list[float | None] = ([None] * len(survival) if edges is None
                                else [float(e) if math.isfinite(e) else None
                                      for e in list(edges)[1:]])
    return [SurvivalPoint(time=t, survival=float(s))
            for t, s in zip(ends, survival, strict=False)]


def _edges(store: Store, version_id: str) -> list[float] | None:
    for member in store.versions.lineage(version_id):
        edges = store.versions.get(member).bin_edges
        if edges is not None:
            return edges
    return None


def predict_for(store: Store, version_id: str, patient_id: str | None = None,
                bag_paths: Sequence[str | Path] = (),
                genomics: dict[str, float] | None = None) -> PredictionResult:
    """One patient's prediction by ``version_id``: a stored patient (``patient_id``) or a
    new one (``bag_paths`` and/or ``genomics``)."""
    version = store.versions.get(version_id)
    if patient_id is not None and (bag_paths or genomics is not None):
        raise InputError("give a stored patient or a new patient's inputs, not both",
                         column="--patient", fix="drop --patient, or drop --slide/--genomics")
    if patient_id is None and not bag_paths and genomics is None:
        raise InputError("nothing to predict", column="--patient",
                         fix="give --patient ID, or --slide FILE [--genomics FILE]")
    edges = _edges(store, version_id)
    endpoint = str(store.versions.root(version_id).config.get("endpoint", "OS"))
    if patient_id is not None:
        rows = store.versions.predictions(version_id)
        row = rows[rows["patient_id"] == patient_id]
        if len(row):
            return PredictionResult(
                version_id=version_id, model=version.model, endpoint=endpoint,
                patient_id=patient_id,
                risk=float(row["risk"].iloc[0]), survival=_curve(edges, row["survival"].iloc[0]),
                inferred=bool(row["inferred"].iloc[0]), stored=True)
        prediction = predict_stored(store, version_id, [patient_id])
        return PredictionResult(
            version_id=version_id, model=version.model, endpoint=endpoint,
            patient_id=patient_id,
            risk=float(prediction.risk[0]), survival=_curve(edges, _first(prediction.survival)))
    prediction, coverage, inferred = predict_external(store, version_id, bag_paths, genomics)
    return PredictionResult(
        version_id=version_id, model=version.model, endpoint=endpoint,
        risk=float(prediction.risk[0]),
        survival=_curve(edges, _first(prediction.survival)),
        coverage=None if coverage is None else coverage.to_dict(), inferred=inferred)


def _first(survival: np.ndarray | None) -> list[float] | None:
    return None if survival is None else [float(s) for s in survival[0]]
