"""Turn a CohortData into MSRL's tensors: WSI inputs (bag means or bags), genomics, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from casegraph.errors import InputError
from casegraph.ingest.bags import read_bag
from casegraph.models.data import CohortData

FloatArray = npt.NDArray[np.float32]

# (path, mtime_ns, size) -> (mean (D,), n_patches); bags are immutable once ingested
_MEAN_CACHE: dict[tuple[str, int, int], tuple[FloatArray, int]] = {}


def _slide_mean(path: Path) -> tuple[FloatArray, int]:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _MEAN_CACHE:
        feats = read_bag(path).features
        _MEAN_CACHE[key] = (feats.mean(axis=0, dtype=np.float64).astype(np.float32), len(feats))
    return _MEAN_CACHE[key]


def _require_bags(data: CohortData, i: int) -> list[Path]:
    if not data.bags[i]:
        raise InputError(
            "patient has no slide features; MSRL needs a WSI bag for every patient",
            row=data.patient_ids[i],
            fix="ingest the patient's slides, or load the cohort with require_slides=True",
        )
    return data.bags[i]


def _summary_means(data: CohortData, k: int, seed: int) -> dict[str, FloatArray]:
    """slide_id -> stored mean embedding, where the store has summaries for (k, seed)."""
    if data.summaries is None or not data.slide_ids:
        return {}
    wanted = [s for slides in data.slide_ids for s in slides]
    try:
        found = data.summaries(wanted, k, seed)
    except Exception:  # a store without summaries: fall back to reading the bags
        return {}
    return {sid: mean for sid, (mean, _centres) in found.items()}


def bag_means(data: CohortData, summary_k: int = 6, summary_seed: int = 0) -> FloatArray:
    """(n, D) mean patch embedding of each patient.

    From the store's per-slide summaries when every slide of the patient has one (slides
    weighted equally), else from the bags (all patches of all slides weighted equally).
    """
    stored = _summary_means(data, summary_k, summary_seed)
    rows = []
    for i in range(len(data)):
        slides = data.slide_ids[i] if data.slide_ids else []
        if slides and all(s in stored for s in slides):
            rows.append(np.mean([stored[s] for s in slides], axis=0).astype(np.float32))
            continue
        parts = [_slide_mean(p) for p in _require_bags(data, i)]
        total = sum(n for _, n in parts)
        mean = np.sum([m * (n / total) for m, n in parts], axis=0)
        rows.append(np.asarray(mean, dtype=np.float32))
    return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


def wsi_inputs(data: CohortData, encoder: str) -> Tensor | list[Tensor]:
    """``mean_mlp``: (n, D) tensor of bag means; ``abmil``: list of n bags (N_i, D)."""
    if encoder == "abmil":
        for i in range(len(data)):
            _require_bags(data, i)
        return [torch.from_numpy(data.load_bag(i)) for i in range(len(data))]
    return torch.from_numpy(bag_means(data))


def bags_to_wsi(bags: list[npt.NDArray[np.floating]], encoder: str) -> Tensor | list[Tensor]:
    """Raw bags (N_i, D) -> the encoder's WSI input."""
    tensors = [torch.as_tensor(np.asarray(b, dtype=np.float32)) for b in bags]
    for j, t in enumerate(tensors):
        if t.dim() != 2 or t.shape[0] == 0:
            raise InputError(f"bag {j} must be a non-empty (N, D) matrix, got {tuple(t.shape)}")
    if encoder == "abmil":
        return tensors
    return torch.stack([t.mean(dim=0) for t in tensors])


def genomics_tensors(groups: list[FloatArray]) -> list[Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(g, dtype=np.float32)) for g in groups]


def class_labels(data: CohortData, column: str, classes: list[str] | None = None
                 ) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Classification labels from a patient attribute; classes sorted (or given)."""
    values = []
    for i, attrs in enumerate(data.attributes or [{}] * len(data)):
        value = attrs.get(column)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise InputError(
                f"patient {data.patient_ids[i]} has no value for label {column!r}",
                row=data.patient_ids[i], column=column,
                fix="choose a label every training patient has, or drop those patients",
            )
        values.append(str(value))
    known = classes if classes is not None else sorted(set(values))
    pos = {c: j for j, c in enumerate(known)}
    unknown = sorted(set(values) - set(pos))
    if unknown:
        raise InputError(f"label values {unknown[:5]} were not seen in training", column=column)
    return np.array([pos[v] for v in values], dtype=np.int64), list(known)


def inner_split(events: npt.NDArray[np.bool_], fraction: float, seed: int
                ) -> tuple[list[int], list[int]]:
    """(fit rows, inner-validation rows) of the training fold: ``fraction`` of the cases
    with and of those without an event, drawn with ``seed``; no inner rows for fraction 0."""
    rng = np.random.default_rng(seed)
    inner: list[int] = []
    for value in (False, True):
        rows = np.flatnonzero(np.asarray(events, dtype=bool) == value)
        n_inner = round(len(rows) * fraction)
        inner += rng.choice(rows, n_inner, replace=False).tolist() if n_inner else []
    chosen = set(inner)
    return [i for i in range(len(events)) if i not in chosen], sorted(inner)
