"""Which patches make an MSRL query look like its neighbours (patch-level evidence).

MSRL's answer is its graph neighbours, so the attribution is of the similarity that
ranks them: with q = the GSL key of the query's online fused vector ``[g~(h), h]``
(h = the WSI encoder's embedding of the bag) and k_j the keys of the retrieved authentic
neighbours' fused vectors, S = sum_j w_j sim(q, k_j) (w = the answer's edge weights).
A patch's score is gradient x input against the bag mean:

    score_i = dS/dx_i . (x_i - mean(x))

For the default ``mean_mlp`` encoder dS/dx_i = dS/dmean / N, so score_i is the
first-order change of S when the bag's mean moves by patch i's share, i.e. minus the
linearised leave-one-out change (times (N - 1) / N): positive = the patch pulls the slide
towards its neighbours, negative = away; the scores sum to 0. The same formula is used
for the ``abmil`` encoder, where it is gradient x input without the exact identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from casegraph.errors import InputError
from casegraph.models.msrl.model import MSRLModel

DESCRIPTION = ("each patch's first-order contribution to the slide's learned-graph "
               "similarity with its retrieved neighbours (gradient x (patch - bag mean)); "
               "positive = pulls the slide towards them, the scores sum to about 0")


def neighbour_similarity_scores(model: MSRLModel, bag: npt.NDArray[np.floating],
                                neighbour_ids: Sequence[str] | None = None,
                                weights: Sequence[float] | None = None
                                ) -> npt.NDArray[np.float64]:
    """(N,) signed scores of the patches of ``bag`` (N, D) for the similarity with
    ``neighbour_ids`` (the version's reference patients; default: the answer of
    ``model.query_wsi_only(bag)``) weighted by ``weights`` (default: equal)."""
    if model.config.genomics_mode == "authentic":
        raise InputError("msrl_multi answers from authentic genomics; patch evidence is for "
                         "WSI-only versions (msrl, msrl_h)", column="model_version")
    if neighbour_ids is None:
        answer = model.query_wsi_only(np.asarray(bag, dtype=np.float32))
        neighbour_ids = [p for p, _ in answer.neighbours]
        weights = [w for _, w in answer.neighbours]
    ids = list(neighbour_ids)
    if not ids:
        return np.zeros(len(bag), dtype=np.float64)
    w = torch.as_tensor(np.ones(len(ids)) if weights is None else np.asarray(weights),
                        dtype=torch.float32)
    net = model.net_
    net.eval()
    x = torch.as_tensor(np.asarray(bag, dtype=np.float32))
    with torch.no_grad():
        neighbour_keys = net.gsl_f.keys(model.reference_features(ids))

    def similarity(wsi: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        query_key = net.gsl_f.keys(net.online_fused(net.encode_wsi(wsi), None))
        return (net.gsl_f.key_similarity(query_key, neighbour_keys)[0] * w).sum()

    if model.config.wsi_encoder != "abmil":  # h depends on the bag mean only: O(D) gradient
        # numpy reduces float32 into float64 in buffered blocks; torch's dtype= copies x
        mean = torch.from_numpy(x.numpy().mean(axis=0, dtype=np.float64).astype(np.float32))
        mean.requires_grad_(True)
        with torch.enable_grad():
            (grad_mean,) = torch.autograd.grad(similarity(mean[None]), mean)
        g = grad_mean.double().numpy() / len(x)
        return (x.numpy() @ g.astype(np.float32)).astype(np.float64) \
            - float(mean.detach().double().numpy() @ g)
    x.requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(similarity([x]), x)
    return centred_dot(x.detach(), grad)


def centred_dot(x: torch.Tensor, grad: torch.Tensor, chunk: int = 8192
                ) -> npt.NDArray[np.float64]:
    """(N,) grad_i . (x_i - mean(x)) for x, grad (N, D), in row chunks (no (N, D) temp)."""
    mean = torch.from_numpy(x.numpy().mean(axis=0, dtype=np.float64))
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], chunk):
        g = grad[start:start + chunk].double()
        out[start:start + chunk] = ((g * x[start:start + chunk].double()).sum(dim=1)
                                    - g @ mean).numpy()
    return out
