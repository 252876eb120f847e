"""Cluster centre alignment (CCA): order a slide's k-means centres like a running anchor.

k-means returns centres in arbitrary order, so the same tissue phenotype lands in a
different slot for every patient. CCL matches each patient's centres to an anchor
(k, D) by the Hungarian algorithm (minimum total distance) and, during training, moves the
anchor towards the aligned centres: ``anchor <- (1 - tau) anchor + tau aligned``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

METRICS = ("euclidean", "cosine")


def alignment_cost(centres: npt.NDArray[np.floating], anchor: npt.NDArray[np.floating],
                   metric: str = "euclidean") -> npt.NDArray[np.float64]:
    """(k, D), (k, D) -> (k, k) cost; cost[i, j] = distance(anchor_i, centre_j)."""
    a = np.asarray(anchor, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64)
    if metric == "euclidean":
        sq = (a**2).sum(1)[:, None] + (c**2).sum(1)[None, :] - 2.0 * a @ c.T
        return np.sqrt(np.maximum(sq, 0.0))
    if metric == "cosine":
        an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        cn = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        return 1.0 - an @ cn.T
    raise ValueError(f"unknown alignment metric {metric!r}; choose among: {', '.join(METRICS)}")


def align_to_anchor(centres: npt.NDArray[np.floating], anchor: npt.NDArray[np.floating],
                    metric: str = "euclidean") -> npt.NDArray[np.int64]:
    """Permutation ``perm`` (k,) such that ``centres[perm][i]`` is matched to ``anchor[i]``
    with minimum total cost (scipy's ``linear_sum_assignment``)."""
    if centres.shape != anchor.shape:
        raise ValueError(f"centres {centres.shape} and anchor {anchor.shape} differ in shape")
    rows, cols = linear_sum_assignment(alignment_cost(centres, anchor, metric))
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm


class CentreAnchor(nn.Module):
    """The running anchor (k, D), a buffer so it is saved in ``state_dict`` (the reference
    code leaves it out). The first centres seen initialise it."""

    anchor: torch.Tensor
    initialised: torch.Tensor

    def __init__(self, k: int, dim: int, tau: float = 0.1, metric: str = "euclidean") -> None:
        super().__init__()
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau}")
        self.tau, self.metric = tau, metric
        self.register_buffer("anchor", torch.zeros(k, dim))
        self.register_buffer("initialised", torch.tensor(False))

    def align(self, centres: npt.NDArray[np.floating], update: bool = False
              ) -> npt.NDArray[np.float32]:
        """Centres (k, D) reordered to the anchor; with ``update`` (training) the anchor
        then moves towards them by ``tau``."""
        c = np.array(centres, dtype=np.float32)  # a writable copy
        if not bool(self.initialised):
            if update:
                self.anchor.copy_(torch.from_numpy(c))
                self.initialised.fill_(True)
            return c
        aligned = c[align_to_anchor(c, self.anchor.cpu().numpy(), self.metric)]
        if update:
            new = torch.from_numpy(aligned).to(self.anchor)
            self.anchor.mul_(1.0 - self.tau).add_(self.tau * new)
        return aligned
