"""The one place retrieval touches MSRL (casegraph.models.msrl), so API drift stays local.

API used (docs/CONTRACTS): ``MSRLModel.load_version(store, version_id)``,
``model.embed_wsi([bag (N, D)]) -> (1, d_h)``, ``model.query_wsi_only(bag, candidate_ids,
k) -> WSIOnlyAnswer(risk, survival (K,), neighbours [(id, weight)], genomics_prompt)``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.errors import InputError
from casegraph.ingest.store import Store

MODEL_NAME = "msrl"


def msrl_versions(store: Store) -> list[str]:
    """MSRL model versions that stored WSI embeddings, oldest first."""
    rows = store.con.execute(
        "SELECT v.version_id FROM model_versions v JOIN patient_embeddings e "
        "ON e.version_id = v.version_id AND e.kind = 'wsi' "
        "WHERE lower(v.model) LIKE 'msrl%' ORDER BY v.created_at").fetchall()
    return [str(r[0]) for r in rows]


def _model_class() -> Any:
    try:
        from casegraph.models.msrl import MSRLModel  # type: ignore[attr-defined]
    except ImportError:
        return None
    return MSRLModel


def choose_version(store: Store, method: str, version: str | None) -> tuple[str | None, str]:
    """(MSRL version to use, or None and the reason the fallback answers)."""
    if method == "knn":
        return None, "the embedding-knn method was requested"
    versions = msrl_versions(store)
    if version is not None and version not in versions:
        raise InputError(f"model version {version!r} is not an MSRL version with WSI "
                         "embeddings", column="model_version",
                         fix=f"choose among: {', '.join(versions) or '(none trained)'}")
    reason = ""
    if not versions:
        reason = "no trained MSRL model version in this store"
    elif _model_class() is None:
        reason = "MSRL is not available in this installation (casegraph.models.msrl.MSRLModel)"
    if reason:
        if method == "msrl":
            raise InputError(reason, column="method",
                             fix="train one with `casegraph train --model msrl`, or use "
                                 "method knn")
        return None, reason
    return version or versions[-1], ""


def load(store: Store, version: str) -> Any:
    cls = _model_class()
    if cls is None:
        raise InputError("MSRL is not available in this installation", column="method")
    return cls.load_version(store, version)


def embed(model: Any, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The WSI embedding h of one bag: (1, d_h) float32."""
    out = model.embed_wsi([features])
    return np.asarray(_to_numpy(out), dtype=np.float32).reshape(1, -1)


def query(model: Any, features: npt.NDArray[np.float32], candidates: list[str] | None,
          k: int) -> Any:
    return model.query_wsi_only(features, candidate_ids=candidates, k=k)


def buffer_ids(model: Any, exclude: Collection[str]) -> list[str] | None:
    """The whole buffer minus ``exclude`` (None = let the model use its whole buffer)."""
    ids = getattr(model, "buffer_ids", None)
    if callable(ids):
        ids = ids()
    if ids is None:
        return None
    return [str(p) for p in ids if p not in exclude]


def bin_ends(model: Any, n_bins: int) -> list[float] | None:
    """End time of each of the model's bins when it exposes finite bin edges."""
    edges = getattr(model, "bin_edges_", None)
    if edges is None:
        return None
    e = np.asarray(_to_numpy(edges), dtype=np.float64)
    if e.size != n_bins + 1:
        return None
    ends = e[1:].copy()
    if not np.isfinite(ends[-1]):
        ends[-1] = e[-2] * 1.5 if np.isfinite(e[-2]) and e[-2] > 0 else float(n_bins)
    return [float(x) for x in ends]


def _to_numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x
