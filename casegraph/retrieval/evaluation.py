"""Censoring-aware retrieval evaluation: held-out patients query the training patients.

For each fold (train / held-out) and method, every held-out patient is a query whose
neighbours come from the training patients only. Reported per method:

- ``harrell`` / ``uno``: C-index of the neighbour-derived risk (-sum over the time bins of
  the neighbours' weighted Kaplan-Meier curve; bins from the training times), Uno's with
  the training fold's censoring distribution (casegraph.models.metrics guards);
- ``model_harrell`` / ``model_uno``: the model's own risk, where there is a model;
- ``acc@k``, ``mv@k``, ``mmv@k`` for a label (e.g. oncotree code): some neighbour shares
  the label / the majority vote is right / the majority vote's accuracy macro-averaged
  over the labels present among the queries (mMV@k);
- for MSRL, the candidate pruning against the exact path (GSL over the whole buffer):
  ``recall@10`` of the exact top-10 neighbours and ``risk_abs_diff`` (mean |delta risk|).

Methods: ``knn`` (WSI-only embedding kNN: mean patch features, centred, cosine),
``msrl`` (WSI-only: Inductor + GSL over FAISS candidates), ``multimodal`` (authentic
genomics + WSI: kNN on both blocks, and the ``msrl_multi`` model's risk).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.ingest.store import Store
from casegraph.models.data import CohortData
from casegraph.models.metrics import harrell_c, uno_c
from casegraph.models.neighbourhood import (
    bin_end_times,
    neighbour_prediction,
    softmax_weights,
)
from casegraph.retrieval import msrl_adapter
from casegraph.retrieval.faiss_index import FlatIndex
from casegraph.retrieval.index import slide_mean_embeddings
from casegraph.schema import SurvivalTarget

METHODS = ("knn", "msrl", "multimodal")
log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]


@dataclass
class Neighbourhoods:
    """Per query: neighbour row indices into the training set and their weights."""

    index: list[list[int]]
    weight: list[FloatArray]


@dataclass
class FoldResult:
    fold: int
    n_train: int
    n_test: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def label_metrics(query: Sequence[str | None], neighbours: Sequence[Sequence[str | None]],
                  k: int) -> dict[str, float]:
    """Acc@k, MV@k and mMV@k over queries with a label (neighbours ranked best first)."""
    hits: list[bool] = []
    votes: list[bool] = []
    per_class: dict[str, list[bool]] = {}
    for label, ranked in zip(query, neighbours, strict=True):
        if label is None:
            continue
        top = [n for n in ranked[:k] if n is not None]
        hits.append(label in top)
        majority = Counter(top).most_common(1)[0][0] if top else None
        votes.append(majority == label)
        per_class.setdefault(label, []).append(majority == label)
    if not hits:
        return {}
    return {f"acc@{k}": float(np.mean(hits)), f"mv@{k}": float(np.mean(votes)),
            f"mmv@{k}": float(np.mean([np.mean(v) for v in per_class.values()]))}


def neighbour_risk(train: SurvivalTarget, hoods: Neighbourhoods,
                   bins: FloatArray) -> FloatArray:
    """Risk of each query from its neighbours' weighted Kaplan-Meier curve."""
    out = np.empty(len(hoods.index))
    for q, (idx, w) in enumerate(zip(hoods.index, hoods.weight, strict=True)):
        out[q] = neighbour_prediction(train.time[idx], train.event[idx], w, bins)[0] \
            if idx else 0.0
    return out


def _cosine_hoods(train_x: np.ndarray, test_x: np.ndarray, k: int,
                  temperature: float) -> Neighbourhoods:
    index = FlatIndex(train_x.shape[1], use_gpu=False)
    index.add([str(i) for i in range(len(train_x))], train_x)
    hits = index.search(test_x, k)
    return Neighbourhoods([[int(h.patient_id) for h in row] for row in hits],
                          [softmax_weights([h.score for h in row], temperature) for row in hits])


def _centred(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = train.mean(axis=0)
    return train - mu, test - mu


def _wsi_means(store: Store, data: CohortData) -> np.ndarray:
    ids, vectors = slide_mean_embeddings(store, data.patient_ids)
    pos = {p: i for i, p in enumerate(ids)}
    return vectors[[pos[p] for p in data.patient_ids]].astype(np.float64)


def _genomics_block(train: CohortData, test: CohortData) -> tuple[np.ndarray, np.ndarray]:
    from casegraph.models.preprocess import GenomicsPreprocessor

    pre = GenomicsPreprocessor().fit(train.genomics)
    tr = np.concatenate(pre.transform(train.genomics), axis=1)
    te = np.concatenate(pre.transform(test.genomics), axis=1)
    return tr, te


def _unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.where(n > 0, n, 1.0))


def _survival_metrics(prefix: str, risk: FloatArray, train: SurvivalTarget,
                      test: SurvivalTarget) -> dict[str, float]:
    return {f"{prefix}harrell": harrell_c(risk, test), f"{prefix}uno": uno_c(risk, train, test)}


def _labels(data: CohortData, label: str) -> list[str | None]:
    out: list[str | None] = []
    for attrs in data.attributes or [{}] * len(data):
        v = attrs.get(label)
        out.append(str(v) if isinstance(v, str) and v else None)
    return out


def evaluate_fold(
    store: Store,
    data: CohortData,
    train_idx: npt.ArrayLike,
    test_idx: npt.ArrayLike,
    *,
    fold: int = 0,
    k: int = 10,
    methods: Sequence[str] = METHODS,
    label: str = "oncotree_code",
    n_candidates: int = 30,
    temperature: float = 0.1,
    msrl_options: dict[str, Any] | None = None,
) -> FoldResult:
    train, test = data.subset(train_idx), data.subset(test_idx)
    bins = bin_end_times(train.target.time, train.target.event)
    train_labels, test_labels = _labels(train, label), _labels(test, label)
    result = FoldResult(fold, len(train), len(test))

    started = time.perf_counter()

    def record(name: str, hoods: Neighbourhoods, extra: dict[str, float]) -> None:
        log.info("fold %d: %s done after %.0f s", fold, name, time.perf_counter() - started)
        risk = neighbour_risk(train.target, hoods, bins)
        metrics = _survival_metrics("", risk, train.target, test.target)
        ranked = [[train_labels[j] for j in row] for row in hoods.index]
        metrics.update(label_metrics(test_labels, ranked, k))
        metrics.update(extra)
        result.metrics[name] = metrics

    wsi_train, wsi_test = _centred(*(_wsi_means(store, d) for d in (train, test)))
    if "knn" in methods:
        record("knn", _cosine_hoods(wsi_train, wsi_test, k, temperature), {})
    if "multimodal" in methods and train.genomics:
        g_train, g_test = _genomics_block(train, test)
        fused_train = np.concatenate([_unit_rows(g_train), _unit_rows(wsi_train)], axis=1)
        fused_test = np.concatenate([_unit_rows(g_test), _unit_rows(wsi_test)], axis=1)
        extra = {}
        if msrl_options is not None:
            multi = _fit_msrl("msrl_multi", train, test, msrl_options)
            extra = _survival_metrics("model_", multi.predict(test).risk, train.target,
                                      test.target)
        record("multimodal", _cosine_hoods(fused_train, fused_test, k, temperature), extra)
    if "msrl" in methods and msrl_options is not None:
        hoods, extra = _msrl_queries(train, test, k, n_candidates, msrl_options)
        record("msrl", hoods, extra)
    return result


def _fit_msrl(variant: str, train: CohortData, test: CohortData,
              options: dict[str, Any]) -> Any:
    from casegraph.models.msrl import MSRLModel

    return MSRLModel(variant, **options).fit(train, test)


def _msrl_queries(train: CohortData, test: CohortData, k: int, n_candidates: int,
                  options: dict[str, Any]) -> tuple[Neighbourhoods, dict[str, float]]:
    """WSI-only MSRL queries: pruned (FAISS top-M in the GSL space) and exact (whole
    buffer); neighbourhoods of the pruned path, model risks and the pruning's agreement."""
    from casegraph.retrieval.index import IndexKey, LoadedIndex
    from casegraph.retrieval.query import QueryOptions, answer_wsi_only

    model = msrl_adapter.cache_reference_lookup(_fit_msrl("msrl", train, test, options))
    ref_ids, ref_vectors = msrl_adapter.reference_vectors(model)
    index = FlatIndex(ref_vectors.shape[1], use_gpu=False)
    index.add(ref_ids, ref_vectors)
    loaded = LoadedIndex(IndexKey("evaluation", msrl_adapter.GSL_KIND), index)
    pruned_opts = QueryOptions(k=k, n_candidates=min(n_candidates, len(ref_ids)))
    exact_opts = QueryOptions(k=k, n_candidates=min(n_candidates, len(ref_ids)), exact=True)
    pos = {p: i for i, p in enumerate(train.patient_ids)}
    pruned_risk, exact_risk, recalls, sizes = [], [], [], []
    hoods = Neighbourhoods([], [])
    for i in range(len(test)):
        bag = test.load_bag(i)
        pruned = answer_wsi_only(model, loaded, bag, pruned_opts)
        exact = answer_wsi_only(model, loaded, bag, exact_opts)
        pruned_risk.append(pruned.risk)
        exact_risk.append(exact.risk)
        sizes.append(pruned.n_candidates)
        top_exact = {p for p, _ in exact.neighbours[:10]}
        top_pruned = {p for p, _ in pruned.neighbours[:10]}
        recalls.append(len(top_pruned & top_exact) / max(len(top_exact), 1))
        hoods.index.append([pos[p] for p, _ in pruned.neighbours[:k]])
        w = np.asarray([wt for _, wt in pruned.neighbours[:k]], dtype=np.float64)
        hoods.weight.append(w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / max(len(w), 1)))
    p_risk, e_risk = np.asarray(pruned_risk), np.asarray(exact_risk)
    extra = _survival_metrics("model_", p_risk, train.target, test.target)
    extra.update({f"exact_{m}": v for m, v in _survival_metrics(
        "model_", e_risk, train.target, test.target).items()})
    extra.update({"recall@10": float(np.mean(recalls)),
                  "risk_abs_diff": float(np.mean(np.abs(p_risk - e_risk))),
                  "risk_sd": float(np.std(e_risk)),
                  "n_buffer": float(msrl_adapter.buffer_size(model)),
                  "n_candidates": float(np.mean(sizes))})
    return hoods, extra


def summarise(folds: Sequence[FoldResult]) -> dict[str, dict[str, tuple[float, float]]]:
    """method -> metric -> (mean, sd) over folds (NaNs ignored)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for method in sorted({m for f in folds for m in f.metrics}):
        names = sorted({n for f in folds for n in f.metrics.get(method, {})})
        out[method] = {}
        for name in names:
            values = np.array([f.metrics[method].get(name, np.nan) for f in folds
                               if method in f.metrics], dtype=np.float64)
            finite = values[np.isfinite(values)]
            out[method][name] = ((float(finite.mean()), float(finite.std()))
                                 if finite.size else (float("nan"), float("nan")))
    return out
