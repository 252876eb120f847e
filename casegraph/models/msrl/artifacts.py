"""Persist a trained MSRL model as a store model version, and load it back.

Files under ``store.artifacts_dir/<version_id>/`` (written before the DuckDB commit):
``weights.pt`` (online + target state dicts), ``config.json`` (options, shapes, bin edges,
classes), ``state.npz`` (genomics preprocessing, buffer and reference features),
``embeddings-<kind>-*.parquet`` (patient_id, vector) for kinds ``wsi`` (online h),
``genomics`` (authentic g) and ``fused`` (authentic f = [g, h], the buffer's space).
Rows go through the store's version API (:mod:`casegraph.ingest.versions`): the version,
its training patients, buffer (FIFO order), each embeddable patient's top-K neighbours by
learned GSL similarity (the patient's own case excluded, as a query excludes it; weight =
that similarity, clipped at 0) and the embedding files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from casegraph.errors import StoreError
from casegraph.ingest.store import Store
from casegraph.ingest.versions import NewVersion, PredictionRows, new_version_id
from casegraph.models.data import CohortData
from casegraph.models.msrl.buffer import CaseBuffer
from casegraph.models.msrl.config import MSRLConfig
from casegraph.models.msrl.gsl import cosine_similarity_matrix
from casegraph.models.msrl.inputs import genomics_tensors, wsi_inputs
from casegraph.models.msrl.nets import MSRLNetwork
from casegraph.models.preprocess import GenomicsPreprocessor
from casegraph.models.weights_file import load_weights, save_weights

if TYPE_CHECKING:
    from casegraph.models.msrl.model import MSRLModel


@torch.no_grad()
def store_embeddings(model: MSRLModel, data: CohortData) -> dict[str, Tensor]:
    """h (online), g and f (authentic, target branch) of every patient in ``data``."""
    model.net_.eval()
    wsi = wsi_inputs(data, model.config.wsi_encoder)
    h = model.net_.encode_wsi(wsi)
    out = {"wsi": h}
    h_t = model.target_.encode_wsi(wsi)
    if model.config.uses_genomics:
        groups = genomics_tensors(model.preprocessor_.transform(data.genomics))
        g = model.target_.encode_genomics(groups)
        out["genomics"] = g
        out["fused"] = torch.cat([g, h_t], dim=1)
    else:
        out["fused"] = h_t
    return out


@torch.no_grad()
def neighbour_rows(model: MSRLModel, ids: list[str], fused: Tensor, chunk: int = 2048,
                   cases: list[str] | None = None) -> pd.DataFrame:
    """Top-K neighbours of every patient by the learned similarity of the fused features
    (n, f). ``cases`` (n,): each patient's case id (default: its own id); patients of the
    same case are never each other's neighbours, the rule the query path follows."""
    k = min(model.config.k, len(ids) - 1)
    case_codes = torch.from_numpy(pd.factorize(pd.Series(cases if cases is not None
                                                         else ids))[0])
    frames = []
    emb = model.net_.gsl_f.embed(fused) if model.config.graph != "euclidean_knn" else fused
    for start in range(0, len(ids), chunk):
        rows = torch.arange(start, min(start + chunk, len(ids)))
        if model.config.graph == "euclidean_knn":
            sim = model.net_.gsl_f.cross_similarity(fused[rows], fused)
        else:
            sim = cosine_similarity_matrix(emb[rows], emb)
        sim[case_codes[rows][:, None] == case_codes[None, :]] = float("-inf")
        if k <= 0:
            continue
        vals, idx = sim.topk(k, dim=1)
        kept = torch.isfinite(vals)
        frame = pd.DataFrame({
            "patient_id": np.repeat([ids[i] for i in rows.tolist()], k),
            "neighbour_id": [ids[j] for j in idx.reshape(-1).tolist()],
            "rank": np.tile(np.arange(1, k + 1), len(rows)),
            "weight": vals.clamp_min(0.0).reshape(-1).numpy().astype(np.float64),
        })
        # a case with more than n - k patients has fewer than k others to list
        frames.append(frame[kept.reshape(-1).numpy()])
    cols = ["patient_id", "neighbour_id", "rank", "weight"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def save_version(model: MSRLModel, store: Store, cohort: str | None) -> str:
    """Write the version's files, then its rows in one transaction; returns the version id."""
    version_id = new_version_id(model.name, cohort)
    data = CohortData.from_store(store, cohort, group_set=model.config.group_set,
                                 require_slides=True)
    if model.config.uses_genomics and data.group_sizes != model.group_sizes_:
        raise StoreError(f"the store's {model.config.group_set!r} gene groups have sizes "
                         f"{data.group_sizes}, the model was trained on {model.group_sizes_}")
    emb = store_embeddings(model, data)
    ids = list(data.patient_ids)
    authentic = authentic_rows(store, model, ids)
    fused_ids = [p for p, a in zip(ids, authentic, strict=True) if a]
    fused = emb["fused"][torch.from_numpy(authentic)]
    # the reference set for candidate queries: every patient with authentic modalities
    ref = dict(zip(model.reference_ids_, model.reference_fused_, strict=True))
    ref.update(zip(fused_ids, fused, strict=True))
    model.reference_ids_ = list(ref)
    model.reference_fused_ = torch.stack(list(ref.values())) if ref else model.reference_fused_
    neighbours = neighbour_rows(model, fused_ids, fused, cases=_case_ids(store, fused_ids))
    prediction = model.predict(data)
    metrics = {"pretrain_loss_last": _last(model.pretrain_history_),
               "finetune_loss_last": _last(model.finetune_history_),
               "n_buffer": len(model.buffer_), "n_embedded": len(ids)}
    embeddings = {k: (ids, v.numpy()) for k, v in emb.items() if k != "fused"}
    embeddings["fused"] = (fused_ids, fused.numpy())
    predictions = PredictionRows(ids, prediction.risk, prediction.survival, ~authentic)

    def write_files(folder: Path) -> None:
        save_weights(folder / "weights.pt", model.name,
                     {"net": model.net_.state_dict(), "target": model.target_.state_dict()})
        _write_config(model, folder)
        _write_state(model, folder)

    return store.versions.create(NewVersion(
        model=model.name, cohort=cohort, config={**model.config.to_dict(),
                                                 "inputs": _inputs(store, model, cohort)},
        metrics=metrics,
        fitted_on=list(model.fitted_ids_), embeddings=embeddings, predictions=predictions,
        neighbours=neighbours, buffer=list(model.buffer_.ids), version_id=version_id,
        bin_edges=None if model.bin_edges_ is None else list(model.bin_edges_)),
        write_files=write_files)


def _inputs(store: Store, model: MSRLModel, cohort: str | None) -> dict[str, Any]:
    """The InputSpec (casegraph.models.versioning) of the version: exactly which genomic
    columns and patch dim it reads at inference (genomics only for msrl_multi; the others
    answer from slides), so it reads the same however the store grows."""
    from casegraph.models.versioning import spec_for_store

    spec = spec_for_store(store, cohort, model.config.group_set,
                          model.config.genomics_mode == "authentic", True)
    spec.bag_dim = int(model.bag_dim_)
    return spec.to_dict()


def authentic_rows(store: Store, model: MSRLModel, patient_ids: list[str]
                   ) -> npt.NDArray[np.bool_]:
    """(n,) True where the patient's fused features are authentic: always for models
    without genomics, else when the store holds any genomic value of the patient."""
    if not model.config.uses_genomics:
        return np.ones(len(patient_ids), dtype=bool)
    _, _, present = store.genomic_matrix(patient_ids)
    return np.asarray(present.any(axis=1), dtype=bool).reshape(len(patient_ids))


def _case_ids(store: Store, patient_ids: list[str]) -> list[str]:
    """Each patient's case: its source id, else its own id (as the query's catalog)."""
    patients = store.patients()
    source = dict(zip(patients["patient_id"].astype(str), patients["source_id"], strict=True))
    return [str(s) if isinstance(s := source.get(p), str) and s else p for p in patient_ids]


def _last(history: list[float]) -> float | None:
    return float(history[-1]) if history else None


def _write_config(model: MSRLModel, folder: Path) -> None:
    edges = model.bin_edges_
    meta: dict[str, Any] = {
        "name": model.name,
        "config": model.config.to_dict(),
        "bag_dim": model.bag_dim_,
        "group_sizes": model.group_sizes_,
        "bin_edges": None if edges is None else [float(e) for e in edges],
        "classes": model.classes_,
        "reference_ids": model.reference_ids_,
        "buffer_ids": model.buffer_.ids,
        "buffer_capacity": model.buffer_.capacity,
    }
    (folder / "config.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _write_state(model: MSRLModel, folder: Path) -> None:
    arrays: dict[str, npt.NDArray[Any]] = {
        "buffer_features": model.buffer_.features.numpy(),
        "reference_fused": model.reference_fused_.numpy(),
    }
    if model.config.uses_genomics:
        pre = model.preprocessor_
        for j, (m, s) in enumerate(zip(pre.mean_, pre.scale_, strict=True)):
            arrays[f"pre_mean_{j}"], arrays[f"pre_scale_{j}"] = m, s
        arrays["pre_options"] = np.array(
            [np.nan if pre.raw_clip is None else pre.raw_clip,
             np.nan if pre.z_clip is None else pre.z_clip, float(pre.standardize)])
    np.savez(folder / "state.npz", **arrays)  # type: ignore[arg-type]


def load_version(store: Store, version_id: str) -> MSRLModel:
    from casegraph.models.msrl.model import MSRLModel

    folder = store.versions.folder(store.versions.root(version_id).version_id)
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = MSRLConfig.from_options(**meta["config"])
    model = MSRLModel("msrl", **config.to_dict())
    model.name = meta["name"]
    model.bag_dim_, model.group_sizes_ = int(meta["bag_dim"]), list(meta["group_sizes"])
    model.bin_edges_ = None if meta["bin_edges"] is None else np.array(meta["bin_edges"])
    model.classes_ = list(meta["classes"])
    n_out = config.n_bins if config.task == "survival" else len(model.classes_)
    weights = load_weights(folder / "weights.pt", str(meta["name"]),
                           legacy_keys=("net", "target"))  # versions saved before 2026-12-02
    model.net_ = MSRLNetwork(config, model.bag_dim_, model.group_sizes_, n_out)
    model.net_.load_state_dict(weights["net"])
    model.net_.eval()
    model.target_ = MSRLNetwork(config, model.bag_dim_, model.group_sizes_, n_out)
    model.target_.load_state_dict(weights["target"])
    model.target_.requires_grad_(False)
    model.target_.eval()
    state = np.load(folder / "state.npz")
    if config.uses_genomics:
        opts = state["pre_options"]
        pre = GenomicsPreprocessor(
            raw_clip=None if np.isnan(opts[0]) else float(opts[0]),
            z_clip=None if np.isnan(opts[1]) else float(opts[1]),
            standardize=bool(opts[2]),
        )
        n_groups = len(model.group_sizes_)
        pre.mean_ = [state[f"pre_mean_{j}"] for j in range(n_groups)]
        pre.scale_ = [state[f"pre_scale_{j}"] for j in range(n_groups)]
        model.preprocessor_ = pre
    buffer = CaseBuffer.from_state(meta["buffer_ids"], torch.from_numpy(state["buffer_features"]),
                                   capacity=int(meta["buffer_capacity"]))
    model.reference_ids_ = list(meta["reference_ids"])
    model.reference_fused_ = torch.from_numpy(state["reference_fused"])
    model.pretrain_history_, model.finetune_history_ = [], []
    model.fitted_ids_ = store.versions.fitted_on(version_id)
    if store.versions.get(version_id).is_derived:
        buffer, ids, fused = _derived_state(store, version_id, buffer.capacity)
        model.reference_ids_, model.reference_fused_ = ids, torch.from_numpy(fused)
    model._set_buffer(buffer)
    return model


BUFFER_FEATURES = "buffer_features.npy"


def save_derived_buffer(folder: Path, features: Tensor) -> None:
    """A derived version's whole buffer (FIFO order, (n, f_dim)), next to its rows."""
    np.save(folder / BUFFER_FEATURES, features.numpy().astype(np.float32), allow_pickle=False)


def _derived_state(store: Store, version_id: str, capacity: int
                   ) -> tuple[CaseBuffer, list[str], npt.NDArray[np.float32]]:
    """(buffer, reference ids, reference fused features) of a derived version: its own
    buffer file and every authentic fused embedding along its lineage."""
    features = np.load(store.versions.folder(version_id) / BUFFER_FEATURES, allow_pickle=False)
    ids = store.versions.buffer(version_id)
    if features.shape[0] != len(ids):
        raise StoreError(f"model version {version_id}: {len(ids)} buffer rows but "
                         f"{features.shape[0]} buffer features")
    buffer = CaseBuffer.from_state(ids, torch.from_numpy(features), capacity=capacity)
    ref_ids, fused = store.versions.embeddings(version_id, "fused")
    return buffer, ref_ids, fused


def read_patient_embeddings(store: Store, version_id: str, kind: str
                            ) -> tuple[list[str], npt.NDArray[np.float32]]:
    """(patient ids, (n, d) vectors) of one stored embedding kind of a version."""
    return store.versions.embeddings(version_id, kind)
