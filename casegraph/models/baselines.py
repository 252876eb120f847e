"""Baselines users compare against: SNN (genomics), ABMIL (WSI), late fusion (both), CoxNet.

The neural baselines follow MCAT's reference models: SNN = two 256-unit self-normalising
blocks on all genomic features + a linear classifier (``model_type snn``); ABMIL = patch
projection, gated attention, ``rho`` (Linear+ReLU+Dropout) and a classifier (``amil``);
late fusion concatenates the two embeddings. All are trained with the discrete-time NLL.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from casegraph.models.coxnet import CoxNetModel
from casegraph.models.data import CohortData
from casegraph.models.encoders import SNN, GatedAttentionMIL, MeanPoolMIL
from casegraph.models.inputs import BagSource, GenomicsSource
from casegraph.models.preprocess import GenomicsPreprocessor
from casegraph.models.registry import MODELS
from casegraph.models.training import (
    DiscreteSurvivalModel,
    preprocessor_from_state,
    preprocessor_state,
)

POOLINGS = ("attention", "mean")

MODELS.add("coxnet", CoxNetModel)


class _GenomicsNet(nn.Module):
    def __init__(self, in_dim: int, hidden: int, n_bins: int, dropout: float) -> None:
        super().__init__()
        self.snn = SNN(in_dim, hidden, n_layers=2, dropout=dropout)
        self.classifier = nn.Linear(hidden, n_bins)

    def forward(self, groups: list[Tensor]) -> tuple[Tensor, Tensor]:
        emb = self.snn(torch.cat(groups, dim=1))
        return self.classifier(emb), emb


def _pooling(kind: str, in_dim: int, hidden: int, dropout: float) -> nn.Module:
    if kind == "attention":
        return GatedAttentionMIL(in_dim, hidden, dropout)
    if kind == "mean":
        return MeanPoolMIL(in_dim, hidden, dropout)
    raise ValueError(f"unknown pooling {kind!r}; choose among: {', '.join(POOLINGS)}")


class _BagNet(nn.Module):
    def __init__(self, in_dim: int, hidden: int, n_bins: int, dropout: float, pooling: str) -> None:
        super().__init__()
        self.pool = _pooling(pooling, in_dim, hidden, dropout)
        self.rho = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden, n_bins)

    def embed(self, bags: list[Tensor]) -> Tensor:
        return self.rho(torch.stack([self.pool(b)[0] for b in bags]))

    def forward(self, bags: list[Tensor]) -> tuple[Tensor, Tensor]:
        emb = self.embed(bags)
        return self.classifier(emb), emb


class _LateFusionNet(nn.Module):
    def __init__(self, omic_dim: int, bag_dim: int, hidden: int, n_bins: int, dropout: float,
                 pooling: str) -> None:
        super().__init__()
        self.omic = SNN(omic_dim, hidden, n_layers=2, dropout=dropout)
        self.wsi = _BagNet(bag_dim, hidden, n_bins, dropout, pooling)
        self.fuse = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden, n_bins)

    def forward(self, batch: tuple[list[Tensor], list[Tensor]]) -> tuple[Tensor, Tensor]:
        groups, bags = batch
        emb = self.fuse(torch.cat([self.omic(torch.cat(groups, dim=1)), self.wsi.embed(bags)], 1))
        return self.classifier(emb), emb


class _PairSource:
    def __init__(self, genomics: GenomicsSource, bags: BagSource) -> None:
        self.genomics, self.bags = genomics, bags

    def batch(self, idx: Any, device: str) -> tuple[list[Tensor], list[Tensor]]:
        return self.genomics.batch(idx, device), self.bags.batch(idx, device)


class _GenomicsMixin:
    preprocessor_: GenomicsPreprocessor
    raw_clip: float | None
    z_clip: float | None

    def _fit_genomics(self, train: CohortData) -> None:
        if not train.genomics or train.genomics_flat().shape[1] == 0:
            raise ValueError("this model needs genomic features; the cohort has none")
        self.preprocessor_ = GenomicsPreprocessor(self.raw_clip, self.z_clip).fit(train.genomics)

    def _genomics(self, data: CohortData) -> GenomicsSource:
        return GenomicsSource(self.preprocessor_.transform(data.genomics))

    def _extra_state(self) -> dict[str, Any]:
        return {"preprocessor": preprocessor_state(self.preprocessor_)}

    def _set_extra_state(self, extra: dict[str, Any]) -> None:
        self.preprocessor_ = preprocessor_from_state(extra["preprocessor"])


@MODELS.register("snn")
class SNNModel(_GenomicsMixin, DiscreteSurvivalModel):
    """Genomics-only SNN (MCAT ``snn``), with MCAT's L1 penalty (1e-4) on the SNN weights."""

    name = "snn"
    embedding_kind = "genomics"

    def __init__(self, *, hidden: int = 256, dropout: float = 0.25, l1: float = 1e-4,
                 raw_clip: float | None = 10.0, z_clip: float | None = 5.0,
                 **options: Any) -> None:
        super().__init__(l1=l1, **options)
        self.hidden, self.dropout, self.raw_clip, self.z_clip = hidden, dropout, raw_clip, z_clip

    def _fit_preprocessing(self, train: CohortData) -> None:
        self._fit_genomics(train)

    def _source(self, data: CohortData) -> GenomicsSource:
        return self._genomics(data)

    def _network_shapes(self, train: CohortData) -> dict[str, int]:
        return {"in_dim": int(train.genomics_flat().shape[1])}

    def _network(self, shapes: dict[str, int]) -> nn.Module:
        return _GenomicsNet(shapes["in_dim"], self.hidden, len(self.edges_) - 1, self.dropout)

    def _l1_parameters(self) -> list[Tensor]:
        snn = self.network_.get_submodule("snn")
        return list(snn.parameters())


class _BagOptions:
    def _bag_options(self, max_patches: int | None, pooling: str, cache_bags: bool) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose among: {', '.join(POOLINGS)}")
        self.max_patches, self.pooling, self.cache_bags = max_patches, pooling, cache_bags

    def patch_attention(self, bag: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """The fitted WSI pooling's weight of each patch of ``bag`` (N, D): gated attention,
        or 1/N for mean pooling; (N,), sums to 1."""
        network = getattr(self, "network_", None)
        if network is None:
            raise RuntimeError("patch_attention called before fit")
        pool = network.get_submodule("wsi.pool" if hasattr(network, "wsi") else "pool")
        was_training = network.training
        network.eval()
        try:
            with torch.no_grad():
                x = torch.as_tensor(np.asarray(bag, dtype=np.float32),
                                    device=getattr(self, "device_", "cpu"))
                attention = pool(x)[1]
        finally:
            network.train(was_training)
        return attention.double().cpu().numpy()

    def _bags(self, data: CohortData, seed: int) -> BagSource:
        if not all(data.bags):
            missing = next(p for p, b in zip(data.patient_ids, data.bags, strict=True) if not b)
            raise ValueError(f"patient {missing} has no slide features; load the cohort "
                             "with require_slides=True for WSI models")
        return BagSource(data, max_patches=self.max_patches, seed=seed, cache=self.cache_bags,
                         mean_only=self.pooling == "mean")


@MODELS.register("abmil")
class ABMILModel(_BagOptions, DiscreteSurvivalModel):
    """WSI-only gated-attention MIL (MCAT ``amil``). ``pooling="mean"`` is the mean-pool baseline.

    ``max_patches`` (default 4096): a fixed seeded subsample per patient, cached in memory
    (None = every patch, re-read from disk each epoch). Patches of all slides are one bag.
    """

    name = "abmil"
    uses_slides = True
    uses_genomics = False
    embedding_kind = "wsi"

    def __init__(self, *, hidden: int = 256, dropout: float = 0.25,
                 max_patches: int | None = 4096, pooling: str = "attention",
                 cache_bags: bool = True, batch_size: int = 16, **options: Any) -> None:
        super().__init__(batch_size=batch_size, **options)
        self.hidden, self.dropout = hidden, dropout
        self._bag_options(max_patches, pooling, cache_bags)

    def _fit_preprocessing(self, train: CohortData) -> None:
        self._bags(train, self.seed)  # validates that every patient has slides

    def _source(self, data: CohortData) -> BagSource:
        return self._bags(data, self.seed)

    def _network_shapes(self, train: CohortData) -> dict[str, int]:
        return {"bag_dim": self._bags(train, self.seed).feature_dim()}

    def _network(self, shapes: dict[str, int]) -> nn.Module:
        return _BagNet(shapes["bag_dim"], self.hidden, len(self.edges_) - 1, self.dropout,
                       self.pooling)


@MODELS.register("late_fusion")
class LateFusionModel(_GenomicsMixin, _BagOptions, DiscreteSurvivalModel):
    """Genomics SNN + WSI ABMIL embeddings concatenated, then Linear+ReLU and a classifier."""

    name = "late_fusion"
    uses_slides = True
    embedding_kind = "fused"

    def __init__(self, *, hidden: int = 256, dropout: float = 0.25,
                 max_patches: int | None = 4096, pooling: str = "attention",
                 cache_bags: bool = True, batch_size: int = 16,
                 raw_clip: float | None = 10.0, z_clip: float | None = 5.0,
                 **options: Any) -> None:
        super().__init__(batch_size=batch_size, **options)
        self.hidden, self.dropout, self.raw_clip, self.z_clip = hidden, dropout, raw_clip, z_clip
        self._bag_options(max_patches, pooling, cache_bags)

    def _fit_preprocessing(self, train: CohortData) -> None:
        self._fit_genomics(train)

    def _source(self, data: CohortData) -> _PairSource:
        return _PairSource(self._genomics(data), self._bags(data, self.seed))

    def _network_shapes(self, train: CohortData) -> dict[str, int]:
        return {"omic_dim": int(train.genomics_flat().shape[1]),
                "bag_dim": self._bags(train, self.seed).feature_dim()}

    def _network(self, shapes: dict[str, int]) -> nn.Module:
        return _LateFusionNet(shapes["omic_dim"], shapes["bag_dim"], self.hidden,
                              len(self.edges_) - 1, self.dropout, self.pooling)

