"""Read the graph's records from the store (patients, slides, model versions, edges,
predictions), all through the store's API, and find what a sync still has to write."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from casegraph.graph.records import (
    BufferEntry,
    ModelVersionRecord,
    PatientRecord,
    PredictionRecord,
    SimilarEdge,
    SlideRecord,
)
from casegraph.ingest.store import Store

SPLITS_TOKEN = "splits:"  # prefix of the pseudo-batch standing for the store's split rows


@dataclass(frozen=True)
class PatientDelta:
    """What a sync writes of the patients: ``patient_ids`` (None = every patient) and the
    batch ids to mark synced once they are written."""

    patient_ids: list[str] | None
    batches: list[str]

    @property
    def empty(self) -> bool:
        return self.patient_ids is not None and not self.patient_ids


def patient_delta(store: Store, synced_batches: set[str]) -> PatientDelta:
    """The patients touched by an ingest batch the graph does not hold yet.

    A patient belongs to every batch that wrote one of its rows (its patient row, re-written
    by an ``--update``; its genomic row; a slide). Split memberships carry no batch id: they
    count as one pseudo-batch named by a digest of all split rows, so a changed split set
    rewrites every patient (splits change rarely).
    """
    frame = store.patient_batches()
    splits = SPLITS_TOKEN + store.splits_digest()
    new = sorted((set(frame["batch_id"]) | {splits}) - synced_batches)
    if splits in new:
        return PatientDelta(None, new)
    touched = frame.loc[frame["batch_id"].isin(new), "patient_id"]
    return PatientDelta(sorted({str(p) for p in touched}), new)


def patient_records(store: Store, patient_ids: Sequence[str] | None = None) -> list[PatientRecord]:
    """Patients (all, or these) with their authentic modalities and split memberships."""
    patients = store.patient_outcomes(patient_ids)
    ids = [str(i) for i in patients["patient_id"]]
    scope = None if patient_ids is None else ids
    modalities = _modalities(store, ids, scope)
    splits = _splits(store, scope)
    return [
        PatientRecord(
            patient_id=pid,
            cohort=str(row.cohort),
            time=float(row.time),
            event=bool(row.event),
            modalities=tuple(sorted(modalities.get(pid, ()))),
            splits=tuple(sorted(splits.get(pid, ()))),
        )
        for pid, row in zip(ids, patients.itertuples(index=False), strict=True)
    ]


def _modalities(store: Store, ids: list[str], scope: list[str] | None) -> dict[str, set[str]]:
    """Genomic modalities with stored (measured) values, plus ``wsi`` for patients with slides.
    ``scope``: the patients to look up (None = all)."""
    out: dict[str, set[str]] = {pid: set() for pid in ids}
    matrix_ids = store.patient_ids_with_genomics(scope)
    if matrix_ids:
        _, names, present = store.genomic_matrix(matrix_ids)
        features = store.feature_table()
        modality_of = dict(zip(features["name"], features["modality"], strict=True))
        modality = np.array([modality_of.get(n, "unknown") for n in names], dtype=object)
        for kind in sorted(set(modality)):
            has = present[:, modality == kind].any(axis=1)
            for pid in np.asarray(matrix_ids, dtype=object)[has]:
                out.setdefault(str(pid), set()).add(str(kind))
    for pid in store.slide_patient_ids(scope):
        out.setdefault(pid, set()).add("wsi")
    return out


def _splits(store: Store, ids: list[str] | None) -> dict[str, list[str]]:
    rows = store.split_rows(ids)
    out: dict[str, list[str]] = {}
    for pid, split_set, fold, role in zip(rows["patient_id"], rows["split_set"], rows["fold"],
                                          rows["role"], strict=True):
        out.setdefault(str(pid), []).append(f"{split_set}/{int(fold)}/{role}")
    return out


def slide_records(store: Store, patient_ids: Sequence[str] | None = None) -> list[SlideRecord]:
    """Slides (all, or those of these patients)."""
    slides = store.slides()
    if patient_ids is not None:
        slides = slides[slides["patient_id"].isin(set(patient_ids))]
    return [
        SlideRecord(
            slide_id=str(row.slide_id),
            patient_id=str(row.patient_id),
            n_patches=None if pd.isna(row.n_patches) else int(row.n_patches),
            encoder=None if row.encoder is None or pd.isna(row.encoder) else str(row.encoder),
        )
        for row in slides.itertuples(index=False)
    ]


def model_version_records(store: Store) -> list[ModelVersionRecord]:
    """Every version, oldest first (a parent before its children)."""
    return [
        ModelVersionRecord(
            version_id=v.version_id,
            model=v.model,
            cohort=v.cohort,
            created=pd.Timestamp(v.created_at).isoformat(),
            params=_json_text(v.config),
            metrics=_json_text(v.metrics),
            parent_id=v.parent_id,
            batches=tuple(str(b) for b in v.batches),
        )
        for v in store.versions.all()
    ]


def _json_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "{}"
    if isinstance(value, str):
        return json.dumps(json.loads(value), sort_keys=True)
    return json.dumps(value, sort_keys=True, default=str)


def similar_frame(store: Store, version_id: str) -> pd.DataFrame:
    """The version's own edges as columns patient_id, neighbour_id, rank, weight, ordered
    by patient and rank (a derived version's: only its new patients')."""
    return store.versions.neighbours(version_id, own_only=True)


def similar_edges(store: Store, version_id: str) -> list[SimilarEdge]:
    """The version's own edges (a derived version's: only its new patients'), each
    patient's edges together, by rank."""
    frame = similar_frame(store, version_id)
    return [
        SimilarEdge(str(a), str(b), int(r), float(w))
        for a, b, r, w in zip(frame["patient_id"], frame["neighbour_id"], frame["rank"],
                              frame["weight"], strict=True)
    ]


def prediction_records(store: Store, version_id: str) -> list[PredictionRecord]:
    """The version's own predictions."""
    frame = store.versions.predictions(version_id, own_only=True)
    return [
        PredictionRecord(str(p), float(r), None if s is None else tuple(float(x) for x in s),
                         bool(i))
        for p, r, s, i in zip(frame["patient_id"], frame["risk"], frame["survival"],
                              frame["inferred"], strict=True)
    ]


def buffer_entries(store: Store, version_id: str) -> list[BufferEntry]:
    """The version's whole buffer (every version stores its own)."""
    return [BufferEntry(pid, i) for i, pid in enumerate(store.versions.buffer(version_id))]
