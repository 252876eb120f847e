"""Read the graph's records from the store (patients, slides, model versions, edges)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from casegraph.graph.records import (
    BufferEntry,
    ModelVersionRecord,
    PatientRecord,
    SimilarEdge,
    SlideRecord,
)
from casegraph.ingest.store import Store


def patient_records(store: Store) -> list[PatientRecord]:
    """Every patient with its authentic modalities and split memberships."""
    patients = store.patients()
    modalities = _modalities(store)
    splits = _splits(store)
    return [
        PatientRecord(
            patient_id=str(row.patient_id),
            cohort=str(row.cohort),
            time=float(row.time),
            event=bool(row.event),
            modalities=tuple(sorted(modalities.get(str(row.patient_id), ()))),
            splits=tuple(sorted(splits.get(str(row.patient_id), ()))),
        )
        for row in patients.itertuples(index=False)
    ]


def _modalities(store: Store) -> dict[str, set[str]]:
    """Genomic modalities with stored (measured) values, plus ``wsi`` for patients with slides."""
    ids = [str(i) for i in store.patients()["patient_id"]]
    out: dict[str, set[str]] = {pid: set() for pid in ids}
    matrix_ids = [r[0] for r in store.con.execute("SELECT patient_id FROM genomic_rows").fetchall()]
    if matrix_ids:
        _, names, present = store.genomic_matrix(matrix_ids)
        modality_of = dict(zip(store.feature_table()["name"], store.feature_table()["modality"],
                               strict=True))
        modality = np.array([modality_of.get(n, "unknown") for n in names], dtype=object)
        for kind in sorted(set(modality)):
            has = present[:, modality == kind].any(axis=1)
            for pid in np.asarray(matrix_ids, dtype=object)[has]:
                out.setdefault(str(pid), set()).add(str(kind))
    for (pid,) in store.con.execute("SELECT DISTINCT patient_id FROM slides").fetchall():
        out.setdefault(str(pid), set()).add("wsi")
    return out


def _splits(store: Store) -> dict[str, list[str]]:
    rows = store.con.execute("SELECT patient_id, split_set, fold, role FROM splits").fetchall()
    out: dict[str, list[str]] = {}
    for pid, split_set, fold, role in rows:
        out.setdefault(str(pid), []).append(f"{split_set}/{int(fold)}/{role}")
    return out


def slide_records(store: Store) -> list[SlideRecord]:
    slides = store.slides()
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
    versions = store.model_versions()
    return [
        ModelVersionRecord(
            version_id=str(row.version_id),
            model=str(row.model),
            cohort=None if row.cohort is None or pd.isna(row.cohort) else str(row.cohort),
            created=pd.Timestamp(row.created_at).isoformat(),
            params=_json_text(row.config),
            metrics=_json_text(row.metrics),
        )
        for row in versions.itertuples(index=False)
    ]


def _json_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "{}"
    if isinstance(value, str):
        return json.dumps(json.loads(value), sort_keys=True)
    return json.dumps(value, sort_keys=True, default=str)


def similar_edges(store: Store, version_id: str) -> list[SimilarEdge]:
    frame = store.model_neighbours(version_id)
    return [
        SimilarEdge(str(a), str(b), int(r), float(w))
        for a, b, r, w in zip(frame["patient_id"], frame["neighbour_id"], frame["rank"],
                              frame["weight"], strict=True)
    ]


def buffer_entries(store: Store, version_id: str) -> list[BufferEntry]:
    return [BufferEntry(pid, i) for i, pid in enumerate(store.model_buffer(version_id))]
