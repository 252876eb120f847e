"""Persist a trained MSRL model as a store model version, and load it back.

Files under ``store.artifacts_dir/<version_id>/`` (written before the DuckDB commit):
``weights.pt`` (online + target state dicts), ``config.json`` (options, shapes, bin edges,
classes), ``state.npz`` (genomics preprocessing, buffer and reference features),
``embeddings-<kind>-*.parquet`` (patient_id, vector) for kinds ``wsi`` (online h),
``genomics`` (authentic g) and ``fused`` (authentic f = [g, h], the buffer's space).
Rows (one transaction): ``model_versions``, ``model_buffer`` (FIFO order),
``model_neighbours`` (each embeddable patient's top-K by learned GSL similarity, self
excluded; weight = that similarity, clipped at 0), ``patient_embeddings``
(file path relative to the store root).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import torch
from torch import Tensor

from casegraph.errors import StoreError
from casegraph.ingest.parquet_files import write_parquet_atomic
from casegraph.ingest.store import Store
from casegraph.models.data import CohortData
from casegraph.models.msrl.buffer import CaseBuffer
from casegraph.models.msrl.config import MSRLConfig
from casegraph.models.msrl.gsl import cosine_similarity_matrix
from casegraph.models.msrl.inputs import genomics_tensors, wsi_inputs
from casegraph.models.msrl.nets import MSRLNetwork
from casegraph.models.preprocess import GenomicsPreprocessor

if TYPE_CHECKING:
    from casegraph.models.msrl.model import MSRLModel


def _version_id(name: str, cohort: str | None) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{name}-{cohort or 'all'}-{stamp}-{uuid.uuid4().hex[:6]}"


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
def neighbour_rows(model: MSRLModel, ids: list[str], fused: Tensor, chunk: int = 2048
                   ) -> pd.DataFrame:
    """Top-K neighbours of every patient by the learned similarity of the fused features."""
    k = min(model.config.k, len(ids) - 1)
    frames = []
    emb = model.net_.gsl_f.embed(fused) if model.config.graph != "euclidean_knn" else fused
    for start in range(0, len(ids), chunk):
        rows = torch.arange(start, min(start + chunk, len(ids)))
        if model.config.graph == "euclidean_knn":
            sim = model.net_.gsl_f.cross_similarity(fused[rows], fused)
        else:
            sim = cosine_similarity_matrix(emb[rows], emb)
        sim[torch.arange(len(rows)), rows] = float("-inf")
        if k <= 0:
            continue
        vals, idx = sim.topk(k, dim=1)
        frames.append(pd.DataFrame({
            "patient_id": np.repeat([ids[i] for i in rows.tolist()], k),
            "neighbour_id": [ids[j] for j in idx.reshape(-1).tolist()],
            "rank": np.tile(np.arange(1, k + 1), len(rows)),
            "weight": vals.clamp_min(0.0).reshape(-1).numpy().astype(np.float64),
        }))
    cols = ["patient_id", "neighbour_id", "rank", "weight"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def _embedding_table(ids: list[str], vectors: Tensor) -> pa.Table:
    arr = vectors.numpy().astype(np.float32)
    flat = pa.array(arr.reshape(-1), type=pa.float32())
    return pa.table({
        "patient_id": pa.array(ids, type=pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, arr.shape[1]),
    })


def save_version(model: MSRLModel, store: Store, cohort: str | None) -> str:
    """Write the version's files, then its rows in one transaction; returns the version id."""
    version_id = _version_id(model.name, cohort)
    folder = store.artifacts_dir / version_id
    folder.mkdir(parents=True, exist_ok=False)
    data = CohortData.from_store(store, cohort, group_set=model.config.group_set,
                                 require_slides=True)
    if model.config.uses_genomics and data.group_sizes != model.group_sizes_:
        raise StoreError(f"the store's {model.config.group_set!r} gene groups have sizes "
                         f"{data.group_sizes}, the model was trained on {model.group_sizes_}")
    emb = store_embeddings(model, data)
    ids = list(data.patient_ids)
    # the reference set for candidate queries becomes every patient of the store
    ref = dict(zip(model.reference_ids_, model.reference_fused_, strict=True))
    ref.update(zip(ids, emb["fused"], strict=True))
    model.reference_ids_ = list(ref)
    model.reference_fused_ = torch.stack(list(ref.values())) if ref else model.reference_fused_
    torch.save({"net": model.net_.state_dict(), "target": model.target_.state_dict()},
               folder / "weights.pt")
    _write_config(model, folder)
    _write_state(model, folder)
    files = {kind: write_parquet_atomic(_embedding_table(ids, v), folder, f"embeddings-{kind}")
             for kind, v in emb.items()}
    neighbours = neighbour_rows(model, ids, emb["fused"])
    metrics = {"pretrain_loss_last": _last(model.pretrain_history_),
               "finetune_loss_last": _last(model.finetune_history_),
               "n_buffer": len(model.buffer_), "n_embedded": len(ids)}
    rel = folder.relative_to(store.root).as_posix()
    with store.transaction() as con:
        con.execute(
            "INSERT INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
            [version_id, model.name, cohort, datetime.now(UTC).replace(tzinfo=None),
             json.dumps(model.config.to_dict()), json.dumps(metrics), rel],
        )
        con.executemany(
            "INSERT INTO model_buffer VALUES (?, ?, ?)",
            [[version_id, i, p] for i, p in enumerate(model.buffer_.ids)],
        )
        if len(neighbours):
            frame = neighbours.assign(version_id=version_id)[
                ["version_id", "patient_id", "neighbour_id", "rank", "weight"]]
            con.register("_msrl_neighbours", frame)
            try:
                con.execute("INSERT INTO model_neighbours SELECT * FROM _msrl_neighbours")
            finally:
                con.unregister("_msrl_neighbours")
        for kind, name in files.items():
            con.execute(
                "INSERT INTO patient_embeddings VALUES (?, ?, ?, ?, ?)",
                [version_id, kind, f"{rel}/{name}", int(emb[kind].shape[1]), len(ids)],
            )
    return version_id


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

    row = store.con.execute(
        "SELECT artifact_dir FROM model_versions WHERE version_id = ?", [version_id]
    ).fetchone()
    if row is None:
        raise StoreError(f"no model version {version_id!r} in store {store.root}")
    folder = store.root / str(row[0])
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = MSRLConfig.from_options(**meta["config"])
    model = MSRLModel("msrl", **config.to_dict())
    model.name = meta["name"]
    model.bag_dim_, model.group_sizes_ = int(meta["bag_dim"]), list(meta["group_sizes"])
    model.bin_edges_ = None if meta["bin_edges"] is None else np.array(meta["bin_edges"])
    model.classes_ = list(meta["classes"])
    n_out = config.n_bins if config.task == "survival" else len(model.classes_)
    weights = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
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
    model._set_buffer(buffer)
    return model


def read_patient_embeddings(store: Store, version_id: str, kind: str
                            ) -> tuple[list[str], npt.NDArray[np.float32]]:
    """(patient ids, (n, d) vectors) of one stored embedding kind of a version."""
    row = store.con.execute(
        "SELECT file FROM patient_embeddings WHERE version_id = ? AND kind = ?",
        [version_id, kind],
    ).fetchone()
    if row is None:
        raise StoreError(f"no {kind!r} embeddings for model version {version_id!r}")
    frame = pd.read_parquet(store.root / str(row[0]))
    ids = [str(p) for p in frame["patient_id"]]
    if not ids:
        return ids, np.zeros((0, 0), dtype=np.float32)
    return ids, np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]])
