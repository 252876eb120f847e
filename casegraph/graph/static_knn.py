"""The static cosine k-NN graph: the case graph to write while no trained model version exists.

Patient embeddings come from the store: the mean of each patient's per-slide mean patch
embedding (``source="wsi"``), or the patient's standardised genomic vector
(``source="genomics"``); ``"auto"`` takes WSI when any slide summary exists. Each patient's
top-k other patients by cosine similarity become its neighbours (weight = cosine). The result
is stored like any model version (model name ``static-knn``) in model_versions /
model_neighbours, so sync and retrieval treat it the same way.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import numpy.typing as npt
import pandas as pd

from casegraph.errors import InputError
from casegraph.ingest.store import Store
from casegraph.ingest.versions import NewVersion

MODEL_NAME = "static-knn"
SOURCES = ("auto", "wsi", "genomics")


def cosine_knn(
    vectors: npt.NDArray[np.float32], k: int, block: int = 1024
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Top-k cosine neighbours of every row, excluding itself.

    ``vectors``: (n, d). Returns (index (n, k'), similarity (n, k')), k' = min(k, n - 1),
    sorted by decreasing similarity (ties by index). Blocked: memory O(block * n).
    """
    n = vectors.shape[0]
    kk = min(k, n - 1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    index = np.zeros((n, max(kk, 0)), dtype=np.int64)
    sim = np.zeros((n, max(kk, 0)), dtype=np.float32)
    if kk <= 0:
        return index, sim
    for start in range(0, n, block):
        stop = min(start + block, n)
        scores = unit[start:stop] @ unit.T
        scores[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")  # stable: ties by index
        index[start:stop] = order[:, :kk]
        sim[start:stop] = np.take_along_axis(scores, index[start:stop], axis=1)
    return index, sim


def patient_embeddings(store: Store, source: str = "auto") -> tuple[list[str], np.ndarray, str]:
    """(patient ids, (n, d) float32 embeddings, the source used)."""
    if source not in SOURCES:
        raise InputError(f"unknown embedding source {source!r}; choose among: "
                         f"{', '.join(SOURCES)}", column="source")
    if source in ("auto", "wsi"):
        ids, vectors = _wsi_embeddings(store)
        if ids or source == "wsi":
            return ids, vectors, "wsi"
    ids = list(store.patients()["patient_id"])
    matrix, _, present = store.genomic_matrix(ids)
    keep = np.asarray(present.any(axis=1), dtype=bool)
    matrix = matrix[keep]
    if matrix.size:
        mean, std = matrix.mean(axis=0), matrix.std(axis=0)
        matrix = (matrix - mean) / np.where(std > 0, std, 1.0)
    kept_ids = [i for i, k in zip(ids, keep.tolist(), strict=True) if k]
    return kept_ids, matrix.astype(np.float32), "genomics"


def _wsi_embeddings(store: Store) -> tuple[list[str], np.ndarray]:
    setting = store.summary_setting()
    if setting is None:
        return [], np.zeros((0, 0), np.float32)
    slides = store.slides()
    summaries = store.slide_summaries(list(slides["slide_id"]), int(setting[0]), int(setting[1]))
    by_patient: dict[str, list[np.ndarray]] = {}
    for slide_id, patient_id in zip(slides["slide_id"], slides["patient_id"], strict=True):
        if slide_id in summaries:
            by_patient.setdefault(str(patient_id), []).append(summaries[slide_id][0])
    ids = sorted(by_patient)
    if not ids:
        return [], np.zeros((0, 0), np.float32)
    return ids, np.stack([np.mean(by_patient[i], axis=0) for i in ids]).astype(np.float32)


def has_trained_version(store: Store) -> bool:
    return any(v.model != MODEL_NAME for v in store.versions.all())


def ensure_static_knn(store: Store, k: int = 12, source: str = "auto") -> str | None:
    """Write the static k-NN version for the current patients unless it exists; its id.

    The id hashes (source, k, patient ids), so re-running is free and new patients give a
    new version. None when fewer than two patients have embeddings.
    """
    ids, vectors, used = patient_embeddings(store, source)
    if len(ids) < 2:
        return None
    digest = hashlib.sha256(json.dumps([used, k, ids]).encode()).hexdigest()[:12]
    version_id = f"{MODEL_NAME}-{used}-k{k}-{digest}"
    if store.versions.exists(version_id):
        return version_id
    index, sim = cosine_knn(vectors, k)
    kk = index.shape[1]
    id_array = np.asarray(ids, dtype=object)
    rows = pd.DataFrame({
        "patient_id": np.repeat(id_array, kk),
        "neighbour_id": id_array[index.ravel()],
        "rank": np.tile(np.arange(1, kk + 1, dtype=np.int32), len(ids)),
        "weight": sim.ravel().astype(np.float64),
    })
    config = {"k": k, "source": used, "metric": "cosine", "n_patients": len(ids)}
    store.versions.create(NewVersion(model=MODEL_NAME, cohort=None, config=config,
                                     neighbours=rows, version_id=version_id))
    return version_id
