"""The one place retrieval touches MSRL (casegraph.models.msrl), so API drift stays local.

Public API used (docs/CONTRACTS): ``MSRLModel.load_version(store, version_id)``,
``model.embed_wsi([bag (N, D)]) -> (1, d_h)``, ``model.query_wsi_only(bag, candidate_ids,
k) -> WSIOnlyAnswer(risk, survival (K,) | None, neighbours [(id, weight)], ...)``,
``model.buffer_ids`` (a property), ``model.bin_edges_``.

Beyond the contract (differences noted in docs/retrieval.md): candidates must be the
version's reference patients (``model.reference_ids_``; other ids are refused), and the
FAISS candidate search runs in the GSL's own metric space: reference vectors
``gsl_f.embed(reference_fused_)``, query vector ``gsl_f.embed(online_fused(h))``, cosine,
which is exactly the similarity the graph learner ranks neighbours by (``learned`` and
``cosine_knn`` graphs; for the ``euclidean_knn`` ablation cosine is an approximation).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import numpy.typing as npt

from casegraph.errors import InputError
from casegraph.ingest.store import Store

MODEL_NAME = "msrl"


GSL_KIND = "gsl"


def msrl_versions(store: Store) -> list[str]:
    """MSRL versions that answer WSI-only survival queries, oldest first (``msrl_multi``,
    which needs authentic genomics, and classification versions are left out)."""
    out = []
    for version in store.versions.all():
        options = version.config
        if (version.model.lower().startswith("msrl")
                and options.get("genomics_mode") != "authentic"
                and options.get("task", "survival") == "survival"):
            out.append(version.version_id)
    return out


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
    return cache_reference_lookup(cls.load_version(store, version))


def cache_reference_lookup(model: Any) -> Any:
    """Give ``model`` an id -> row map of its reference patients, built once.

    ``MSRLModel.reference_features`` rebuilds that map on every call, O(N) per query with
    N references (~0.1 s CPU at 1,000,000); this instance-level replacement returns the
    same rows. Call again after changing ``reference_ids_`` / ``reference_fused_``."""
    ids = getattr(model, "reference_ids_", None)
    feats = getattr(model, "reference_fused_", None)
    if ids is None or feats is None or not hasattr(model, "reference_features"):
        return model
    pos = {p: i for i, p in enumerate(ids)}

    def reference_features(patient_ids: list[str]) -> Any:
        missing = [p for p in patient_ids if p not in pos]
        if missing:
            raise InputError(f"candidate patients unknown to this model version: "
                             f"{missing[:5]}", fix="pass the version's reference patients")
        return feats[[pos[p] for p in patient_ids]]

    model.reference_features = reference_features
    return model


def pooled_bag(model: Any, features: npt.NDArray[np.float32],
               mean: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
    """What the model's WSI encoder reads of a bag (N, D): for ``mean_mlp`` the bag's patch
    mean as a one-row bag (1, D) — the encoder pools a bag to its mean and the mean of one
    row is that row, so the answer is the same while the encoder, which the query runs
    twice (embedding, then the model's own query), no longer passes over N x D each time;
    for ``abmil`` the bag itself. ``mean`` (D,): the caller's float32 patch mean when it has
    one (e.g. from the bag's column sums), else ``features.mean(axis=0)`` — numpy's float32
    mean, the value the store's slide summaries (the training input) hold."""
    if not _pools_to_mean(model):
        return features
    if mean is None:
        mean = features.mean(axis=0)
    return np.asarray(mean, dtype=np.float32).reshape(1, -1)


def _pools_to_mean(model: Any) -> bool:
    return getattr(getattr(model, "config", None), "wsi_encoder", "mean_mlp") != "abmil"


def embed(model: Any, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The WSI embedding h of one bag: (1, d_h) float32."""
    net = model.net_
    if features.shape[0] == 1 and _pools_to_mean(model) and not net.training:
        import torch

        # a pooled one-row bag (pooled_bag): what embed_wsi computes, without its
        # per-call net.eval() walk over every module
        with torch.no_grad():
            return np.asarray(net.encode_wsi(torch.from_numpy(features)).numpy(),
                              dtype=np.float32).reshape(1, -1)
    out = model.embed_wsi([features])
    return np.asarray(_to_numpy(out), dtype=np.float32).reshape(1, -1)


def query_vector(model: Any, h: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The query in the GSL's metric space, from its WSI embedding h (1, d_h): (1, d)."""
    import torch

    with torch.no_grad():
        f_q = model.net_.online_fused(torch.from_numpy(np.asarray(h, np.float32)), None)
        return np.asarray(model.net_.gsl_f.embed(f_q).numpy(), dtype=np.float32)


def reference_ids(store: Store, version: str) -> list[str]:
    """The version's reference patients (the gsl index's ids) without loading the model
    (no torch): what ``MSRLModel.load_version`` sets as ``reference_ids_`` — a derived
    version's fused embeddings along its lineage, a trained version's saved config."""
    import json

    if store.versions.get(version).is_derived:
        return [str(p) for p in store.versions.embeddings(version, "fused")[0]]
    config = store.versions.folder(version) / "config.json"
    return [str(p) for p in json.loads(config.read_text(encoding="utf-8"))["reference_ids"]]


def reference_vectors(model: Any) -> tuple[list[str], npt.NDArray[np.float32]]:
    """The version's reference patients (the valid candidates) in the GSL's metric space."""
    import torch

    with torch.no_grad():
        vectors = model.net_.gsl_f.embed(model.reference_fused_).numpy()
    return [str(p) for p in model.reference_ids_], np.asarray(vectors, dtype=np.float32)


def query(model: Any, features: npt.NDArray[np.float32], candidates: list[str] | None,
          k: int) -> Any:
    return model.query_wsi_only(features, candidate_ids=candidates, k=k)


def buffer_candidates(model: Any, exclude: Collection[str],
                      allowed: Collection[str] | None) -> list[str] | None:
    """The exact path's candidates: the whole buffer (None, the model's cached graph) unless
    exclusions or filters remove buffer members, then the remaining members."""
    ids = getattr(model, "buffer_ids", None)
    if callable(ids):
        ids = ids()
    if ids is None:
        return None
    keep = [str(p) for p in ids if p not in exclude and (allowed is None or p in allowed)]
    return None if len(keep) == len(ids) else keep


def graph_k(model: Any) -> int:
    """K of the model's graph (each node's number of learned neighbours)."""
    return int(getattr(getattr(model, "config", None), "k", 10))


def buffer_size(model: Any) -> int:
    ids = getattr(model, "buffer_ids", None)
    if callable(ids):
        ids = ids()
    return len(ids) if ids is not None else 0


def bin_ends(model: Any, n_bins: int, max_follow_up: float) -> list[float] | None:
    """End time of each of the model's bins when it exposes its bin edges; an open last
    bin (edge inf) ends at ``max_follow_up``, the reference cohort's largest follow-up, as
    the embedding-knn answer's last time point does (docs/retrieval.md)."""
    edges = getattr(model, "bin_edges_", None)
    if edges is None:
        return None
    e = np.asarray(_to_numpy(edges), dtype=np.float64)
    if e.size != n_bins + 1:
        return None
    ends = e[1:].copy()
    if not np.isfinite(ends[-1]):
        before = e[-2] if np.isfinite(e[-2]) else 0.0
        ends[-1] = max(float(max_follow_up), float(before))
    return [float(x) for x in ends]


def _to_numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x
