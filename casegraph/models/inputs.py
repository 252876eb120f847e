"""Model inputs assembled from a CohortData: genomics tensors and (cached) patch bags.

Bags: a patient's slides are stacked into one bag (all patches of all slides, in slide
order). Reading a 10k-50k patch bag from disk every epoch dominates CPU training, so
``BagSource`` can keep a fixed seeded subsample of ``max_patches`` patches per patient in
memory (drawn once, reused every epoch), or only the bag mean (``mean_only``), which is
all the mean-pool model needs. With ``mean_only`` the store's precomputed per-slide means
are used when the CohortData can look them up (``data.summaries``, summaries computed at
ingest with ``summary_k``/``summary_seed``); a multi-slide patient then gets the mean of
its slide means (unweighted by patch count: exact for single-slide patients). Patients
without stored summaries fall back to reading their bags.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from casegraph.models.data import CohortData

FloatArray = npt.NDArray[np.float32]


class GenomicsSource:
    """Preprocessed gene-group matrices; ``batch(idx)`` -> list of G tensors (B, g_j)."""

    def __init__(self, groups: list[FloatArray]) -> None:
        self.groups = [torch.from_numpy(np.ascontiguousarray(g, dtype=np.float32)) for g in groups]

    def batch(self, idx: Sequence[int], device: str) -> list[Tensor]:
        index = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return [g[index].to(device) for g in self.groups]

    def flat(self, idx: Sequence[int], device: str) -> Tensor:
        return torch.cat(self.batch(idx, device), dim=1)


class BagSource:
    """Patient bags, optionally subsampled (seeded) and cached; ``batch(idx)`` -> list of (N_i, D)."""

    def __init__(self, data: CohortData, max_patches: int | None = None, seed: int = 0,
                 cache: bool = True, mean_only: bool = False, use_summaries: bool = True,
                 summary_k: int = 6, summary_seed: int = 0) -> None:
        self.data = data
        self.max_patches = max_patches
        self.seed = seed
        self.cache = cache
        self.mean_only = mean_only
        self._cached: dict[int, FloatArray] = {}
        if mean_only and use_summaries:
            self._prefetch_summary_means(summary_k, summary_seed)

    def _prefetch_summary_means(self, k: int, seed: int) -> None:
        if self.data.summaries is None or not self.data.slide_ids:
            return
        wanted = [s for ids in self.data.slide_ids for s in ids]
        found = self.data.summaries(wanted, k, seed) if wanted else {}
        for i, ids in enumerate(self.data.slide_ids):
            if ids and all(s in found for s in ids):
                means = np.stack([np.asarray(found[s][0], dtype=np.float32) for s in ids])
                self._cached[i] = means.mean(axis=0, keepdims=True)
        self.from_summaries_ = len(self._cached)

    def bag(self, i: int) -> FloatArray:
        if i in self._cached:
            return self._cached[i]
        feats = self.data.load_bag(i)
        if self.mean_only:
            feats = feats.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        elif self.max_patches is not None and feats.shape[0] > self.max_patches:
            key = zlib.crc32(self.data.patient_ids[i].encode("utf-8"))
            rng = np.random.default_rng([self.seed, key])
            keep = np.sort(rng.choice(feats.shape[0], self.max_patches, replace=False))
            feats = np.ascontiguousarray(feats[keep])
        if self.cache:
            self._cached[i] = feats
        return feats

    def batch(self, idx: Sequence[int], device: str) -> list[Tensor]:
        return [torch.from_numpy(self.bag(int(i))).to(device) for i in idx]

    def feature_dim(self) -> int:
        return int(self.bag(0).shape[1])
