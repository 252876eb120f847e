"""Per-patch scores of a fitted model: which patches of a bag drive its answer.

One entry point, :func:`explain` (and :func:`patch_scores`, its scores), for the families
that have patch-level structure (docs/evidence.md):

- ``abmil`` / ``late_fusion`` (attention pooling): the gated-attention weights, (N,)
  summing to 1; mean pooling gives 1/N each.
- ``murrenet``: each patch's share of |gradient x input| of the predicted risk (the DHOF
  path mixes patch tokens through cross-attention and Nystrom blocks, so no single
  attention map is the model's weighting); sums to 1.
- ``ccl``: cluster assignment. Pathology enters CCL only as k-means centres aligned to the
  anchor; each centre's share of |gradient x input| of the risk is split evenly among the
  patches assigned to it (nearest centre); sums to 1. :func:`ccl_clusters` gives the
  assignment itself.
- MSRL (``msrl``, ``msrl_h`` and presets): signed contributions to the similarity with
  the retrieved neighbours (:mod:`casegraph.models.msrl.attribution`).

``genomics`` (fusion models) is the patient's raw gene-group rows, one (g_j,) or (1, g_j)
array per group of the model, as ``CohortData.genomics`` holds them; the model's fitted
preprocessing is applied here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from casegraph.errors import InputError
from casegraph.models.losses import risk_from_survival, survival_from_logits

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PatchScores:
    """Scores (N,) of one bag's patches; ``signed``: negative values mean 'against'
    (else non-negative shares summing to 1); ``kind`` names the attribution."""

    scores: FloatArray
    kind: str
    signed: bool
    description: str


KINDS: dict[str, tuple[bool, str]] = {
    "attention": (False, "the model's attention weight of each patch (sums to 1)"),
    "mean-pool": (False, "mean pooling weighs every patch alike (1/N)"),
    "gradient-share": (False, "each patch's share of |gradient x input| of the predicted "
                              "risk (sums to 1)"),
    "cluster-share": (False, "each k-means cluster's share of |gradient x input| of the "
                             "risk, split evenly among the patches assigned to it"),
    "neighbour-similarity": (True, "each patch's first-order contribution to the slide's "
                                   "similarity with its retrieved neighbours"),
}


def _result(scores: FloatArray, kind: str) -> PatchScores:
    signed, description = KINDS[kind]
    return PatchScores(np.asarray(scores, dtype=np.float64), kind, signed, description)


def explain(model: Any, bag: npt.ArrayLike, genomics: Sequence[npt.ArrayLike] | None = None,
            neighbours: Sequence[tuple[str, float]] | None = None) -> PatchScores:
    """Per-patch scores of ``bag`` (N, D) under the fitted ``model`` (see the module doc).
    ``neighbours`` (MSRL only): the answer's (patient id, weight) to attribute against."""
    x = np.asarray(bag, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"a bag must be a non-empty (N, D) matrix, got shape {x.shape}")
    family = _family(model)
    if family == "msrl":
        from casegraph.models.msrl.attribution import neighbour_similarity_scores

        ids = None if neighbours is None else [p for p, _ in neighbours]
        weights = None if neighbours is None else [w for _, w in neighbours]
        return _result(neighbour_similarity_scores(model, x, ids, weights),
                       "neighbour-similarity")
    if family in ("abmil", "late_fusion"):
        kind = "mean-pool" if getattr(model, "pooling", "attention") == "mean" else "attention"
        return _result(model.patch_attention(x), kind)
    if genomics is None:
        raise InputError(f"{family} fuses WSI and genomics: its patch scores need the "
                         "patient's gene-group values", column="genomics")
    groups = _genomics_tensors(model, genomics)
    if family == "murrenet":
        return _result(murrenet_scores(model, x, groups), "gradient-share")
    return _result(ccl_scores(model, x, groups), "cluster-share")


def patch_scores(model: Any, bag: npt.ArrayLike,
                 genomics: Sequence[npt.ArrayLike] | None = None) -> FloatArray:
    """(N,) scores of the patches of ``bag`` (N, D); :func:`explain` says what they are."""
    return explain(model, bag, genomics).scores


def has_patch_structure(model: Any) -> bool:
    """Whether :func:`explain` has scores for ``model`` (without computing them)."""
    return _family_or_none(model) is not None


def _family(model: Any) -> str:
    family = _family_or_none(model)
    if family is not None:
        return family
    name = getattr(model, "name", type(model).__name__)
    raise InputError(f"model {name!r} has no patch-level structure to explain",
                     column="model_version",
                     fix="use an abmil, late_fusion, murrenet, ccl or msrl version")


def _family_or_none(model: Any) -> str | None:
    from casegraph.models.baselines import ABMILModel, LateFusionModel
    from casegraph.models.ccl.model import CCLModel
    from casegraph.models.msrl.model import MSRLModel
    from casegraph.models.murrenet.model import MurreNetModel

    for cls, family in ((MSRLModel, "msrl"), (ABMILModel, "abmil"),
                        (LateFusionModel, "late_fusion"), (MurreNetModel, "murrenet"),
                        (CCLModel, "ccl")):
        if isinstance(model, cls):
            return family
    return None


def _genomics_tensors(model: Any, genomics: Sequence[npt.ArrayLike]) -> list[torch.Tensor]:
    rows = [np.asarray(g, dtype=np.float32).reshape(1, -1) for g in genomics]
    sizes = [r.shape[1] for r in rows]
    if sizes != list(model.group_sizes_):
        raise InputError(f"gene groups of sizes {sizes} given, the model was fitted on "
                         f"{list(model.group_sizes_)}", column="genomics")
    return [torch.from_numpy(g).to(model.device) for g in model.preprocessor_.transform(rows)]


def _risk(logits: torch.Tensor) -> torch.Tensor:
    return risk_from_survival(survival_from_logits(logits[None])[1])[0]


def _shares(contributions: torch.Tensor) -> FloatArray:
    """|c| normalised to sum 1 (uniform when every contribution is 0)."""
    c = contributions.detach().abs().double().cpu().numpy()
    total = c.sum()
    return c / total if total > 0 else np.full(c.shape, 1.0 / max(len(c), 1))


def murrenet_scores(model: Any, bag: npt.NDArray[np.float32],
                    genomics: list[torch.Tensor]) -> FloatArray:
    """(N,) share of |d risk / d x_i . x_i| of each patch (the fitted MurreNet, eval mode)."""
    net = model.net_
    net.eval()
    x = torch.from_numpy(bag).to(model.device).requires_grad_(True)
    with torch.enable_grad():
        logits, _, _ = net(x, genomics)
        (grad,) = torch.autograd.grad(_risk(logits), x)
    return _shares((grad * x.detach()).sum(dim=1))


def ccl_clusters(model: Any, bag: npt.NDArray[np.float32]
                 ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(slot (N,): the anchor-aligned centre each patch is nearest to, centres (k, D) in
    anchor order), as the fitted CCL sees the bag (its ``k`` and k-means seed)."""
    from casegraph.ingest.summaries import summarize_features
    from casegraph.models.ccl.alignment import align_to_anchor

    centres = np.asarray(summarize_features(bag, model.k, model.kmeans_seed)[1], np.float32)
    anchor = model.net_.anchor
    order = np.arange(len(centres))
    if model.use_cca and bool(anchor.initialised):
        order = align_to_anchor(centres, anchor.anchor.cpu().numpy(), anchor.metric)
    aligned = centres[order]
    return _squared_distances(bag, aligned).argmin(axis=1).astype(np.int64), aligned


def _squared_distances(bag: npt.NDArray[np.float32], centres: npt.NDArray[np.float32],
                       chunk: int = 4096) -> npt.NDArray[np.float32]:
    out = np.empty((len(bag), len(centres)), dtype=np.float32)
    sq = (centres ** 2).sum(axis=1)
    for start in range(0, len(bag), chunk):
        part = bag[start:start + chunk]
        out[start:start + chunk] = (part ** 2).sum(axis=1)[:, None] - 2 * part @ centres.T + sq
    return out


def ccl_scores(model: Any, bag: npt.NDArray[np.float32],
               genomics: list[torch.Tensor]) -> FloatArray:
    """(N,) each patch's even part of its cluster's share of |d risk / d c . c|."""
    slots, aligned = ccl_clusters(model, bag)
    net = model.net_
    net.eval()
    c = torch.from_numpy(aligned).to(net.cls_token).requires_grad_(True)
    with torch.enable_grad():
        logits, _, _ = net.forward_aligned(c, genomics)
        (grad,) = torch.autograd.grad(_risk(logits), c)
    share = _shares((grad * c.detach()).sum(dim=1))
    counts = np.bincount(slots, minlength=len(share)).astype(np.float64)
    per_patch = share[slots] / counts[slots]
    total = per_patch.sum()
    return per_patch / total if total > 0 else np.full(len(bag), 1.0 / len(bag))
