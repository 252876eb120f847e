"""Shared machinery of the per-patient fusion models (MurreNet, CCL).

Both papers train one patient at a time (batch size 1, discrete-time NLL over ``n_bins``
bins). :class:`PatientFusionModel` does the fold-wise preparation (bin edges and genomics
scaling from the training fold only), the seeded epoch loop with optional gradient
accumulation, and prediction; subclasses supply the network, the per-patient inputs and
the loss. Bags are read from disk once per fit and cached; with ``max_patches`` a seeded
random subset of at most that many patches is kept per patient during training.

Under ``torchrun`` the patients of every optimiser step (``grad_accum`` of them) are split
over the ranks, the gradients are all-reduced once per step, and the network's buffers
(CCL's anchor and cohort bank) are rank 0's after every step
(:mod:`casegraph.models.distributed`; docs/distributed-training.md). ``device`` is
``cpu`` or ``cuda``; a model saved on a GPU loads on the CPU where no GPU is present.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from casegraph.errors import InputError
from casegraph.models import distributed as ddp
from casegraph.models.base import Prediction
from casegraph.models.data import CohortData
from casegraph.models.losses import risk_from_survival, survival_from_logits
from casegraph.models.preprocess import GenomicsPreprocessor
from casegraph.models.targets import bin_edges, discretize
from casegraph.models.training import WEIGHTS_FILE
from casegraph.models.weights_file import array, load_weights, save_weights
from casegraph.runtime import loading_device, pick_device, seed_everything

log = logging.getLogger(__name__)

Inputs = dict[str, Any]


def subsample_patches(bag: npt.NDArray[np.float32], max_patches: int | None,
                      rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """A seeded subset of at most ``max_patches`` rows (patch order kept); all if None."""
    if max_patches is None or bag.shape[0] <= max_patches:
        return bag
    keep = np.sort(rng.choice(bag.shape[0], size=max_patches, replace=False))
    return np.ascontiguousarray(bag[keep])


def load_patient_bag(data: CohortData, i: int) -> npt.NDArray[np.float32]:
    """Patient i's stacked patches (N, D); an InputError when the patient has no slides."""
    if not data.bags[i]:
        raise InputError(f"patient {data.patient_ids[i]} has no slide features",
                         column="slides",
                         fix="ingest bags for every patient, or load with require_slides=True")
    return data.load_bag(i)


class PatientFusionModel:
    """Base of MurreNet and CCL (SurvivalModel protocol). Fitted state: ``net_``, ``edges_``,
    ``preprocessor_``, ``history_`` (mean training loss per epoch)."""

    name = "fusion"
    in_dim_: int
    uses_slides = True  # the CV runner loads only patients with slides
    embedding_kind = "fused"  # the embedding fuses WSI and genomics

    def __init__(self, *, n_bins: int = 4, epochs: int = 20, lr: float = 2e-4,
                 weight_decay: float = 1e-5, grad_accum: int = 1,
                 max_patches: int | None = None, seed: int = 0, nll_alpha: float = 0.0,
                 bin_edges: npt.ArrayLike | None = None, device: str = "cpu",
                 verbose: bool = False) -> None:
        self.n_bins, self.epochs, self.lr = n_bins, epochs, lr
        self.bin_edges = None if bin_edges is None else np.asarray(bin_edges, dtype=np.float64)
        self.weight_decay, self.grad_accum = weight_decay, grad_accum
        self.max_patches, self.seed, self.nll_alpha = max_patches, seed, nll_alpha
        self.device, self.verbose = device, verbose

    # ------------------------------------------------------------------ hooks
    def _network(self) -> nn.Module:
        """The network, from fitted attributes set by ``_before_fit`` (or a loaded file)."""
        raise NotImplementedError

    def _patient_inputs(self, data: CohortData, i: int, genomics: list[torch.Tensor],
                        training: bool) -> Inputs:
        raise NotImplementedError

    def _forward(self, inputs: Inputs, training: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                                 dict[str, torch.Tensor]]:
        """-> (logits (K,), embedding (d,), auxiliary tensors for the loss)."""
        raise NotImplementedError

    def _loss(self, logits: torch.Tensor, aux: dict[str, torch.Tensor], label: int,
              event: bool, index: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def _before_fit(self, train: CohortData) -> None:
        """Subclass hook run after the fold-wise preparation, before the network is built."""

    # ------------------------------------------------------------------ shared
    def _genomics(self, data: CohortData) -> list[torch.Tensor]:
        groups = self.preprocessor_.transform(data.genomics)
        return [torch.from_numpy(g).to(self.device) for g in groups]

    def _nll(self, logits: torch.Tensor, label: int, event: bool) -> torch.Tensor:
        from casegraph.models.losses import nll_survival_loss

        return nll_survival_loss(logits[None], torch.tensor([label], device=logits.device),
                                 torch.tensor([float(event)], device=logits.device),
                                 alpha=self.nll_alpha)

    def fit(self, train: CohortData, valid: CohortData | None = None) -> PatientFusionModel:
        rank = ddp.current()
        ddp.announce_fit(self, train, valid, rank)
        rng = seed_everything(self.seed)
        # the subclasses place tensors with this option: resolve "auto" once, and a GPU that
        # is not there is one clear error before any work
        self.device = pick_device(self.device)
        self.world_size_ = 1 if rank is None else rank.world_size
        if rank is not None and rank.world_size > self.grad_accum:
            log.warning("%s: grad_accum=%d < %d ranks: each optimiser step has fewer "
                        "patients than ranks, so ranks idle; set grad_accum to a multiple "
                        "of the number of ranks", self.name, self.grad_accum, rank.world_size)
        self.edges_ = (self.bin_edges.copy() if self.bin_edges is not None
                       else bin_edges(train.target, self.n_bins))
        self.n_bins = len(self.edges_) - 1
        self.labels_ = discretize(train.target.time, self.edges_)
        self.preprocessor_ = GenomicsPreprocessor().fit(train.genomics)
        self.group_sizes_ = train.group_sizes
        self._before_fit(train)
        self.net_ = self._network().to(self.device)
        # foreach: one multi-tensor update instead of a loop over ~100 small tensors; at
        # batch size 1 the optimiser step otherwise dominates CCL's step time on CPU
        optimiser = torch.optim.Adam(self.net_.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay, foreach=True)
        genomics = self._genomics(train)
        cache: dict[int, Inputs] = {}
        self.history_: list[dict[str, float]] = []
        for epoch in range(self.epochs):
            self.net_.train()
            totals: dict[str, float] = {}
            optimiser.zero_grad()
            order = rng.permutation(len(train))
            for start in range(0, len(order), self.grad_accum):
                rows, weights = ddp.share(order[start:start + self.grad_accum], rank)
                for i, weight in zip(rows.tolist(), weights.tolist(), strict=True):
                    if i not in cache:
                        cache[i] = self._patient_inputs(train, i, genomics, training=True)
                    logits, _emb, aux = self._forward(cache[i], training=True)
                    loss, parts = self._loss(logits, aux, int(self.labels_[i]),
                                             bool(train.target.event[i]), i)
                    (loss * (weight / self.grad_accum)).backward()
                    for key, value in parts.items():
                        totals[key] = totals.get(key, 0.0) + value * (weight > 0)
                if rank is not None:
                    _average_gradients(list(self.net_.parameters()))
                optimiser.step()
                optimiser.zero_grad()
                if rank is not None:
                    _leader_buffers(self.net_)
            keys = sorted(totals)
            summed = ddp.sum_over_ranks([totals[k] for k in keys], rank)
            mean = {k: float(v) / max(len(train), 1) for k, v in zip(keys, summed, strict=True)}
            self.history_.append(mean)
            if self.verbose:
                log.info("%s epoch %d: %s", self.name, epoch + 1, mean)
        return self

    def trained_on(self) -> dict[str, Any]:
        """Where the fit ran: its device and how many ranks trained it."""
        return {"device": str(self.device), "world_size": int(getattr(self, "world_size_", 1))}

    @torch.no_grad()
    def predict(self, data: CohortData) -> Prediction:
        if not hasattr(self, "net_"):
            raise RuntimeError(f"{self.name}: predict called before fit")
        self.net_.eval()
        genomics = self._genomics(data)
        survival, embeddings = [], []
        for i in range(len(data)):
            inputs = self._patient_inputs(data, i, genomics, training=False)
            logits, emb, _aux = self._forward(inputs, training=False)
            survival.append(survival_from_logits(logits[None])[1][0])
            embeddings.append(emb)
        surv = torch.stack(survival).double()
        return Prediction(
            patient_ids=list(data.patient_ids),
            risk=risk_from_survival(surv).cpu().numpy(),
            survival=surv.cpu().numpy(),
            embedding=torch.stack(embeddings).float().cpu().numpy(),
            bin_edges=self.edges_.copy(),
        )

    # ------------------------------------------------------------------ persistence
    def _extra_state(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim_}

    def _set_extra_state(self, extra: dict[str, Any]) -> None:
        self.in_dim_ = int(extra["in_dim"])

    def save(self, path: str | Path) -> None:
        """Options, weights (with the network's buffers, e.g. CCL's anchor and bank), bin
        edges and the fitted genomics scaling, in one torch file."""
        if not hasattr(self, "net_"):
            raise RuntimeError(f"{self.name}: save called before fit")
        save_weights(path, self.name, {
            "options": self.get_options(),
            "state_dict": self.net_.state_dict(), "edges": self.edges_,
            "group_sizes": self.group_sizes_, "scaler_mean": self.preprocessor_.mean_,
            "scaler_scale": self.preprocessor_.scale_, "history": self.history_,
            "trained_on": self.trained_on(), "extra": self._extra_state(),
        })

    @classmethod
    def load(cls, path: str | Path) -> PatientFusionModel:
        """A fitted model from :meth:`save` (inference only; no optimiser state). Nothing is
        unpickled: a file that is not ours is an InputError."""
        blob = load_weights(path, cls.name)
        model = cls(**blob["options"])
        model.device = loading_device(model.device)  # where this copy answers
        model.world_size_ = int(blob.get("trained_on", {}).get("world_size", 1))
        model.edges_ = array(blob["edges"])
        model.group_sizes_ = [int(g) for g in blob["group_sizes"]]
        model.preprocessor_ = GenomicsPreprocessor()
        model.preprocessor_.mean_ = [array(m, np.float32) for m in blob["scaler_mean"]]
        model.preprocessor_.scale_ = [array(m, np.float32) for m in blob["scaler_scale"]]
        model.history_ = list(blob["history"])
        model._set_extra_state(blob["extra"])
        model.net_ = model._network()
        model.net_.load_state_dict(blob["state_dict"])  # tensors arrive on the CPU
        model.net_.to(model.device)
        return model

    def save_files(self, folder: Path) -> None:
        """The model-version contract: this model's files in a version folder."""
        self.save(Path(folder) / WEIGHTS_FILE)

    @classmethod
    def load_files(cls, folder: Path) -> PatientFusionModel:
        return cls.load(Path(folder) / WEIGHTS_FILE)

    def get_options(self) -> dict[str, Any]:
        """Constructor options (scikit-learn style: the attributes named like parameters)."""
        import inspect

        names: set[str] = set()
        for klass in type(self).__mro__:
            init = klass.__dict__.get("__init__")
            if init is not None:
                names |= {p for p in inspect.signature(init).parameters if p != "self"
                          and inspect.signature(init).parameters[p].kind
                          is inspect.Parameter.KEYWORD_ONLY}
        return {n: getattr(self, n) for n in sorted(names) if hasattr(self, n)}


def _average_gradients(parameters: Sequence[nn.Parameter]) -> None:
    """All-reduce the step's gradients as DDP's reducer does (one flat tensor), once per
    optimiser step: the subclasses' forward and loss call ``net_`` itself, so no DDP
    wrapper sits in between. A parameter a rank did not use counts as a zero gradient."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(parameters, grads, strict=True):
        p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def _leader_buffers(net: nn.Module) -> None:
    """Every rank takes rank 0's buffers (CCL's anchor and cohort bank), so every rank's
    next losses read the same memory."""
    import torch.distributed as dist

    for buffer in net.buffers():
        if buffer.dtype == torch.bool:  # gloo has no bool collectives
            as_bytes = buffer.to(torch.uint8)
            dist.broadcast(as_bytes, src=0)
            buffer.copy_(as_bytes.bool())
        else:
            dist.broadcast(buffer, src=0)
